package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/urfave/cli/v2"
)

// metaTopic is the metadata group as /partitions lists it; reassigning
// its partition 0 moves the group's votes.
const metaTopic = "__cluster_metadata"

// moveMetaVote gives n's vote in the metadata group, if it has one, to
// with (replace), and waits until the group's voters are the new ones.
func (s *session) moveMetaVote(v *clusterView, n, with int32) error {
	voters, from := s.metadataVoters(v)
	if !slices.Contains(voters, n) || slices.Contains(voters, with) {
		return nil
	}
	target := slices.Clone(voters)
	target[slices.Index(target, n)] = with
	fmt.Fprintf(s.out, "moving broker %d's metadata vote to %d: voters %v -> %v (from %s)\n", n, with, voters, target, from)
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign(metaTopic, 0, target)
	rctx, cancel := context.WithTimeout(s.ctx, reqTimeout)
	resp, err := s.adm.AlterPartitionAssignments(rctx, req)
	cancel()
	if err != nil {
		return cli.Exit(fmt.Sprintf("moving the metadata vote: %v", err), 1)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil {
			return cli.Exit(fmt.Sprintf("the cluster refused to move broker %d's metadata vote to %d: %v %s", n, with, r.Err, r.ErrMessage), 1)
		}
	}
	start := time.Now()
	tick := time.NewTicker(s.c.Duration("poll"))
	defer tick.Stop()
	for {
		if got, ok := s.metaVotersSettled(); ok && len(got) == len(target) && len(minus32(target, got)) == 0 {
			fmt.Fprintf(s.out, "metadata voters now %v (moved in %s)\n", got, time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-s.ctx.Done():
			return cli.Exit(fmt.Sprintf("broker %d's metadata vote is still moving to %d (%v); the cluster goes on with it: run the command again to follow it", n, with, s.ctx.Err()), 1)
		case <-tick.C:
		}
	}
}

// metaVotersSettled reads the metadata voters from the first admin server
// that answers, and whether no vote move is under way there.
func (s *session) metaVotersSettled() ([]int32, bool) {
	for _, a := range s.admin {
		var rows []partitionRow
		if code, err := getJSON(a, "/partitions", &rows); err == nil && code == 200 {
			for _, r := range rows {
				if r.Topic == metaTopic {
					return r.Replicas, len(r.Target) == 0
				}
			}
		}
	}
	return nil, false
}

func minus32(a, b []int32) []int32 {
	var out []int32
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// holds reports whether broker n holds a replica of any partition.
func (v *clusterView) holds(n int32) bool {
	for _, p := range v.Parts {
		if slices.Contains(v.current(p), n) {
			return true
		}
	}
	return false
}

// unlisted reports whether the cluster no longer lists broker n (it was
// marked removed).
func (s *session) unlisted(n int32) bool {
	v, err := s.read()
	if err != nil {
		return false
	}
	_, listed := v.broker(n)
	return !listed
}
