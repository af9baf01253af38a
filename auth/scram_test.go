package auth

import (
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// login runs xdg-go/scram's client against a ScramConversation; final, when
// not nil, rewrites the client-final message before the server sees it.
func login(t *testing.T, mech, pass string, final func(string) string) error {
	t.Helper()
	c, err := NewCredential(mech, "secret", MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	h := scram.SHA256
	if mech == ScramSHA512 {
		h = scram.SHA512
	}
	cl, err := h.NewClient("a=b,c", pass, "")
	if err != nil {
		t.Fatal(err)
	}
	conv := cl.NewConversation()
	srv, err := NewScramConversation(mech, func(u string) (Credential, bool) { return c, u == "a=b,c" })
	if err != nil {
		t.Fatal(err)
	}
	first, _ := conv.Step("")
	sf, err := srv.Step([]byte(first))
	if err != nil {
		return err
	}
	cf, err := conv.Step(string(sf))
	if err != nil {
		t.Fatal(err)
	}
	if final != nil {
		cf = final(cf)
	}
	out, err := srv.Step([]byte(cf))
	if err != nil {
		return err
	}
	if _, err := conv.Step(string(out)); err != nil {
		t.Fatalf("client refused the server's signature: %v", err)
	}
	if !srv.Done() || srv.User() != "a=b,c" {
		t.Fatalf("done %v user %q", srv.Done(), srv.User())
	}
	return nil
}

func TestScramConversation(t *testing.T) {
	for _, m := range []string{ScramSHA256, ScramSHA512} {
		if err := login(t, m, "secret", nil); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if err := login(t, m, "wrong", nil); err == nil {
			t.Fatalf("%s: wrong password accepted", m)
		}
		// A changed nonce breaks the proof even where the nonce check
		// lets it through (it ends with the server's nonce).
		if err := login(t, m, "secret", func(cf string) string { return strings.Replace(cf, "r=", "r=x", 1) }); err == nil {
			t.Fatalf("%s: a message changed after signing accepted", m)
		}
	}
}

func TestVerifyPassword(t *testing.T) {
	c, err := NewCredential(ScramSHA512, "pw", DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	if !c.VerifyPassword("pw") || c.VerifyPassword("pW") {
		t.Fatal("VerifyPassword")
	}
	if _, err := NewCredential(ScramSHA512, "pw", 100); err == nil {
		t.Fatal("100 iterations accepted")
	}
}
