package kafka

import (
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka's ACL rules for the group APIs, applied before the coordinator
// sees a request: joining, syncing, heartbeats and leaving need READ on the
// group (KIP-848's heartbeat too); committing needs READ on the group and
// on each topic; fetching offsets and describing need DESCRIBE; deleting groups and offsets needs
// DELETE on the group (and READ on each topic for offsets). ListGroups
// lists every group for DESCRIBE on the cluster, else the groups the
// principal may describe.

// groupAuthz is the outcome for one group request: refused, when not nil,
// is the whole answer; otherwise pass goes to the coordinator and finish
// adds the refused parts back to (or takes hidden ones out of) its answer.
type groupAuthz struct {
	refused kmsg.Response
	pass    kmsg.Request
	finish  func(kmsg.Response)
}

var (
	groupDenied = kerr.GroupAuthorizationFailed.Code
	topicDenied = kerr.TopicAuthorizationFailed.Code
)

// authorizeGroup decides on the reader goroutine; finish runs later with
// a copy of who asked, so it never reads the connection's state.
func authorizeGroup(s *Server, cc *connCtx, req kmsg.Request) groupAuthz {
	out := groupAuthz{pass: req, finish: func(kmsg.Response) {}}
	if !aclsOn(s) {
		return out
	}
	who := &connCtx{principal: cc.principal, remote: cc.remote}
	refuse := func(op kmsg.ACLOperation, group string, set func(kmsg.Response)) bool {
		if mayGroup(s, who, op, group) {
			return false
		}
		resp := req.ResponseKind()
		set(resp)
		out.refused = resp
		return true
	}
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		refuse(kmsg.ACLOperationRead, r.Group, func(x kmsg.Response) { x.(*kmsg.JoinGroupResponse).ErrorCode = groupDenied })
	case *kmsg.SyncGroupRequest:
		refuse(kmsg.ACLOperationRead, r.Group, func(x kmsg.Response) { x.(*kmsg.SyncGroupResponse).ErrorCode = groupDenied })
	case *kmsg.HeartbeatRequest:
		refuse(kmsg.ACLOperationRead, r.Group, func(x kmsg.Response) { x.(*kmsg.HeartbeatResponse).ErrorCode = groupDenied })
	case *kmsg.LeaveGroupRequest:
		refuse(kmsg.ACLOperationRead, r.Group, func(x kmsg.Response) { x.(*kmsg.LeaveGroupResponse).ErrorCode = groupDenied })
	case *kmsg.ConsumerGroupHeartbeatRequest:
		refuse(kmsg.ACLOperationRead, r.Group, func(x kmsg.Response) { x.(*kmsg.ConsumerGroupHeartbeatResponse).ErrorCode = groupDenied })
	case *kmsg.OffsetCommitRequest:
		authorizeOffsetCommit(s, who, r, &out)
	case *kmsg.OffsetFetchRequest:
		authorizeOffsetFetch(s, who, r, &out)
	case *kmsg.OffsetDeleteRequest:
		if !refuse(kmsg.ACLOperationDelete, r.Group, func(x kmsg.Response) { x.(*kmsg.OffsetDeleteResponse).ErrorCode = groupDenied }) {
			authorizeOffsetDelete(s, who, r, &out)
		}
	case *kmsg.DescribeGroupsRequest:
		authorizeDescribeGroups(s, who, r, &out)
	case *kmsg.DeleteGroupsRequest:
		authorizeDeleteGroups(s, who, r, &out)
	case *kmsg.ConsumerGroupDescribeRequest:
		authorizeConsumerGroupDescribe(s, who, r, &out)
	case *kmsg.ListGroupsRequest:
		if !mayCluster(s, who, kmsg.ACLOperationDescribe) {
			out.finish = func(x kmsg.Response) {
				resp := x.(*kmsg.ListGroupsResponse)
				kept := resp.Groups[:0]
				for _, g := range resp.Groups {
					if mayGroup(s, who, kmsg.ACLOperationDescribe, g.Group) {
						kept = append(kept, g)
					}
				}
				resp.Groups = kept
			}
		}
	default:
		// A group API without rules here is for the cluster's operators.
		if !mayCluster(s, who, kmsg.ACLOperationAlter) {
			resp := req.ResponseKind()
			if f := reflect.ValueOf(resp).Elem().FieldByName("ErrorCode"); f.IsValid() && f.CanSet() && f.Kind() == reflect.Int16 {
				f.SetInt(int64(kerr.ClusterAuthorizationFailed.Code))
			}
			out.refused = resp
		}
	}
	return out
}

