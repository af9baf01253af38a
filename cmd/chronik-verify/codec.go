package main

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// A record value is laid out as
//
//	magic "CV" | version | run id (8) | seq (8) | send time ns (8) | filler | CRC-32C (4)
//
// all big endian. The run id separates this run's records from older ones on
// a reused topic; the CRC covers everything before it, so truncation and bit
// flips anywhere in the value are caught.
const (
	magic0, magic1 = 'C', 'V'
	codecVersion   = 1
	headerLen      = 2 + 1 + 8 + 8 + 8
	minValueLen    = headerLen + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errForeign = errors.New("not a chronik-verify value")
	errCorrupt = errors.New("checksum mismatch")
)

type payload struct {
	run      uint64
	seq      uint64
	sentUnix int64 // wall clock ns, for end-to-end latency
}

// encode returns a value of exactly size bytes (at least minValueLen).
func encode(p payload, size int) []byte {
	size = max(size, minValueLen)
	b := make([]byte, size)
	b[0], b[1], b[2] = magic0, magic1, codecVersion
	binary.BigEndian.PutUint64(b[3:], p.run)
	binary.BigEndian.PutUint64(b[11:], p.seq)
	binary.BigEndian.PutUint64(b[19:], uint64(p.sentUnix))
	// Filler depends on seq so that two records never share a body.
	for i := headerLen; i < size-4; i++ {
		b[i] = byte(p.seq) ^ byte(i*7)
	}
	binary.BigEndian.PutUint32(b[size-4:], crc32.Checksum(b[:size-4], castagnoli))
	return b
}

// decode returns errForeign for values that were not written by any
// chronik-verify run, and errCorrupt for ones that look like ours but fail
// the checksum.
func decode(b []byte) (payload, error) {
	if len(b) < 3 || b[0] != magic0 || b[1] != magic1 || b[2] != codecVersion {
		return payload{}, errForeign
	}
	if len(b) < minValueLen {
		return payload{}, errCorrupt
	}
	n := len(b) - 4
	if crc32.Checksum(b[:n], castagnoli) != binary.BigEndian.Uint32(b[n:]) {
		return payload{}, errCorrupt
	}
	return payload{
		run:      binary.BigEndian.Uint64(b[3:]),
		seq:      binary.BigEndian.Uint64(b[11:]),
		sentUnix: int64(binary.BigEndian.Uint64(b[19:])),
	}, nil
}
