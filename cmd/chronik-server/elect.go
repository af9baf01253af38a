package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/urfave/cli/v2"
)

// electCommand runs a preferred leader election (ElectLeaders) through
// any node: after a rolling restart with --auto-leader-rebalance=false,
// it hands each partition back to its preferred replica.
func electCommand() *cli.Command {
	return &cli.Command{
		Name:      "elect-leaders",
		Usage:     "move leadership to the preferred replicas (every partition, or those named)",
		ArgsUsage: "[TOPIC[:PARTITION,...] ...]",
		Flags: append(kafkaConnFlags(),
			&cli.DurationFlag{Name: "timeout", Value: 60 * time.Second, Usage: "how long to wait for the answer"}),
		Action: electLeaders,
	}
}

func electLeaders(c *cli.Context) error {
	var set kadm.TopicsSet
	for _, arg := range c.Args().Slice() {
		if set == nil {
			set = kadm.TopicsSet{}
		}
		topic, parts, hasParts := strings.Cut(arg, ":")
		if !hasParts {
			// A topic alone: all its partitions, which kadm asks for by name.
			md, err := topicPartitions(c, topic)
			if err != nil {
				return err
			}
			set.Add(topic, md...)
			continue
		}
		for _, p := range strings.Split(parts, ",") {
			n, err := strconv.ParseInt(p, 10, 32)
			if err != nil {
				return fmt.Errorf("%s: partition %q is not a number", arg, p)
			}
			set.Add(topic, int32(n))
		}
	}
	adm, done, err := kafkaAdmin(c)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout")+5*time.Second)
	defer cancel()
	res, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, set)
	if err != nil {
		return err
	}
	var lines []string
	moved, failed := 0, 0
	for topic, ps := range res {
		for p, r := range ps {
			status := "elected"
			switch {
			case r.Err == nil:
				moved++
			case errors.Is(r.Err, kerr.ElectionNotNeeded):
				status = "already led by its preferred replica"
			default:
				failed++
				status = r.Err.Error()
				if r.ErrMessage != "" {
					status += ": " + r.ErrMessage
				}
			}
			lines = append(lines, fmt.Sprintf("%s-%d\t%s", topic, p, status))
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Printf("%d partitions moved to their preferred replica, %d failed\n", moved, failed)
	if failed > 0 {
		return fmt.Errorf("%d partitions could not be moved", failed)
	}
	return nil
}

// topicPartitions lists a topic's partitions.
func topicPartitions(c *cli.Context, topic string) ([]int32, error) {
	adm, done, err := kafkaAdmin(c)
	if err != nil {
		return nil, err
	}
	defer done()
	ctx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	defer cancel()
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("topic %s: %v", topic, td.Err)
	}
	var out []int32
	for p := range td.Partitions {
		out = append(out, p)
	}
	return out, nil
}
