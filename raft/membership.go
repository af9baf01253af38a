package raft

import (
	"context"
	"errors"
)

// Membership is the configuration a group should reach (Reconfigure).
type Membership struct {
	// Voters are the voting members wanted, in preference order.
	Voters []uint64
	// Learners are members that replicate without voting.
	Learners []uint64
	// Rejoin names nodes that lost their disk and came back under the
	// same id with a new data directory incarnation (node -> incarnation):
	// each is demoted to learner, caught up, and promoted again by a change
	// that names the incarnation, which lifts its gag (gag.go).
	Rejoin map[uint64]uint64
}

// Progress is where a group stands on its way to a Membership.
type Progress struct {
	// Done is set once the group's configuration is the one wanted.
	Done bool
	// Step names what Reconfigure did or waits for: "done",
	// "in progress" (a configuration change of the group's own is not
	// applied yet), "leave joint", "add learner", "demote", "catch up",
	// "promote rejoined", "joint", "transfer".
	Step string
	// Voters, Learners and Outgoing are the configuration after the step
	// (Outgoing: the outgoing voters of a joint configuration).
	Voters, Learners, Outgoing []uint64
	// Behind is, for each learner to be promoted, how many entries it
	// trails the leader's log.
	Behind map[uint64]uint64
}

// ErrBadMembership says a Membership asked of Reconfigure cannot be
// reached safely or is malformed; the error says why.
var ErrBadMembership = errors.New("raft: membership refused")

// Reconfigure moves the group one safe step towards want and returns
// where it is; the caller calls it again until Progress.Done. Each step
// is one configuration change (ConfChangeV2), proposed and waited for
// until it is applied on this leader:
//
//  1. a joint configuration left half-done is left first;
//  2. every wanted member missing from the configuration is added as a
//     learner;
//  3. each voter named in want.Rejoin is demoted to learner;
//  4. until the learners to be promoted are caught up, Reconfigure
//     returns at once with how far behind they are (Behind);
//  5. each rejoined learner is promoted alone, by a change whose context
//     names its incarnation (which lifts its gag);
//  6. one change (joint when more than one member changes, left
//     automatically) promotes the other learners, removes the members not
//     wanted and demotes the voters wanted as learners;
//  7. if this leader itself is to go, it hands leadership to a caught-up
//     voter that stays and returns a NotLeaderError naming it: the caller
//     retries there.
//
// It is idempotent: on a new leader after a crash or a leadership change
// it picks up from the configuration the log holds. A configuration
// change still pending in the group is reported as Step "in progress"
// with no error. A follower returns a NotLeaderError.
func (r *Replica) Reconfigure(ctx context.Context, want Membership) (Progress, error) {
	return Progress{}, errors.New("raft: Reconfigure: not implemented yet")
}
