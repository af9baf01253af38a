package broker

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/kafka"
)

// ACLs live in the cluster metadata (metaState.ACLs), so every node
// decides alike as soon as it has applied a change; the switches that say
// whether they are enforced and who bypasses them (super users) come from
// cluster.toml, which every node shares.

var _ kafka.Authorizer = (*Broker)(nil)

// ACLsEnabled implements kafka.Authorizer: cluster.toml's acls_enabled.
func (b *Broker) ACLsEnabled() bool { return b.cfg.Cluster.ACLsEnabled }

// Authorize implements kafka.Authorizer.
func (b *Broker) Authorize(p kafka.Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType, name string) bool {
	if !b.cfg.Cluster.ACLsEnabled || b.superUser(p) {
		return true
	}
	return b.metaSM.aclIndex().Decide(p, host, op, rt, name, b.cfg.Cluster.AllowEveryoneIfNoACLFound)
}

// AuthorizeAny implements kafka.Authorizer.
func (b *Broker) AuthorizeAny(p kafka.Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType) bool {
	if !b.cfg.Cluster.ACLsEnabled || b.superUser(p) {
		return true
	}
	return b.metaSM.aclIndex().DecideAny(p, host, op, rt, b.cfg.Cluster.AllowEveryoneIfNoACLFound)
}

func (b *Broker) superUser(p kafka.Principal) bool {
	return slices.Contains(b.cfg.Cluster.SuperUsers, p.String())
}

// CreateACLs implements kafka.Authorizer.
func (b *Broker) CreateACLs(ctx context.Context, acls []kafka.ACL) error {
	mr, err := b.metaPropose(ctx, metaCmd{Op: "create_acls", ACLs: acls})
	if err != nil {
		return fmt.Errorf("metadata change did not complete: %w", err)
	}
	if mr.Err != 0 {
		return fmt.Errorf("metadata change refused: %d %s", mr.Err, mr.Msg)
	}
	return nil
}

// DescribeACLs implements kafka.Authorizer.
func (b *Broker) DescribeACLs(f kafka.ACLFilter) []kafka.ACL {
	b.metaSM.mu.RLock()
	defer b.metaSM.mu.RUnlock()
	var out []kafka.ACL
	for _, a := range b.metaSM.st.ACLs {
		if f.Matches(a) {
			out = append(out, a)
		}
	}
	return out
}

// DeleteACLs implements kafka.Authorizer.
func (b *Broker) DeleteACLs(ctx context.Context, fs []kafka.ACLFilter) ([][]kafka.ACL, error) {
	mr, err := b.metaPropose(ctx, metaCmd{Op: "delete_acls", Filters: fs})
	if err != nil {
		return nil, fmt.Errorf("metadata change did not complete: %w", err)
	}
	if mr.Err != 0 {
		return nil, fmt.Errorf("metadata change refused: %d %s", mr.Err, mr.Msg)
	}
	return mr.Deleted, nil
}

// applyCreateACLs adds the ACLs that are not there yet (deterministic).
func (m *metaSM) applyCreateACLs(acls []kafka.ACL) metaResult {
	for _, a := range acls {
		if kafka.CheckACL(a) != "" || slices.Contains(m.st.ACLs, a) {
			continue
		}
		m.st.ACLs = append(m.st.ACLs, a)
	}
	m.acls = kafka.NewACLIndex(m.st.ACLs)
	return metaResult{}
}

// applyDeleteACLs removes what each filter matches, in filter order (an
// ACL two filters match is reported under the first).
func (m *metaSM) applyDeleteACLs(fs []kafka.ACLFilter) metaResult {
	res := metaResult{Deleted: make([][]kafka.ACL, len(fs))}
	for i, f := range fs {
		keep := m.st.ACLs[:0:0]
		for _, a := range m.st.ACLs {
			if f.Matches(a) {
				res.Deleted[i] = append(res.Deleted[i], a)
			} else {
				keep = append(keep, a)
			}
		}
		m.st.ACLs = keep
	}
	m.acls = kafka.NewACLIndex(m.st.ACLs)
	return res
}

// aclIndex returns the current ACLs, indexed; the index never changes.
func (m *metaSM) aclIndex() *kafka.ACLIndex {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.acls
}