func authorizeOffsetCommit(s *Server, who *connCtx, r *kmsg.OffsetCommitRequest, out *groupAuthz) {
	groupOK := mayGroup(s, who, kmsg.ACLOperationRead, r.Group)
	pass := *r
	pass.Topics = nil
	var refused []kmsg.OffsetCommitResponseTopic
	for _, t := range r.Topics {
		code := groupDenied
		if groupOK {
			code = topicErr(s, who, kmsg.ACLOperationRead, t.Topic)
		}
		if code == 0 {
			pass.Topics = append(pass.Topics, t)
			continue
		}
		rt := kmsg.OffsetCommitResponseTopic{Topic: t.Topic, TopicID: t.TopicID}
		for _, p := range t.Partitions {
			rt.Partitions = append(rt.Partitions, kmsg.OffsetCommitResponseTopicPartition{Partition: p.Partition, ErrorCode: code})
		}
		refused = append(refused, rt)
	}
	settle(out, &pass, len(pass.Topics), refused, func(x kmsg.Response) *[]kmsg.OffsetCommitResponseTopic { return &x.(*kmsg.OffsetCommitResponse).Topics })
}

// authorizeOffsetFetch refuses the groups the principal may not describe
// and, in the answer, blanks the offsets of topics it may not describe
// (dropping them when all topics were asked for).
func authorizeOffsetFetch(s *Server, who *connCtx, r *kmsg.OffsetFetchRequest, out *groupAuthz) {
	topicOK := func(t string) bool { return mayTopic(s, who, kmsg.ACLOperationDescribe, t) }
	if r.Version < 8 {
		if !mayGroup(s, who, kmsg.ACLOperationDescribe, r.Group) {
			resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
			resp.ErrorCode = groupDenied
			for _, t := range r.Topics {
				rt := kmsg.OffsetFetchResponseTopic{Topic: t.Topic}
				for _, p := range t.Partitions {
					rt.Partitions = append(rt.Partitions, kmsg.OffsetFetchResponseTopicPartition{Partition: p, Offset: -1, LeaderEpoch: -1, ErrorCode: groupDenied})
				}
				resp.Topics = append(resp.Topics, rt)
			}
			out.refused = resp
			return
		}
		all := r.Topics == nil
		out.finish = func(x kmsg.Response) {
			resp := x.(*kmsg.OffsetFetchResponse)
			kept := resp.Topics[:0]
			for _, t := range resp.Topics {
				if !topicOK(t.Topic) {
					if all {
						continue
					}
					for i := range t.Partitions {
						t.Partitions[i] = kmsg.OffsetFetchResponseTopicPartition{Partition: t.Partitions[i].Partition, Offset: -1, LeaderEpoch: -1, ErrorCode: topicDenied}
					}
				}
				kept = append(kept, t)
			}
			resp.Topics = kept
		}
		return
	}
	pass := *r
	pass.Groups = nil
	var refused []kmsg.OffsetFetchResponseGroup
	all := map[string]bool{}
	for _, g := range r.Groups {
		if mayGroup(s, who, kmsg.ACLOperationDescribe, g.Group) {
			pass.Groups = append(pass.Groups, g)
			all[g.Group] = g.Topics == nil
			continue
		}
		refused = append(refused, kmsg.OffsetFetchResponseGroup{Group: g.Group, ErrorCode: groupDenied})
	}
	if len(pass.Groups) == 0 {
		resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.Groups = refused
		out.refused = resp
		return
	}
	out.pass = &pass
	out.finish = func(x kmsg.Response) {
		resp := x.(*kmsg.OffsetFetchResponse)
		for gi := range resp.Groups {
			g := &resp.Groups[gi]
			kept := g.Topics[:0]
			for _, t := range g.Topics {
				if !topicOK(t.Topic) {
					if all[g.Group] {
						continue
					}
					for i := range t.Partitions {
						t.Partitions[i] = kmsg.OffsetFetchResponseGroupTopicPartition{Partition: t.Partitions[i].Partition, Offset: -1, LeaderEpoch: -1, ErrorCode: topicDenied}
					}
				}
				kept = append(kept, t)
			}
			g.Topics = kept
		}
		resp.Groups = append(resp.Groups, refused...)
	}
}

