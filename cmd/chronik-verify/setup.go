package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ensureTopic creates the topic unless it exists and waits until every
// partition has a leader; it returns the partition count, which may differ
// from the one asked for when the topic already existed. Brokers that are
// still starting are retried until ctx ends.
func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, parts, repl int, log io.Writer) (int32, error) {
	var last error
	created := false
	for {
		if !created {
			resp, err := adm.CreateTopic(ctx, int32(parts), int16(repl), nil, topic)
			switch {
			case err == nil && (resp.Err == nil || errors.Is(resp.Err, kerr.TopicAlreadyExists)):
				created = true
			case err != nil:
				last = err
			case kerr.IsRetriable(resp.Err):
				last = resp.Err
			default:
				return 0, fmt.Errorf("creating topic %s: %w %s", topic, resp.Err, resp.ErrMessage)
			}
		}
		if created {
			n, err := leadersReady(ctx, adm, topic)
			if err == nil {
				if int(n) != parts {
					fmt.Fprintf(log, "warning: topic %s already has %d partitions (asked for %d); using %d\n", topic, n, parts, n)
				}
				return n, nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("topic %s not ready: %w (last: %v)", topic, ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// leadersReady returns the partition count once all partitions have leaders.
func leadersReady(ctx context.Context, adm *kadm.Client, topic string) (int32, error) {
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return 0, err
	}
	td, ok := md.Topics[topic]
	switch {
	case !ok:
		return 0, fmt.Errorf("topic %s missing from metadata", topic)
	case td.Err != nil:
		return 0, td.Err
	case len(td.Partitions) == 0:
		return 0, fmt.Errorf("topic %s has no partitions yet", topic)
	}
	for _, p := range td.Partitions {
		if p.Err != nil {
			return 0, fmt.Errorf("partition %d: %w", p.Partition, p.Err)
		}
		if p.Leader < 0 {
			return 0, fmt.Errorf("partition %d has no leader", p.Partition)
		}
	}
	return int32(len(td.Partitions)), nil
}
