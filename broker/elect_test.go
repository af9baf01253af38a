package broker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
)

// TestElectLeadersOneNode: on one node every partition is led by its
// preferred replica, so a named election answers ELECTION_NOT_NEEDED, an
// unknown partition UNKNOWN_TOPIC_OR_PARTITION, an unclean election says
// why it is refused, and an election over every partition names each one
// (the kafka layer leaves the not-needed ones out). A peer's ask that is
// not JSON, or names a group this node does not host, does no harm.
func TestElectLeadersOneNode(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	newTopic(t, b, "el")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := b.ElectLeaders(ctx, false, []kafka.ElectPartition{{Topic: "el", Partition: 0}, {Topic: "el", Partition: 7}, {Topic: "none", Partition: 0}})
	if len(res) != 3 || res[0].Err != kerr.ElectionNotNeeded.Code || res[1].Err != kerr.UnknownTopicOrPartition.Code || res[2].Err != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("named election: %+v", res)
	}
	un := b.ElectLeaders(ctx, true, []kafka.ElectPartition{{Topic: "el", Partition: 0}})
	if un[0].Err != kerr.ElectionNotNeeded.Code || !strings.Contains(un[0].Message, "out-of-sync") {
		t.Fatalf("unclean election: %+v", un)
	}
	all := b.ElectLeaders(ctx, false, nil)
	found := false
	for _, r := range all {
		found = found || r.Topic == "el"
		if r.Err != kerr.ElectionNotNeeded.Code {
			t.Errorf("election over every partition: %+v", r)
		}
	}
	if !found {
		t.Errorf("election over every partition does not name el-0: %+v", all)
	}
	b.onElectAsk(2, []byte("{not json"))
	b.onElectAsk(2, []byte(`{"id":1,"g":999999,"to":1,"ms":100}`))
	b.onElectAnswer([]byte(`{"id":12345,"err":0}`)) // nobody waits for it
}

// TestElectStateDeliversOnce: an answer reaches the ask it names, once; an
// answer for an ask that was given up is dropped.
func TestElectStateDeliversOnce(t *testing.T) {
	var e electState
	id, ch := e.register()
	e.deliver(electAnswer{ID: id, Err: 7})
	e.deliver(electAnswer{ID: id, Err: 8})
	if a := <-ch; a.Err != 7 {
		t.Fatalf("got %+v", a)
	}
	select {
	case a := <-ch:
		t.Fatalf("second answer delivered: %+v", a)
	default:
	}
	id2, ch2 := e.register()
	e.forget(id2)
	e.deliver(electAnswer{ID: id2})
	select {
	case a := <-ch2:
		t.Fatalf("answer for a forgotten ask delivered: %+v", a)
	default:
	}
}
