package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The handlers ask these helpers before touching a resource, with Kafka's
// per-API rules (produce: WRITE on the topic; fetch: READ; groups: READ on
// the group; topic admin: CREATE, DELETE, ALTER; configs: DESCRIBE_CONFIGS
// and ALTER_CONFIGS; the ACL APIs: DESCRIBE and ALTER on the cluster). With
// a backend that is no Authorizer, or ACLs off, everything is allowed.

// authorizer returns the backend's Authorizer when it enforces ACLs.
func authorizer(s *Server) Authorizer {
	a, ok := s.backend.(Authorizer)
	if !ok || !a.ACLsEnabled() {
		return nil
	}
	return a
}

// may reports whether cc's principal may do op on the resource.
func may(s *Server, cc *connCtx, op kmsg.ACLOperation, rt kmsg.ACLResourceType, name string) bool {
	a := authorizer(s)
	return a == nil || a.Authorize(cc.principal, hostOf(cc.remote), op, rt, name)
}

func mayTopic(s *Server, cc *connCtx, op kmsg.ACLOperation, topic string) bool {
	return may(s, cc, op, kmsg.ACLResourceTypeTopic, topic)
}

func mayCluster(s *Server, cc *connCtx, op kmsg.ACLOperation) bool {
	return may(s, cc, op, kmsg.ACLResourceTypeCluster, ClusterResource)
}

func mayGroup(s *Server, cc *connCtx, op kmsg.ACLOperation, group string) bool {
	return may(s, cc, op, kmsg.ACLResourceTypeGroup, group)
}

// mayCreateTopic is Kafka's rule for creating a topic: CREATE on the
// cluster or on the topic.
func mayCreateTopic(s *Server, cc *connCtx, topic string) bool {
	return mayCluster(s, cc, kmsg.ACLOperationCreate) || mayTopic(s, cc, kmsg.ACLOperationCreate, topic)
}

// topicErr is the code for a topic op that is refused (0 when allowed).
func topicErr(s *Server, cc *connCtx, op kmsg.ACLOperation, topic string) int16 {
	if mayTopic(s, cc, op, topic) {
		return 0
	}
	return kerr.TopicAuthorizationFailed.Code
}

// clusterErr is the code for a cluster op that is refused (0 when allowed).
func clusterErr(s *Server, cc *connCtx, op kmsg.ACLOperation) int16 {
	if mayCluster(s, cc, op) {
		return 0
	}
	return kerr.ClusterAuthorizationFailed.Code
}

// configErr is the code for a config op on a config resource (topic or
// broker) that is refused (0 when allowed).
func configErr(s *Server, cc *connCtx, op kmsg.ACLOperation, typ kmsg.ConfigResourceType, name string) int16 {
	switch typ {
	case kmsg.ConfigResourceTypeTopic:
		return topicErr(s, cc, op, name)
	case kmsg.ConfigResourceTypeBroker, kmsg.ConfigResourceTypeBrokerLogger:
		return clusterErr(s, cc, op)
	}
	return 0
}

// aclsOn reports whether ACLs are enforced.
func aclsOn(s *Server) bool { return authorizer(s) != nil }
