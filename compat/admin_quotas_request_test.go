package compat

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAdminClientQuotaRequestTime (KIP-124): a client id with a
// request_percentage quota of 1 sends Metadata requests for every topic as
// fast as franz-go lets it (it waits out each throttle_time_ms), next to
// a client without a quota. The handling time the node recorded for the
// quoted client, from 2 s to 8 s, is within 10% of 1% of one handler's
// time; the other client is never throttled and sends more requests.
func TestAdminClientQuotaRequestTime(t *testing.T) {
	c := startCluster(t, 1)
	for i := 0; i < 8; i++ {
		createTopic(t, c, "rq-"+string(rune('a'+i)), 8, 1, nil)
	}
	const pct = 1.0
	id := "quota-requests"
	alterQuota(t, kadm.NewClient(newFranz(t, c)), kadm.ClientQuotaEntity{{Type: "client-id", Name: &id}},
		kadm.AlterClientQuotaOp{Key: "request_percentage", Value: pct})
	metric := `chronik_quota_request_seconds_total{client_id="` + id + `",user=""}`

	const measureFrom, measureTo = 2 * time.Second, 8 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), measureTo)
	defer cancel()
	start := time.Now()
	counts := map[string]*int{}
	thr := map[string]*throttleHook{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var recFrom float64
	for _, cid := range []string{id, "quota-free"} {
		n := 0
		counts[cid], thr[cid] = &n, &throttleHook{}
		cl := newFranz(t, c, kgo.ClientID(cid), kgo.WithHooks(thr[cid]))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req := kmsg.NewPtrMetadataRequest() // every topic
				if _, err := req.RequestWith(ctx, cl.Broker(1)); err != nil {
					if ctx.Err() == nil {
						t.Errorf("%s: Metadata: %v", cid, err)
					}
					return
				}
				if el := time.Since(start); el > measureFrom && el < measureTo {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(measureFrom) // the window starts with the node's counter
	v, ok := c.metric(1, metric)
	if !ok {
		_, body, _ := c.get(1, "/metrics")
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if strings.Contains(l, "quota") && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		t.Fatalf("no %s in /metrics; quota metrics: %v", metric, lines)
	}
	recFrom = v
	time.Sleep(measureTo - measureFrom - 50*time.Millisecond)
	recTo, _ := c.metric(1, metric)
	wg.Wait()
	secs := (measureTo - measureFrom - 50*time.Millisecond).Seconds()
	got := 100 * (recTo - recFrom) / secs
	mu.Lock()
	defer mu.Unlock()
	t.Logf("request_percentage %.0f: recorded %.2f%% of one handler (%.1f%% of the quota), %.0f requests/s, %d throttled; client without a quota: %.0f requests/s, %d throttled",
		pct, got, 100*got/pct, float64(*counts[id])/secs, thr[id].n.Load(), float64(*counts["quota-free"])/secs, thr["quota-free"].n.Load())
	if got < 0.9*pct || got > 1.1*pct {
		t.Errorf("recorded request time %.2f%% is not within 10%% of the quota %.0f%%", got, pct)
	}
	if thr["quota-free"].n.Load() != 0 {
		t.Errorf("the client without a quota was throttled %d times", thr["quota-free"].n.Load())
	}
	if *counts["quota-free"] <= *counts[id] {
		t.Errorf("the client without a quota sent %d requests, the quoted one %d", *counts["quota-free"], *counts[id])
	}
}

// TestAdminClientQuotaFetchAnswersEmpty: under a consumer_byte_rate quota,
// a client that ignores throttle_time_ms (a raw connection sending Fetch
// back to back, at v11 and at v7, before KIP-219) gets every throttled
// answer at once and without records, as from Kafka, and is still held
// within 10% of the rate from 2 s to 8 s, since the node reads nothing
// more from it until the throttle time is up.
func TestAdminClientQuotaFetchAnswersEmpty(t *testing.T) {
	c := startCluster(t, 1)
	const topic, rate = "quota-empty", 1 << 18
	createTopic(t, c, topic, 1, 1, nil)
	prod := newFranz(t, c, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(16<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 8; i++ { // 8 MB
		rs := make([]*kgo.Record, 1000)
		for j := range rs {
			rs[j] = &kgo.Record{Value: make([]byte, 1000)}
		}
		if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	for _, version := range []int16{11, 7} {
		id := "quota-empty-v" + string(rune('0'+version%10))
		alterQuota(t, kadm.NewClient(prod), kadm.ClientQuotaEntity{{Type: "client-id", Name: &id}},
			kadm.AlterClientQuotaOp{Key: "consumer_byte_rate", Value: rate})
		nc, err := net.Dial("tcp", c.node(1).kafka)
		if err != nil {
			t.Fatal(err)
		}
		rc := &rawConn{nc: nc}
		start := time.Now()
		const measureFrom, measureTo = 2 * time.Second, 8 * time.Second
		var bytes, offset int64
		throttled, late := 0, 0
		var prevThrottle time.Duration // the mute the node owed before reading this request
		for time.Since(start) < measureTo {
			fr := kmsg.NewPtrFetchRequest()
			fr.Version, fr.MaxWaitMillis, fr.MaxBytes, fr.ReplicaID = version, 100, 64<<10, -1
			ft := kmsg.NewFetchRequestTopic()
			ft.Topic = topic
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.FetchOffset, fp.PartitionMaxBytes = offset, 64<<10
			ft.Partitions = append(ft.Partitions, fp)
			fr.Topics = append(fr.Topics, ft)
			sent := time.Now()
			resp := rc.do(t, fr, id).(*kmsg.FetchResponse)
			took := time.Since(sent)
			n := 0
			for _, rt := range resp.Topics {
				for _, p := range rt.Partitions {
					if p.ErrorCode != 0 {
						t.Fatalf("v%d fetch: error %d", version, p.ErrorCode)
					}
					n += len(p.RecordBatches)
					offset = nextOffset(p.RecordBatches, offset)
				}
			}
			own := time.Duration(resp.ThrottleMillis) * time.Millisecond
			if own > 0 {
				throttled++
				if n != 0 {
					t.Fatalf("v%d: a response throttled %d ms carried %d bytes of records", version, resp.ThrottleMillis, n)
				}
				// Answered late (by its own throttle time, as before
				// KIP-219) rather than at once after the mute it followed?
				if took >= prevThrottle+own {
					late++
				}
			}
			prevThrottle = own
			if el := time.Since(start); el > measureFrom && el < measureTo {
				bytes += int64(n)
			}
		}
		nc.Close()
		got := float64(bytes) / (measureTo - measureFrom).Seconds()
		t.Logf("Fetch v%d ignoring throttle_time_ms under a %d B/s quota: %.0f B/s (%.1f%%), %d empty throttled answers, %d of them late",
			version, rate, got, 100*got/rate, throttled, late)
		if got < 0.9*rate || got > 1.1*rate {
			t.Errorf("v%d: the raw consumer's rate %.0f B/s is not within 10%% of the quota %d B/s", version, got, rate)
		}
		if throttled == 0 {
			t.Errorf("v%d: never throttled", version)
		}
		if late*2 > throttled {
			t.Errorf("v%d: %d of %d throttled answers came only after their throttle time; they should come at once", version, late, throttled)
		}
	}
}

// nextOffset is the offset after the last whole record batch in raw
// (v2 batches: base offset, length, ..., last offset delta at byte 23).
func nextOffset(raw []byte, cur int64) int64 {
	for len(raw) >= 61 {
		size := int(binary.BigEndian.Uint32(raw[8:12])) + 12
		if size > len(raw) {
			break
		}
		base := int64(binary.BigEndian.Uint64(raw[0:8]))
		delta := int64(binary.BigEndian.Uint32(raw[23:27]))
		cur = base + delta + 1
		raw = raw[size:]
	}
	return cur
}

// TestAdminClientQuotaRequestFetchAnswersEmpty: under a request_percentage
// quota, a client that ignores throttle_time_ms (a raw connection sending
// Fetch back to back) gets every throttled answer without records, as
// from Kafka, whichever quota throttles, for 4 s (reading the partition
// over and over) while it reads on in the answers that are not.
func TestAdminClientQuotaRequestFetchAnswersEmpty(t *testing.T) {
	c := startCluster(t, 1)
	const topic, total = "quota-req-empty", 3000
	createTopic(t, c, topic, 1, 1, nil)
	prod := newFranz(t, c, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(4<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs := make([]*kgo.Record, total)
	for i := range rs {
		rs[i] = &kgo.Record{Value: make([]byte, 500)}
	}
	if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	id := "quota-req-fetch"
	alterQuota(t, kadm.NewClient(prod), kadm.ClientQuotaEntity{{Type: "client-id", Name: &id}},
		kadm.AlterClientQuotaOp{Key: "request_percentage", Value: 1})
	nc, err := net.Dial("tcp", c.node(1).kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := &rawConn{nc: nc}
	var offset int64
	fetches, throttled := 0, 0
	start := time.Now()
	var read int64
	for time.Since(start) < 4*time.Second {
		if offset >= total {
			offset = 0 // read it again: the client must keep the handlers busy
		}
		fr := kmsg.NewPtrFetchRequest()
		fr.Version, fr.MaxWaitMillis, fr.MaxBytes, fr.ReplicaID = 11, 100, 8<<10, -1
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = topic
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.FetchOffset, fp.PartitionMaxBytes = offset, 8<<10
		ft.Partitions = append(ft.Partitions, fp)
		fr.Topics = append(fr.Topics, ft)
		resp := rc.do(t, fr, id).(*kmsg.FetchResponse)
		fetches++
		n := 0
		for _, rt := range resp.Topics {
			for _, p := range rt.Partitions {
				if p.ErrorCode != 0 {
					t.Fatalf("fetch: error %d", p.ErrorCode)
				}
				n += len(p.RecordBatches)
				next := nextOffset(p.RecordBatches, offset)
				read += next - offset
				offset = next
			}
		}
		if resp.ThrottleMillis > 0 {
			throttled++
			if n != 0 {
				t.Fatalf("a response throttled %d ms by the request quota carried %d bytes of records", resp.ThrottleMillis, n)
			}
		}
	}
	t.Logf("read %d records in %v with %d fetches, %d of them throttled and empty", read, time.Since(start).Round(time.Millisecond), fetches, throttled)
	if read == 0 {
		t.Errorf("read nothing")
	}
	if throttled == 0 {
		t.Errorf("never throttled")
	}
}
