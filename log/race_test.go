package log

import (
	"sync"
	"testing"
)

// TestConcurrentAppendAndRead appends from one goroutine, as the replica
// does, while fetches, Raft reads and ListOffsets run on others. Under -race
// it fails if a reader touches segment state that Append changes.
func TestConcurrentAppendAndRead(t *testing.T) {
	l := openTest(t, t.TempDir(), 8<<10) // small segments: rolls during the run
	const entries = 600
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := uint64(1); i <= entries; i++ {
			e := Entry{Index: i, Term: 1 + i/200, Kind: KindBatch, Payload: testBatch(2, int64(1000+i), "concurrent")}
			if err := l.Append([]Entry{e}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	reader := func(read func(next int64, last uint64) error) {
		defer wg.Done()
		for n := 0; n < 100000; n++ {
			select {
			case <-done:
				return
			default:
			}
			if err := read(l.NextOffset(), l.LastIndex()); err != nil {
				t.Error(err)
				return
			}
		}
	}
	wg.Add(4)
	go reader(func(next int64, _ uint64) error {
		b, err := l.ReadBatches(max(next-20, 0), next, 1<<20, true)
		if err == nil && next > 0 && len(b) == 0 {
			t.Errorf("fetch below %d returned nothing", next)
		}
		return err
	})
	go reader(func(_ int64, last uint64) error {
		if last == 0 {
			return nil
		}
		es, err := l.Entries(max(last, 6)-5, last+1, 1<<20)
		if err == nil && (len(es) == 0 || es[len(es)-1].Index != last) {
			t.Errorf("entries up to %d: got %d", last, len(es))
		}
		return err
	})
	go reader(func(_ int64, last uint64) error {
		if last == 0 {
			return nil
		}
		_, err := l.EndOffsetAt(max(last, 2) - 1)
		return err
	})
	go reader(func(next int64, _ uint64) error {
		if _, _, _, err := l.OffsetForTime(1000 + next/4); err != nil {
			return err
		}
		_, _, _, err := l.MaxTimestamp()
		return err
	})
	wg.Wait()
	if l.LastIndex() != entries {
		t.Fatalf("last index %d", l.LastIndex())
	}
}
