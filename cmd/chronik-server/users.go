package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/urfave/cli/v2"
)

// kafkaConnFlags say how a subcommand reaches the cluster over the Kafka
// protocol: the users and cluster commands share them.
func kafkaConnFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "bootstrap", Value: "127.0.0.1:9092", Usage: "Kafka addresses of one or more nodes, comma-separated", EnvVars: []string{"CHRONIK_BOOTSTRAP"}},
		&cli.BoolFlag{Name: "tls", Usage: "connect with TLS (SSL or SASL_SSL listener)"},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM CA that signs the node's certificate (default: the system's)"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM client certificate (mTLS)"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM key of --tls-cert"},
		&cli.StringFlag{Name: "sasl-mechanism", Usage: "log in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL listener)"},
		&cli.StringFlag{Name: "sasl-user", EnvVars: []string{"CHRONIK_SASL_USER"}},
		&cli.StringFlag{Name: "sasl-password", Usage: "the login's password (prefer the environment variable)", EnvVars: []string{"CHRONIK_SASL_PASSWORD"}},
	}
}

// usersCommand manages SCRAM users through the Kafka protocol
// (AlterUserScramCredentials / DescribeUserScramCredentials), so it works
// against any node, over any listener.
func usersCommand() *cli.Command {
	conn := kafkaConnFlags()
	return &cli.Command{
		Name:  "users",
		Usage: "list, add or delete SCRAM users (replicated in the cluster metadata)",
		Subcommands: []*cli.Command{
			{Name: "list", Usage: "list users and their mechanisms", Flags: conn, Action: usersList},
			{Name: "set", Usage: "add a user or change its password; the password is read from stdin",
				ArgsUsage: "NAME",
				Flags: append(conn,
					&cli.StringFlag{Name: "mechanism", Value: "SCRAM-SHA-512", Usage: "SCRAM-SHA-256, SCRAM-SHA-512 or both (comma-separated)"},
					&cli.IntFlag{Name: "iterations", Value: 8192, Usage: "SCRAM iterations, 4096-16384"}),
				Action: usersSet},
			{Name: "delete", Usage: "delete a user's credentials", ArgsUsage: "NAME",
				Flags:  append(conn, &cli.StringFlag{Name: "mechanism", Value: "SCRAM-SHA-256,SCRAM-SHA-512", Usage: "which credentials"}),
				Action: usersDelete},
		},
	}
}

func kafkaAdmin(c *cli.Context) (*kadm.Client, func(), error) {
	cl, err := kafkaClient(c)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// kafkaClient connects as the connection flags say.
func kafkaClient(c *cli.Context) (*kgo.Client, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(strings.Split(c.String("bootstrap"), ",")...), kgo.RequestRetries(2)}
	if c.Bool("tls") || c.String("tls-ca") != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if ca := c.String("tls-ca"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca: no certificate in %s", ca)
			}
		}
		if cert := c.String("tls-cert"); cert != "" {
			kp, err := tls.LoadX509KeyPair(cert, c.String("tls-key"))
			if err != nil {
				return nil, err
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.String("sasl-mechanism"); m != "" {
		u, p := c.String("sasl-user"), c.String("sasl-password")
		var mech sasl.Mechanism
		switch m {
		case "PLAIN":
			mech = plain.Auth{User: u, Pass: p}.AsMechanism()
		case "SCRAM-SHA-256":
			mech = scram.Auth{User: u, Pass: p}.AsSha256Mechanism()
		case "SCRAM-SHA-512":
			mech = scram.Auth{User: u, Pass: p}.AsSha512Mechanism()
		default:
			return nil, fmt.Errorf("--sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", m)
		}
		opts = append(opts, kgo.SASL(mech))
	}
	return kgo.NewClient(opts...)
}

func scramMechs(s string) ([]kadm.ScramMechanism, error) {
	var out []kadm.ScramMechanism
	for _, m := range strings.Split(s, ",") {
		switch strings.TrimSpace(m) {
		case "SCRAM-SHA-256":
			out = append(out, kadm.ScramSha256)
		case "SCRAM-SHA-512":
			out = append(out, kadm.ScramSha512)
		default:
			return nil, fmt.Errorf("--mechanism %q: want SCRAM-SHA-256 or SCRAM-SHA-512", m)
		}
	}
	return out, nil
}

func usersList(c *cli.Context) error {
	adm, done, err := kafkaAdmin(c)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	defer cancel()
	ds, err := adm.DescribeUserSCRAMs(ctx)
	if err != nil {
		return err
	}
	for _, d := range ds.Sorted() {
		if d.Err != nil {
			return fmt.Errorf("%s: %v", d.User, d.Err)
		}
		var ms []string
		for _, ci := range d.CredInfos {
			ms = append(ms, fmt.Sprintf("%s(%d)", ci.Mechanism, ci.Iterations))
		}
		fmt.Printf("%s\t%s\n", d.User, strings.Join(ms, ","))
	}
	return nil
}

// userAndMechs is the NAME argument and the --mechanism list of a users
// subcommand (cmd names it in the error for a missing NAME).
func userAndMechs(c *cli.Context, cmd string) (string, []kadm.ScramMechanism, error) {
	name := c.Args().First()
	if name == "" {
		return "", nil, errors.New(cmd + ": NAME is required")
	}
	mechs, err := scramMechs(c.String("mechanism"))
	return name, mechs, err
}

func usersSet(c *cli.Context) error {
	name, mechs, err := userAndMechs(c, "users set")
	if err != nil {
		return err
	}
	// The password comes from stdin, not a flag: flags show in ps.
	pw, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && pw == "" {
		return fmt.Errorf("reading the password from stdin: %w", err)
	}
	pw = strings.TrimRight(pw, "\r\n")
	if pw == "" {
		return errors.New("users set: empty password")
	}
	var ups []kadm.UpsertSCRAM
	for _, m := range mechs {
		ups = append(ups, kadm.UpsertSCRAM{User: name, Mechanism: m, Iterations: int32(c.Int("iterations")), Password: pw})
	}
	return alterUsers(c, nil, ups)
}

func usersDelete(c *cli.Context) error {
	name, mechs, err := userAndMechs(c, "users delete")
	if err != nil {
		return err
	}
	var dels []kadm.DeleteSCRAM
	for _, m := range mechs {
		dels = append(dels, kadm.DeleteSCRAM{User: name, Mechanism: m})
	}
	return alterUsers(c, dels, nil)
}

func alterUsers(c *cli.Context, dels []kadm.DeleteSCRAM, ups []kadm.UpsertSCRAM) error {
	adm, done, err := kafkaAdmin(c)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	defer cancel()
	// One mechanism per request: Kafka refuses a user named twice in one.
	for _, d := range dels {
		res, err := adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{d}, nil)
		if err == nil {
			err = res[d.User].Err
		}
		if err != nil {
			return fmt.Errorf("delete %s %s: %w", d.User, d.Mechanism, err)
		}
	}
	for _, u := range ups {
		res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{u})
		if err == nil {
			err = res[u.User].Err
		}
		if err != nil {
			return fmt.Errorf("set %s %s: %w", u.User, u.Mechanism, err)
		}
	}
	fmt.Println("ok")
	return nil
}
