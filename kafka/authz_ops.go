package kafka

import "github.com/twmb/franz-go/pkg/kmsg"

// Authorized operations (KIP-430): Metadata, DescribeCluster and
// DescribeGroups report, when asked, a bit set of the operations the
// principal may do on each resource, bit n for operation code n. Only the
// operations a resource type supports are tried, as Kafka does; with ACLs
// off every one of them is allowed. Not asked for, the field is
// omittedOperations, Kafka's "not computed".

// omittedOperations is Kafka's AUTHORIZED_OPERATIONS_OMITTED (Integer.MIN_VALUE).
const omittedOperations int32 = -2147483648

// Operations each resource type supports (Kafka's AclEntry.supportedOperations).
var (
	topicOperations = []kmsg.ACLOperation{kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationCreate,
		kmsg.ACLOperationDescribe, kmsg.ACLOperationDelete, kmsg.ACLOperationAlter,
		kmsg.ACLOperationDescribeConfigs, kmsg.ACLOperationAlterConfigs}
	groupOperations   = []kmsg.ACLOperation{kmsg.ACLOperationRead, kmsg.ACLOperationDescribe, kmsg.ACLOperationDelete}
	clusterOperations = []kmsg.ACLOperation{kmsg.ACLOperationCreate, kmsg.ACLOperationClusterAction,
		kmsg.ACLOperationDescribeConfigs, kmsg.ACLOperationAlterConfigs, kmsg.ACLOperationIdempotentWrite,
		kmsg.ACLOperationAlter, kmsg.ACLOperationDescribe}
)

// authorizedOps is the bit set of the operations of ops cc's principal may
// do on the resource.
func authorizedOps(s *Server, cc *connCtx, rt kmsg.ACLResourceType, name string, ops []kmsg.ACLOperation) int32 {
	var bits int32
	for _, op := range ops {
		if may(s, cc, op, rt, name) {
			bits |= 1 << uint(op)
		}
	}
	return bits
}

func topicOps(s *Server, cc *connCtx, topic string) int32 {
	return authorizedOps(s, cc, kmsg.ACLResourceTypeTopic, topic, topicOperations)
}

func groupOps(s *Server, cc *connCtx, group string) int32 {
	return authorizedOps(s, cc, kmsg.ACLResourceTypeGroup, group, groupOperations)
}

// clusterOps is 0 for a principal that may not describe the cluster, as
// in Kafka.
func clusterOps(s *Server, cc *connCtx) int32 {
	if !mayCluster(s, cc, kmsg.ACLOperationDescribe) {
		return 0
	}
	return authorizedOps(s, cc, kmsg.ACLResourceTypeCluster, ClusterResource, clusterOperations)
}

// fillGroupOps sets the authorized operations of the groups a describe
// asked them for, except for the groups it may not describe. who is a copy
// of the asker, taken on the reader goroutine.
func fillGroupOps(s *Server, who *connCtx, req kmsg.Request, resp kmsg.Response) {
	switch r := req.(type) {
	case *kmsg.DescribeGroupsRequest:
		if !r.IncludeAuthorizedOperations {
			return
		}
		gs := resp.(*kmsg.DescribeGroupsResponse).Groups
		for i := range gs {
			if gs[i].ErrorCode != groupDenied {
				gs[i].AuthorizedOperations = groupOps(s, who, gs[i].Group)
			}
		}
	case *kmsg.ConsumerGroupDescribeRequest:
		if !r.IncludeAuthorizedOperations {
			return
		}
		gs := resp.(*kmsg.ConsumerGroupDescribeResponse).Groups
		for i := range gs {
			if gs[i].ErrorCode != groupDenied {
				gs[i].AuthorizedOperations = groupOps(s, who, gs[i].Group)
			}
		}
	}
}
