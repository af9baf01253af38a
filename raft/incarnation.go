package raft

// PeerIncarnation is the data directory incarnation that peer id last
// stated (0: unknown, or a peer of an older release that states none).
func (h *Host) PeerIncarnation(id uint64) uint64 {
	return 0
}

// SetRetiredIncarnation marks incarnation inc of node id as retired (its
// disk was replaced): messages from a connection of id that states inc
// are dropped and counted (RetiredMessages).
func (h *Host) SetRetiredIncarnation(id, inc uint64) {
}

// RetiredMessages is how many messages from retired incarnations were
// dropped.
func (h *Host) RetiredMessages() uint64 { return 0 }