func authorizeOffsetDelete(s *Server, who *connCtx, r *kmsg.OffsetDeleteRequest, out *groupAuthz) {
	pass := *r
	pass.Topics = nil
	var refused []kmsg.OffsetDeleteResponseTopic
	for _, t := range r.Topics {
		if mayTopic(s, who, kmsg.ACLOperationRead, t.Topic) {
			pass.Topics = append(pass.Topics, t)
			continue
		}
		rt := kmsg.OffsetDeleteResponseTopic{Topic: t.Topic}
		for _, p := range t.Partitions {
			rt.Partitions = append(rt.Partitions, kmsg.OffsetDeleteResponseTopicPartition{Partition: p.Partition, ErrorCode: topicDenied})
		}
		refused = append(refused, rt)
	}
	settle(out, &pass, len(pass.Topics), refused, func(x kmsg.Response) *[]kmsg.OffsetDeleteResponseTopic { return &x.(*kmsg.OffsetDeleteResponse).Topics })
}

// byGroup splits a request's groups into those op is allowed on, to pass
// on, and the answers (made by refuse) for the others.
func byGroup[G any](s *Server, who *connCtx, op kmsg.ACLOperation, groups []string, refuse func(string) G) (pass []string, refused []G) {
	for _, g := range groups {
		if mayGroup(s, who, op, g) {
			pass = append(pass, g)
		} else {
			refused = append(refused, refuse(g))
		}
	}
	return pass, refused
}

func authorizeDescribeGroups(s *Server, who *connCtx, r *kmsg.DescribeGroupsRequest, out *groupAuthz) {
	groups, refused := byGroup(s, who, kmsg.ACLOperationDescribe, r.Groups, func(g string) kmsg.DescribeGroupsResponseGroup {
		rg := kmsg.NewDescribeGroupsResponseGroup()
		rg.Group, rg.ErrorCode = g, groupDenied
		return rg
	})
	pass := *r
	pass.Groups = groups
	settle(out, &pass, len(groups), refused, func(x kmsg.Response) *[]kmsg.DescribeGroupsResponseGroup {
		return &x.(*kmsg.DescribeGroupsResponse).Groups
	})
}

func authorizeConsumerGroupDescribe(s *Server, who *connCtx, r *kmsg.ConsumerGroupDescribeRequest, out *groupAuthz) {
	groups, refused := byGroup(s, who, kmsg.ACLOperationDescribe, r.Groups, func(g string) kmsg.ConsumerGroupDescribeResponseGroup {
		rg := kmsg.NewConsumerGroupDescribeResponseGroup()
		rg.Group, rg.ErrorCode = g, groupDenied
		return rg
	})
	pass := *r
	pass.Groups = groups
	settle(out, &pass, len(groups), refused, func(x kmsg.Response) *[]kmsg.ConsumerGroupDescribeResponseGroup {
		return &x.(*kmsg.ConsumerGroupDescribeResponse).Groups
	})
}

func authorizeDeleteGroups(s *Server, who *connCtx, r *kmsg.DeleteGroupsRequest, out *groupAuthz) {
	groups, refused := byGroup(s, who, kmsg.ACLOperationDelete, r.Groups, func(g string) kmsg.DeleteGroupsResponseGroup {
		return kmsg.DeleteGroupsResponseGroup{Group: g, ErrorCode: groupDenied}
	})
	pass := *r
	pass.Groups = groups
	settle(out, &pass, len(groups), refused, func(x kmsg.Response) *[]kmsg.DeleteGroupsResponseGroup { return &x.(*kmsg.DeleteGroupsResponse).Groups })
}

// settle records a request split into passed and refused parts: nothing
// changes when none were refused; when none passed, the refused parts are
// the whole answer; otherwise pass goes on and finish appends the refused
// parts to the coordinator's answer. parts points into a response of
// pass's kind at the list the refused parts belong to.
func settle[P any](out *groupAuthz, pass kmsg.Request, passed int, refused []P, parts func(kmsg.Response) *[]P) {
	if len(refused) == 0 {
		return
	}
	if passed == 0 {
		resp := pass.ResponseKind()
		*parts(resp) = refused
		out.refused = resp
		return
	}
	out.pass = pass
	out.finish = func(x kmsg.Response) {
		p := parts(x)
		*p = append(*p, refused...)
	}
}
