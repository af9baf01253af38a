package compat

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// describeTopicPartitions sends one DescribeTopicPartitions request to node.
func describeTopicPartitions(t *testing.T, cl *kgo.Client, node int, topics []string, limit int32, cursor *kmsg.DescribeTopicPartitionsRequestCursor) *kmsg.DescribeTopicPartitionsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrDescribeTopicPartitionsRequest()
	for _, name := range topics {
		rt := kmsg.NewDescribeTopicPartitionsRequestTopic()
		rt.Topic = name
		req.Topics = append(req.Topics, rt)
	}
	req.ResponsePartitionLimit, req.Cursor = limit, cursor
	resp, err := req.RequestWith(ctx, cl.Broker(node))
	if err != nil {
		t.Fatalf("DescribeTopicPartitions: %v", err)
	}
	return resp
}

// TestAdminDescribeTopicPartitions (KIP-966) on a 3-node cluster, through
// kmsg requests from a kgo client: pages of at most the requested
// partition limit, in topic-name order, each starting at the previous
// answer's cursor, cover every partition exactly once and agree with
// Metadata on leaders, epochs, replicas and ISR; a topic that does not
// exist answers UNKNOWN_TOPIC_OR_PARTITION; a cursor naming a topic not
// asked for is INVALID_REQUEST. UpdateFeatures (kadm) refuses a feature,
// since ApiVersions lists none.
func TestAdminDescribeTopicPartitions(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "dtp-b", 3, 3, nil)
	createTopic(t, c, "dtp-a", 5, 3, nil)
	createTopic(t, c, "dtp-c", 1, 3, nil)
	c.waitHealthy(1, 30*time.Second)
	cl := newFranz(t, c)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	md, err := adm.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Named topics, 4 partitions a page: a0-a3 | a4 b0-b2 | c0.
	var pages [][]string
	var cursor *kmsg.DescribeTopicPartitionsRequestCursor
	seen := map[string]bool{}
	for node := 1; ; node = node%3 + 1 { // any node answers, and each page may come from another
		resp := describeTopicPartitions(t, cl, node, []string{"dtp-c", "dtp-b", "dtp-a", "dtp-a"}, 4, cursor)
		var page []string
		n := 0
		for _, rt := range resp.Topics {
			if rt.ErrorCode != 0 || rt.Topic == nil {
				t.Fatalf("topic %v: error %d", rt.Topic, rt.ErrorCode)
			}
			want := md.Topics[*rt.Topic]
			if rt.TopicID != [16]byte(want.ID) || rt.IsInternal {
				t.Errorf("%s: id %x internal %v, Metadata says %x", *rt.Topic, rt.TopicID, rt.IsInternal, want.ID)
			}
			for _, p := range rt.Partitions {
				id := fmt.Sprintf("%s-%d", *rt.Topic, p.Partition)
				if seen[id] {
					t.Errorf("%s listed twice", id)
				}
				seen[id] = true
				page = append(page, id)
				n++
				mp := want.Partitions[p.Partition]
				if p.LeaderID != mp.Leader || p.LeaderEpoch != mp.LeaderEpoch || !slices.Equal(p.Replicas, mp.Replicas) || !slices.Equal(slices.Sorted(slices.Values(p.ISR)), slices.Sorted(slices.Values(mp.ISR))) {
					t.Errorf("%s: leader %d epoch %d replicas %v isr %v; Metadata: %d %d %v %v", id, p.LeaderID, p.LeaderEpoch, p.Replicas, p.ISR, mp.Leader, mp.LeaderEpoch, mp.Replicas, mp.ISR)
				}
			}
		}
		if n > 4 {
			t.Fatalf("a page of %d partitions, limit 4", n)
		}
		pages = append(pages, page)
		if resp.NextCursor == nil {
			break
		}
		cursor = &kmsg.DescribeTopicPartitionsRequestCursor{Topic: resp.NextCursor.Topic, Partition: resp.NextCursor.Partition}
		if len(pages) > 10 {
			t.Fatalf("no end after %d pages: %v", len(pages), pages)
		}
	}
	want := [][]string{{"dtp-a-0", "dtp-a-1", "dtp-a-2", "dtp-a-3"}, {"dtp-a-4", "dtp-b-0", "dtp-b-1", "dtp-b-2"}, {"dtp-c-0"}}
	if fmt.Sprint(pages) != fmt.Sprint(want) {
		t.Errorf("pages %v, want %v", pages, want)
	}

	// Every topic (internal ones too), 2 a page, matches Metadata's count.
	total, internal := 0, false
	cursor = nil
	for i := 0; ; i++ {
		resp := describeTopicPartitions(t, cl, 1, nil, 2, cursor)
		for _, rt := range resp.Topics {
			total += len(rt.Partitions)
			internal = internal || rt.IsInternal
		}
		if resp.NextCursor == nil {
			break
		}
		cursor = &kmsg.DescribeTopicPartitionsRequestCursor{Topic: resp.NextCursor.Topic, Partition: resp.NextCursor.Partition}
		if i > 100 {
			t.Fatal("paging over every topic does not end")
		}
	}
	mdAll := 0
	for _, td := range md.Topics {
		mdAll += len(td.Partitions)
	}
	if total != mdAll || !internal {
		t.Errorf("every topic, 2 a page: %d partitions (internal listed: %v); Metadata lists %d", total, internal, mdAll)
	}

	resp := describeTopicPartitions(t, cl, 2, []string{"dtp-none"}, 0, nil)
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("unknown topic: %+v", resp.Topics)
	}
	resp = describeTopicPartitions(t, cl, 2, []string{"dtp-a"}, 0, &kmsg.DescribeTopicPartitionsRequestCursor{Topic: "dtp-b"})
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != kerr.InvalidRequest.Code {
		t.Errorf("cursor on a topic not asked for: %+v", resp.Topics)
	}

	// UpdateFeatures: nothing to update, consistent with ApiVersions.
	av, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl.Broker(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(av.SupportedFeatures) != 0 || len(av.FinalizedFeatures) != 0 {
		t.Errorf("ApiVersions lists features %v / %v", av.SupportedFeatures, av.FinalizedFeatures)
	}
	up, err := adm.UpdateFeatures(ctx, false, kadm.FeatureUpdate{Feature: "group.version", MaxVersionLevel: 1})
	if err != nil {
		t.Fatalf("kadm UpdateFeatures: %v", err)
	}
	t.Logf("UpdateFeatures group.version=1: %+v", up)
	if r := up["group.version"]; r.Err != kerr.InvalidUpdateVersion {
		t.Errorf("UpdateFeatures of a feature ApiVersions does not list: %v, want INVALID_UPDATE_VERSION", r.Err)
	}
}
