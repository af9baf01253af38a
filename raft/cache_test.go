package raft

import (
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestCacheEvictSteady appends small entries one at a time, each applied
// at once, as a stream of one-record produces does: the cache keeps the
// latest entries within its limit, contiguous, and the time per entry
// does not grow with the number of entries the cache holds (eviction
// cuts the front instead of shifting the rest down).
func TestCacheEvictSteady(t *testing.T) {
	s := &storage{}
	data := make([]byte, 100)
	const n = 200000
	for i := uint64(1); i <= n; i++ {
		idx, term := i, uint64(1)
		s.cachePut([]*pb.Entry{{Index: &idx, Term: &term, Data: data}})
		s.cacheEvict(i)
		if s.cacheBytes > cacheLimit {
			t.Fatalf("entry %d: cache holds %d bytes, over %d", i, s.cacheBytes, cacheLimit)
		}
	}
	want := cacheLimit / len(data)
	if len(s.cache) != want {
		t.Fatalf("cache holds %d entries, want %d", len(s.cache), want)
	}
	for i, e := range s.cache {
		if e.GetIndex() != uint64(n-want+1+i) {
			t.Fatalf("cache[%d] is entry %d, want %d", i, e.GetIndex(), n-want+1+i)
		}
	}
	if !s.cacheCovers(n-10, n+1) || s.cacheCovers(n-uint64(want)-1, n) {
		t.Fatalf("cacheCovers wrong at the cache's ends")
	}
	got, ok := s.cacheGet(n-9, n+1, 1<<20)
	if !ok || len(got) != 10 || got[0].GetIndex() != n-9 {
		t.Fatalf("cacheGet: %d entries, ok %v", len(got), ok)
	}
	// Entries not applied stay, over the limit.
	for i := uint64(n + 1); i <= n+100; i++ {
		idx, term := i, uint64(1)
		s.cachePut([]*pb.Entry{{Index: &idx, Term: &term, Data: data}})
		s.cacheEvict(n - uint64(want)) // below the cache's first entry
	}
	if len(s.cache) != want+100 {
		t.Fatalf("with 100 unapplied entries the cache holds %d, want %d", len(s.cache), want+100)
	}
	s.cacheEvict(n + 100)
	if s.cacheBytes > cacheLimit || s.cache[len(s.cache)-1].GetIndex() != n+100 {
		t.Fatalf("after applying: %d bytes, last %d", s.cacheBytes, s.cache[len(s.cache)-1].GetIndex())
	}
}
