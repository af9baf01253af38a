package kafka

import "time"

// A node that does not know a partition's leader yet (it restarted moments
// ago and has not heard from the leaders, or an election is under way)
// answers Metadata with LEADER_NOT_AVAILABLE for it. franz-go then stops
// producing to the partition until its next refresh, which its metadata
// min age holds off for 5 s; kafka-go fails the write. In a fast roll a
// Metadata answered by the node restarted last named no leader for 29 of
// 30 partitions, and they went 5 s without an ack. So Metadata waits a
// little for such a partition's leader to become known, as long as one of
// its replicas is up: one that is all down has nothing to wait for.
const leaderWait = 250 * time.Millisecond

// topicsWithLeaders is Backend.Topics, waiting up to leaderWait while a
// partition with a live replica has no known leader; it looks again at
// each leader change.
func topicsWithLeaders(s *Server, names []string) []TopicInfo {
	deadline := time.NewTimer(leaderWait)
	defer deadline.Stop()
	for {
		changed := s.backend.LeadersChanged()
		infos := s.backend.Topics(names, true)
		if !awaitingLeader(infos) {
			return infos
		}
		select {
		case <-changed:
		case <-deadline.C:
			return withFallbacks(s.backend.Topics(names, true))
		case <-s.ctx.Done():
			return infos
		}
	}
}

// awaitingLeader reports whether a partition of infos has no known leader
// but a replica that is not offline.
func awaitingLeader(infos []TopicInfo) bool {
	for _, ti := range infos {
		if ti.Err != 0 {
			continue
		}
		for _, p := range ti.Partitions {
			if p.Leader < 0 && len(p.Offline) < len(p.Replicas) {
				return true
			}
		}
	}
	return false
}

// withFallbacks names, for a partition whose new leader is still unknown
// after leaderWait, the previous leader if it is still up (a hand-over
// whose election is slow, on a loaded machine). kafka-go fails a write
// for good on a partition whose Metadata leader is -1, until its next
// refresh up to 6 s later; a node that no longer leads answers NOT_LEADER
// or forwards, which every client retries or does not even see.
func withFallbacks(infos []TopicInfo) []TopicInfo {
	for _, ti := range infos {
		for i := range ti.Partitions {
			p := &ti.Partitions[i]
			if p.Leader < 0 && p.Fallback != nil && p.Fallback.Leader >= 0 {
				p.Leader, p.LeaderEpoch, p.Err = p.Fallback.Leader, p.Fallback.Epoch, 0
				if len(p.ISR) == 0 {
					p.ISR = []int32{p.Leader}
				}
			}
		}
	}
	return infos
}
