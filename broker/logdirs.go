package broker

import (
	"sort"
	"syscall"

	"github.com/chronik-dev/chronik/kafka"
)

// LogDirs implements kafka.Backend. Every partition of this node lives in
// the one data directory, the internal offsets partitions included.
func (b *Broker) LogDirs(topics map[string][]int32) kafka.LogDir {
	ld := kafka.LogDir{Dir: b.cfg.DataDir, TotalBytes: -1, UsableBytes: -1}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(b.cfg.DataDir, &fs); err == nil {
		ld.TotalBytes = int64(fs.Blocks) * int64(fs.Bsize)
		ld.UsableBytes = int64(fs.Bavail) * int64(fs.Bsize)
	}
	want := func(topic string, part int32) bool {
		if topics == nil {
			return true
		}
		parts, ok := topics[topic]
		if !ok {
			return false
		}
		for _, p := range parts {
			if p == part {
				return true
			}
		}
		return false
	}
	b.mu.RLock()
	parts := make([]*partition, 0, len(b.parts))
	for _, p := range b.parts {
		if want(p.topic, p.index) {
			parts = append(parts, p)
		}
	}
	var offsets []*offsetsPartition
	for _, op := range b.offsets {
		if want(offsetsTopic, op.index) {
			offsets = append(offsets, op)
		}
	}
	b.mu.RUnlock()
	for _, op := range offsets {
		ld.Partitions = append(ld.Partitions, kafka.LogDirPartition{Topic: offsetsTopic, Partition: op.index, Size: op.rep.Log().Size()})
	}
	for _, p := range parts {
		l := p.rep.Log()
		lag := p.hw.Load() - l.NextOffset()
		ld.Partitions = append(ld.Partitions, kafka.LogDirPartition{Topic: p.topic, Partition: p.index, Size: l.Size(), Lag: max(lag, 0)})
	}
	sort.Slice(ld.Partitions, func(i, j int) bool {
		a, c := ld.Partitions[i], ld.Partitions[j]
		return a.Topic < c.Topic || a.Topic == c.Topic && a.Partition < c.Partition
	})
	return ld
}
