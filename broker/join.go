package broker

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The join decision. A node whose data directory is fresh cannot tell on
// its own whether the cluster is new (bootstrap the groups, as every node
// of a new cluster does) or already runs (its old disk was wiped, or it is
// a new node): bootstrapping into a running cluster would make it vote
// with no memory of its votes and acknowledgements. So it asks the
// cluster.toml peers on noticeIdentity:
//
//   - a peer that holds cluster state answers "exists": the node joins
//     (every group gagged until its leader promotes it), unless that peer
//     bootstrapped counting this very directory (same incarnation) as one
//     of the fresh nodes of a new cluster: then it bootstraps too;
//   - a majority of cluster.toml (self included) answering "fresh", and
//     none "exists", once every peer answered, or after identityGrace
//     every connected one (a running peer must get the chance to say the
//     cluster exists before two fresh nodes count each other): bootstrap;
//   - otherwise it waits and asks again.
//
// The decision is written to node.json before any group opens, so a
// restart halfway does not decide again.
const noticeIdentity uint16 = 6 // 4 and 5 are ElectLeaders' (elect.go)

// maxIdentityNotice bounds an identity notice (a peer is not trusted with
// memory).
const maxIdentityNotice = 4 << 10

// identityAskEvery is how often unanswered peers are asked again (a
// notice sent while the connection is down is lost).
const identityAskEvery = time.Second

// identityGrace is how long a fresh node waits for peers that do not
// answer (down, or not yet connected) before a majority of fresh answers
// is enough.
const identityGrace = 3 * time.Second

const (
	stateFresh  = "fresh"
	stateExists = "exists"
)

// identityMsg is a question (Ask) or an answer on noticeIdentity.
type identityMsg struct {
	Ask     bool   `json:"ask,omitempty"`
	Cluster string `json:"cluster"`
	Inc     string `json:"inc"` // the sender's incarnation
	// Raft is the asker's raft address: a peer that does not know the
	// asker (a node being added) answers there.
	Raft string `json:"raft,omitempty"`
	// Answers only:
	State string `json:"state,omitempty"`
	// Counted is the asker's incarnation as the answerer counted it fresh
	// when it decided to bootstrap ("" if it did not).
	Counted    string  `json:"counted,omitempty"`
	MetaVoters []int32 `json:"meta_voters,omitempty"`
}

type identityAnswer struct {
	from uint64
	msg  identityMsg
}

// ident returns a copy of the node's identity.
func (b *Broker) ident() identity {
	b.mb.idMu.Lock()
	defer b.mb.idMu.Unlock()
	return *b.mb.id
}

// onIdentityNotice answers a question, or hands an answer to decideMode.
// It runs on a transport goroutine and must not block.
func (b *Broker) onIdentityNotice(from uint64, data []byte) {
	if len(data) > maxIdentityNotice {
		return
	}
	var m identityMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Cluster != b.cfg.Cluster.ClusterID {
		return
	}
	if !m.Ask {
		select {
		case b.mb.joinAnswers <- identityAnswer{from: from, msg: m}:
		default: // nobody deciding, or a backlog: the asker asks again
		}
		return
	}
	id := b.ident()
	ans := identityMsg{Cluster: id.ClusterID, Inc: id.Incarnation, State: stateExists, MetaVoters: id.MetaVoters,
		Counted: id.Counted[strconv.FormatUint(from, 10)]}
	if id.Mode == modeUndecided {
		ans.State, ans.MetaVoters, ans.Counted = stateFresh, nil, ""
	}
	out, err := json.Marshal(&ans)
	if err != nil {
		return
	}
	b.learnGuest(from, m.Raft)
	b.host.SendNotice(from, noticeIdentity, out)
}

