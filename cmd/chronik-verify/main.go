// Command chronik-verify produces a paced, checksummed, numbered stream to a
// topic while a group consumer reads it back, then reports whether any
// acknowledged record was lost, duplicated, reordered or corrupted, how long
// any partition stalled, and draws a timeline. Scenario scripts run it while
// they restart, kill or partition brokers, appending what they do to the
// --events file so it shows on the plot.
//
//	chronik-verify --brokers 127.0.0.1:9092 --duration 60s --report r.json --plot t.svg
//
// Exit status: 0 verified, 1 verification failed, 2 usage or setup error.
// Ctrl-C stops producing and still verifies; a second one skips the waits.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitSetup = 2
	bucket    = 100 * time.Millisecond
)

// dur prints as "1.5s" in the JSON report.
type dur time.Duration

func (d dur) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *dur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = dur(v)
	return err
}

// Config is the command line, echoed in the report.
type Config struct {
	Brokers       []string `json:"brokers"`
	Topic         string   `json:"topic"`
	Partitions    int      `json:"partitions"`
	Replication   int      `json:"replication"`
	Rate          float64  `json:"rate"`
	Size          int      `json:"size"`
	Duration      dur      `json:"duration"`
	Settle        dur      `json:"settle"`
	Group         string   `json:"group"`
	Report        string   `json:"report,omitempty"`
	Plot          string   `json:"plot,omitempty"`
	Events        string   `json:"events,omitempty"`
	Progress      dur      `json:"progress"`
	MaxLost       int      `json:"max_lost"`
	AllowDup      bool     `json:"allow_dup"`
	FailOnReorder bool     `json:"fail_on_reorder"`
	MaxInflight   int      `json:"max_inflight"`
	AckTimeout    dur      `json:"ack_timeout"`
	SetupTimeout  dur      `json:"setup_timeout"`
	ClientLog     string   `json:"client_log,omitempty"`
	ConsumerLog   string   `json:"consumer_log,omitempty"`
	MetadataAge   dur      `json:"metadata_min_age,omitempty"`
	MaxAckStall   dur      `json:"max_ack_stall,omitempty"`
	TLS           bool     `json:"tls,omitempty"`
	TLSCA         string   `json:"tls_ca,omitempty"`
	SASLMechanism string   `json:"sasl_mechanism,omitempty"`
	SASLUser      string   `json:"sasl_user,omitempty"`
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("chronik-verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
	fs.StringVar(&c.Topic, "topic", "verify", "topic to produce to and consume from")
	fs.IntVar(&c.Partitions, "partitions", 6, "partitions, if the topic is created")
	fs.IntVar(&c.Replication, "replication", 3, "replication factor, if the topic is created")
	fs.Float64Var(&c.Rate, "rate", 2000, "records/s to offer (0 = as fast as acks allow, bounded by --max-inflight)")
	fs.IntVar(&c.Size, "size", 200, fmt.Sprintf("value bytes (at least %d)", minValueLen))
	fs.DurationVar((*time.Duration)(&c.Duration), "duration", 60*time.Second, "produce for this long")
	fs.DurationVar((*time.Duration)(&c.Settle), "settle", 15*time.Second, "after the last ack, keep consuming up to this long for stragglers")
	fs.StringVar(&c.Group, "group", "", "consumer group (default <topic>-verify)")
	fs.StringVar(&c.Report, "report", "", "write the JSON report here")
	fs.StringVar(&c.Plot, "plot", "", "write the SVG timeline here")
	fs.StringVar(&c.Events, "events", "", `file other tools append "<RFC3339Nano> <text>" lines to; each is marked on the plot`)
	fs.DurationVar((*time.Duration)(&c.Progress), "progress", time.Second, "progress line interval on stderr (0 = none)")
	fs.IntVar(&c.MaxLost, "max-lost", 0, "exit 1 if more acknowledged records than this are lost")
	fs.BoolVar(&c.AllowDup, "allow-dup", false, "do not fail on duplicates")
	fs.BoolVar(&c.FailOnReorder, "fail-on-reorder", false, "also fail on records reordered within a partition")
	fs.IntVar(&c.MaxInflight, "max-inflight", 10000, "records handed to the client and not yet acked, at most")
	fs.DurationVar((*time.Duration)(&c.AckTimeout), "ack-timeout", 30*time.Second, "after producing stops, wait this long at most for outstanding acks")
	fs.DurationVar((*time.Duration)(&c.SetupTimeout), "setup-timeout", 30*time.Second, "wait this long at most for the topic and the consumer group")
	fs.DurationVar((*time.Duration)(&c.MetadataAge), "metadata-min-age", 0, "producer's minimum time between metadata refreshes (0 = franz-go's default, 5s); lower it to tell broker failover time from client back-off")
	fs.DurationVar((*time.Duration)(&c.MaxAckStall), "max-ack-stall", 0, "exit 1 if a partition goes longer than this without an ack (0 = no limit)")
	fs.StringVar(&c.ClientLog, "client-log", "", "write the producer client's debug log here (for diagnosing stalls)")
	fs.StringVar(&c.ConsumerLog, "consumer-log", "", "write the consumer client's debug log here (for diagnosing consume stalls)")
	fs.BoolVar(&c.TLS, "tls", false, "connect with TLS (SSL or SASL_SSL listener); implied by --tls-ca")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM CA that signs the brokers' certificates (default: the system's)")
	fs.StringVar(&c.SASLMechanism, "sasl-mechanism", "", "log in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL listener); the password comes from $CHRONIK_SASL_PASSWORD")
	fs.StringVar(&c.SASLUser, "sasl-user", os.Getenv("CHRONIK_SASL_USER"), "SASL login name (default $CHRONIK_SASL_USER)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.Brokers = append(c.Brokers, b)
		}
	}
	if c.Group == "" {
		c.Group = c.Topic + "-verify"
	}
	var bad []string
	check := func(ok bool, msg string) {
		if !ok {
			bad = append(bad, msg)
		}
	}
	check(fs.NArg() == 0, "unexpected arguments: "+strings.Join(fs.Args(), " "))
	check(len(c.Brokers) > 0, "--brokers is empty")
	check(c.Topic != "", "--topic is empty")
	check(c.Partitions >= 1, "--partitions must be at least 1")
	check(c.Replication >= 1 && c.Replication <= 32767, "--replication must be at least 1")
	check(c.Rate >= 0, "--rate must not be negative")
	check(c.Size >= 1, "--size must be at least 1")
	check(c.Duration > 0, "--duration must be positive")
	check(c.Settle >= 0 && c.AckTimeout >= 0 && c.Progress >= 0, "durations must not be negative")
	check(c.SetupTimeout > 0, "--setup-timeout must be positive")
	check(c.MaxInflight >= 1, "--max-inflight must be at least 1")
	check(c.MaxLost >= 0, "--max-lost must not be negative")
	check(c.MetadataAge >= 0, "--metadata-min-age must not be negative")
	check(c.MaxAckStall >= 0, "--max-ack-stall must not be negative")
	check(c.SASLMechanism == "" || c.SASLUser != "", "--sasl-mechanism needs --sasl-user")
	if len(bad) > 0 {
		return c, errors.New(strings.Join(bad, "; "))
	}
	if c.Size < minValueLen {
		fmt.Fprintf(stderr, "note: --size %d is below the %d-byte record header; using %d\n", c.Size, minValueLen, minValueLen)
		c.Size = minValueLen
	}
	return c, nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "chronik-verify:", err)
		return exitSetup
	}
	setupErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "chronik-verify: "+format+"\n", a...)
		return exitSetup
	}

	// First signal: stop producing, verify. Second: skip remaining waits.
	stop, abort := make(chan struct{}), make(chan struct{})
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		fmt.Fprintln(stderr, "interrupted: producing stops, verifying (interrupt again to skip waiting)")
		close(stop)
		<-sigs
		fmt.Fprintln(stderr, "interrupted again: reporting now")
		close(abort)
	}()
	interrupted := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}

	setupCtx, cancelSetup := context.WithTimeout(context.Background(), time.Duration(cfg.SetupTimeout))
	defer cancelSetup()
	go func() {
		select {
		case <-stop:
			cancelSetup()
		case <-setupCtx.Done():
		}
	}()
	auth, err := authOpts(cfg)
	if err != nil {
		return setupErr("%v", err)
	}
	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, auth...)...)
	if err != nil {
		return setupErr("%v", err)
	}
	defer closeWithin(admCl, 5*time.Second)
	adm := kadm.NewClient(admCl)
	setupStart := time.Now()
	parts, err := ensureTopic(setupCtx, adm, cfg.Topic, cfg.Partitions, cfg.Replication, stderr)
	if err != nil {
		return setupErr("%v", err)
	}
	fmt.Fprintf(stderr, "topic %s ready: %d partitions with leaders (%s)\n", cfg.Topic, parts, time.Since(setupStart).Round(time.Millisecond))

	consOpts := append([]kgo.Opt(nil), auth...)
	if cfg.ConsumerLog != "" {
		f, err := os.Create(cfg.ConsumerLog)
		if err != nil {
			return setupErr("%v", err)
		}
		defer f.Close()
		consOpts = append(consOpts, kgo.WithLogger(debugLogger{&clientLog{w: f}}))
	}
	cons, err := newConsumer(cfg.Brokers, cfg.Topic, cfg.Group, consOpts...)
	if err != nil {
		return setupErr("%v", err)
	}
	// Waiting for the assignment keeps the consumer's join out of the
	// measurement; it is not needed for correctness, since a new group
	// starts at the log start and an old one at its commits.
	joinStart := time.Now()
	select {
	case <-cons.assigned:
		fmt.Fprintf(stderr, "group %s joined (%s)\n", cfg.Group, time.Since(joinStart).Round(time.Millisecond))
	case <-setupCtx.Done():
		if interrupted() {
			closeWithin(cons.cl, 5*time.Second)
			return setupErr("interrupted during setup")
		}
		fmt.Fprintf(stderr, "warning: group %s got no assignment within %s; producing anyway\n", cfg.Group, time.Duration(cfg.SetupTimeout))
	}

	var clog *clientLog
	if cfg.ClientLog != "" {
		f, err := os.Create(cfg.ClientLog)
		if err != nil {
			closeWithin(cons.cl, 5*time.Second)
			return setupErr("%v", err)
		}
		defer f.Close()
		clog = &clientLog{w: f}
	}
	runID := rand.Uint64()
	t0 := time.Now()
	extra := append([]kgo.Opt(nil), auth...)
	if cfg.MetadataAge > 0 {
		extra = append(extra, kgo.MetadataMinAge(time.Duration(cfg.MetadataAge)))
	}
	prod, err := newProducer(cfg.Brokers, cfg.Topic, parts, runID, cfg.Size, cfg.MaxInflight, t0, clog, extra...)
	if err != nil {
		closeWithin(cons.cl, 5*time.Second)
		return setupErr("%v", err)
	}
	cons.t0 = t0
	cons.tr = newTracker(runID, prod.sentN.Load, bucket)
	consCtx, stopConsuming := context.WithCancel(context.Background())
	consDone := make(chan struct{})
	go func() { cons.loop(consCtx); close(consDone) }()

	bgCtx, stopBackground := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	var events *eventTail
	if cfg.Events != "" {
		events = &eventTail{path: cfg.Events, t0: t0, log: stderr}
		bg.Go(func() { events.run(bgCtx, 200*time.Millisecond) })
	}
	if cfg.Progress > 0 {
		bg.Go(func() { progressLoop(bgCtx, stderr, time.Duration(cfg.Progress), t0, prod, cons) })
	}
	fmt.Fprintf(stderr, "run %016x: producing to %s (%d partitions) at %s for %s, group %s\n",
		runID, cfg.Topic, parts, rateString(cfg.Rate), time.Duration(cfg.Duration), cfg.Group)

	prod.run(stop, cfg.Rate, time.Duration(cfg.Duration))
	produceEnd := time.Since(t0).Nanoseconds()
	if !prod.waitAcks(time.Duration(cfg.AckTimeout), abort) {
		fmt.Fprintln(stderr, "warning: not every record was acknowledged in time; counting the rest as unacknowledged")
	}
	settle(cfg, prod, cons, adm, abort, stderr)
	end := time.Since(t0).Nanoseconds()

	stopBackground()
	bg.Wait()
	stopConsuming()
	select {
	case <-consDone:
	case <-time.After(5 * time.Second):
	}
	snap := takeSnapshot(prod, cons, parts, produceEnd, end)
	snap.events = events.list()
	prod.close(5 * time.Second)
	closeWithin(cons.cl, 10*time.Second)

	rep := analyze(snap)
	rep.RunID = fmt.Sprintf("%016x", runID)
	rep.Start = t0.UTC()
	rep.Interrupted = interrupted()
	rep.Config = cfg
	rep.Config.Partitions = int(parts)
	if cfg.Rate > 0 {
		rep.Target = int(cfg.Rate * time.Duration(cfg.Duration).Seconds())
	}
	rep.judge(cfg)
	printTable(stdout, &rep)

	code := rep.ExitCode
	if cfg.Report != "" {
		if err := writeJSON(cfg.Report, &rep); err != nil {
			fmt.Fprintln(stderr, "chronik-verify: writing report:", err)
			code = exitSetup
		}
	}
	if cfg.Plot != "" {
		tl := buildTimeline(snap, bucket)
		tl.Title = fmt.Sprintf("chronik-verify %s: %s", rep.Verdict, rep.Summary)
		tl.Subtitle = fmt.Sprintf("topic %s, %d partitions × %d replicas, %s × %d B for %s; %d acked; produce p99 %.1f ms; longest ack stall %.0f ms (partition %d)",
			cfg.Topic, parts, cfg.Replication, rateString(cfg.Rate), cfg.Size, time.Duration(cfg.Duration), rep.Acknowledged,
			rep.ProduceLatency.P99, rep.ProduceStall.MaxMs, rep.ProduceStall.Partition)
		if err := writeSVGFile(cfg.Plot, tl); err != nil {
			fmt.Fprintln(stderr, "chronik-verify: writing plot:", err)
			code = exitSetup
		}
	}
	return code
}

func rateString(r float64) string {
	if r == 0 {
		return "max rate"
	}
	return fmt.Sprintf("%g rec/s", r)
}
