package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metadata v0-12. v1 added controller and racks; v2 cluster id; v4
// AllowAutoTopicCreation; v5 offline replicas; v7 leader epochs; v8-10
// authorized operations; v9 flexible; v10 topic ids; v12 lookup by id.
// Any broker answers from its view of the cluster, which the brokers keep
// current by telling each other of leadership changes.
func init() { register(3, 0, 12, handleMetadata) }

func handleMetadata(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.MetadataRequest)
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	resp.Version = req.Version
	id := s.backend.ClusterID()
	resp.ClusterID = &id
	resp.ControllerID = s.backend.ControllerID()

	var names []string
	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	unknownIDs := map[int]bool{}
	byID := map[string][16]byte{} // names asked for by topic id
	if !all {
		for i, t := range req.Topics {
			if t.Topic != nil && *t.Topic != "" {
				names = append(names, *t.Topic)
				continue
			}
			if name, ok := s.backend.TopicName(t.TopicID); ok {
				names = append(names, name)
				byID[name] = t.TopicID
			} else {
				unknownIDs[i] = true
			}
		}
	}
	var infos []TopicInfo
	if all {
		infos = topicsWithLeaders(s, nil)
	} else if len(names) > 0 {
		infos = topicsWithLeaders(s, names)
	}
	infos = describable(s, cc, infos, all, byID)
	hidden := hiddenBrokers(s, infos)
	for _, b := range s.brokersFor(cc) {
		if !hidden[b.NodeID] {
			resp.Brokers = append(resp.Brokers, kmsg.MetadataResponseBroker{NodeID: b.NodeID, Host: b.Host, Port: b.Port, Rack: b.Rack})
		}
	}
	// Before v4 every request may create topics; the cluster setting
	// (auto.create.topics.enable) can forbid it either way.
	autoCreate := (req.Version < 4 || req.AllowAutoTopicCreation) && s.backend.AutoCreateTopics()
	if autoCreate && !all {
		autoCreateTopics(s, cc, infos)
	}
	for i := range req.Topics {
		if unknownIDs[i] {
			resp.Topics = append(resp.Topics, kmsg.MetadataResponseTopic{TopicID: req.Topics[i].TopicID, ErrorCode: kerr.UnknownTopicID.Code})
		}
	}
	for _, ti := range infos {
		name := ti.Name
		t := kmsg.MetadataResponseTopic{Topic: &name, TopicID: ti.ID, IsInternal: ti.Internal, ErrorCode: ti.Err,
			AuthorizedOperations: omittedOperations}
		if req.IncludeTopicAuthorizedOperations && ti.Err != kerr.TopicAuthorizationFailed.Code {
			t.AuthorizedOperations = topicOps(s, cc, name)
		}
		s.metrics.countErr(3, ti.Err)
		for _, p := range ti.Partitions {
			t.Partitions = append(t.Partitions, kmsg.MetadataResponseTopicPartition{
				ErrorCode: p.Err, Partition: p.Partition, Leader: p.Leader, LeaderEpoch: p.LeaderEpoch,
				Replicas: p.Replicas, ISR: p.ISR, OfflineReplicas: p.Offline,
			})
		}
		resp.Topics = append(resp.Topics, t)
	}
	resp.AuthorizedOperations = omittedOperations
	if req.IncludeClusterAuthorizedOperations && req.Version <= 10 {
		resp.AuthorizedOperations = clusterOps(s, cc)
	}
	return func() kmsg.Response { return resp }
}

// autoCreateTopics creates the unknown topics of infos. As in Kafka, a topic
// this request created is answered LEADER_NOT_AVAILABLE with no partitions
// (clients retry), and one that someone else created meanwhile is described
// as it is. The partitions count toward the same limits as CreateTopics'
// (per request and per cluster); past them every topic the request would
// create is answered POLICY_VIOLATION, which clients do not retry.
func autoCreateTopics(s *Server, cc *connCtx, infos []TopicInfo) {
	var create []CreateTopic
	var created []int // their indexes in infos
	var adds int64
	for i, ti := range infos {
		if ti.Err == kerr.UnknownTopicOrPartition.Code && mayCreateTopic(s, cc, ti.Name) {
			ct := CreateTopic{Name: ti.Name, Partitions: -1, ReplicationFactor: -1}
			create, created = append(create, ct), append(created, i)
			adds += newPartitions(s, ct)
			infos[i].Err = kerr.LeaderNotAvailable.Code
		}
	}
	if len(create) == 0 {
		return
	}
	if refused := s.checkNewPartitions(adds); refused != "" {
		s.logger.Debug("topic auto-creation refused", "topics", len(create), "why", refused, "remote", cc.remote)
		for _, i := range created {
			infos[i].Err = kerr.PolicyViolation.Code
		}
		return
	}
	ctx, cancel := context.WithTimeout(cc.ctx, 5*time.Second)
	res := s.backend.CreateTopics(ctx, create, false)
	cancel()
	for _, r := range res {
		for i := range infos {
			if infos[i].Name != r.Name {
				continue
			}
			switch r.Err {
			case 0:
			case kerr.TopicAlreadyExists.Code:
				if again := s.backend.Topics([]string{r.Name}, true); len(again) == 1 && again[0].Err == 0 {
					infos[i] = again[0]
				}
			default:
				infos[i].Err = r.Err
			}
		}
	}
}

// describable applies DESCRIBE on each topic: a listing of every topic
// leaves out the others; a topic asked for is answered
// TOPIC_AUTHORIZATION_FAILED, which tells nothing of whether it exists,
// and when asked for by id, without its name.
func describable(s *Server, cc *connCtx, infos []TopicInfo, all bool, byID map[string][16]byte) []TopicInfo {
	if !aclsOn(s) {
		return infos
	}
	out := infos[:0]
	for _, ti := range infos {
		if !mayTopic(s, cc, kmsg.ACLOperationDescribe, ti.Name) {
			if all {
				continue
			}
			if id, ok := byID[ti.Name]; ok {
				ti = TopicInfo{ID: id, Err: kerr.TopicAuthorizationFailed.Code}
			} else {
				ti = TopicInfo{Name: ti.Name, Err: kerr.TopicAuthorizationFailed.Code}
			}
		}
		out = append(out, ti)
	}
	return out
}

// BrokerHider is a Backend that names brokers Metadata should leave out:
// ones stopping or stopped, which lead nothing (broker/meta_hidden.go).
type BrokerHider interface {
	HiddenBrokers() map[int32]bool
}

// hiddenBrokers is the backend's BrokerHider answer, keeping any broker
// that leads a partition of infos (the answer must name every leader it
// gives: kafka-go fails a write to a leader missing from the list).
func hiddenBrokers(s *Server, infos []TopicInfo) map[int32]bool {
	bh, ok := s.backend.(BrokerHider)
	if !ok {
		return nil
	}
	hide := bh.HiddenBrokers()
	if len(hide) == 0 {
		return nil
	}
	for _, ti := range infos {
		for _, p := range ti.Partitions {
			delete(hide, p.Leader)
		}
	}
	return hide
}