// decideMode settles a fresh directory's mode with the peers and records
// it in node.json; it returns at once when the mode is already known, and
// with ctx's error if the node stops first.
func (b *Broker) decideMode(ctx context.Context) error {
	id := b.ident()
	if id.Mode != modeUndecided {
		return nil
	}
	all := configuredIDs(b.cfg.Cluster)
	quorum := len(all)/2 + 1
	answers := map[uint64]identityMsg{}
	self, _ := b.cfg.Cluster.Node(b.cfg.NodeID)
	ask, _ := json.Marshal(&identityMsg{Ask: true, Cluster: id.ClusterID, Inc: id.Incarnation, Raft: self.Raft})
	askAll := func() {
		for _, n := range all {
			if n != b.cfg.NodeID && answers[uint64(n)].State != stateExists {
				b.host.SendNotice(uint64(n), noticeIdentity, ask)
			}
		}
	}
	tick := time.NewTicker(identityAskEvery)
	defer tick.Stop()
	start, lastLog := time.Now(), time.Time{}
	askAll()
	for {
		peerUp := b.peerEvents.wait()
		mode, from := decide(id, all, quorum, answers)
		if mode == modeBootstrap && from == 0 && !b.othersHeard(all, answers, time.Since(start) >= identityGrace) {
			mode = modeUndecided
		}
		if mode != modeUndecided {
			return b.recordMode(mode, from, answers)
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			b.logger.Info("fresh data directory: waiting for peers to tell whether the cluster exists",
				"answered", describeAnswers(answers), "need_fresh", quorum, "of", len(all))
		}
		select {
		case a := <-b.mb.joinAnswers:
			if slices.Contains(all, int32(a.from)) {
				answers[a.from] = a.msg
			}
		case <-peerUp:
			askAll()
		case <-tick.C:
			askAll()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// othersHeard reports whether every peer has answered, or after the
// grace every connected one.
func (b *Broker) othersHeard(all []int32, answers map[uint64]identityMsg, graceOver bool) bool {
	for _, n := range all {
		if n == b.cfg.NodeID {
			continue
		}
		if _, ok := answers[uint64(n)]; !ok && (!graceOver || b.host.PeerAlive(uint64(n))) {
			return false
		}
	}
	return true
}

// decide applies the rule above to the answers so far; from is the peer
// whose "exists" answer decided it (0 for a majority of fresh answers).
func decide(id identity, all []int32, quorum int, answers map[uint64]identityMsg) (mode string, from uint64) {
	fresh := 1 // this node
	var exists []uint64
	for p, a := range answers {
		switch a.State {
		case stateFresh:
			fresh++
		case stateExists:
			exists = append(exists, p)
		}
	}
	slices.Sort(exists)
	for _, p := range exists {
		if answers[p].Counted == id.Incarnation {
			return modeBootstrap, p
		}
	}
	if len(exists) > 0 {
		return modeJoin, exists[0]
	}
	if fresh >= quorum || len(all) == 1 {
		return modeBootstrap, 0 // counted fresh: the caller checks who answered
	}
	return modeUndecided, 0
}

// recordMode writes the decision into node.json.
func (b *Broker) recordMode(mode string, from uint64, answers map[uint64]identityMsg) error {
	b.mb.idMu.Lock()
	defer b.mb.idMu.Unlock()
	id := *b.mb.id
	id.Mode, id.Decided = mode, time.Now().UTC().Truncate(time.Second)
	switch {
	case mode == modeJoin:
		id.MetaVoters = slices.Clone(answers[from].MetaVoters)
		if len(id.MetaVoters) == 0 {
			id.MetaVoters = configuredIDs(b.cfg.Cluster)
		}
	default:
		id.MetaVoters = configuredIDs(b.cfg.Cluster)
		id.Counted = map[string]string{}
		for p, a := range answers {
			if a.State == stateFresh {
				id.Counted[strconv.FormatUint(p, 10)] = a.Inc
			}
		}
	}
	if err := writeIdentity(b.cfg.DataDir, &id); err != nil {
		return err
	}
	b.mb.id = &id
	if mode == modeJoin {
		b.logger.Info("fresh data directory: the cluster exists; joining it (every group as a non-voting member until caught up)",
			"told_by", from, "incarnation", id.Incarnation)
	} else {
		b.logger.Info("fresh data directory: bootstrapping a new cluster", "fresh_nodes", describeAnswers(answers))
	}
	return nil
}

func describeAnswers(answers map[uint64]identityMsg) string {
	if len(answers) == 0 {
		return "none"
	}
	ids := make([]uint64, 0, len(answers))
	for p := range answers {
		ids = append(ids, p)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, p := range ids {
		parts[i] = strconv.FormatUint(p, 10) + "=" + answers[p].State
	}
	return strings.Join(parts, ",")
}
