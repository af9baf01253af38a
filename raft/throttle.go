package raft

// SetLearnerRate changes Config.LearnerRate live (bytes per second sent
// to learners, all groups together; 0: unlimited).
func (h *Host) SetLearnerRate(bytesPerSec int64) {
}
