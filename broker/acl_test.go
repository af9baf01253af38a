package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/chronik-dev/chronik/kafka"
)

// aclCase is one API key's rule: the request, the ACL it needs, the code
// it gets when refused, and ACLs it needs besides (base).
type aclCase struct {
	name   string
	rt     kmsg.ACLResourceType
	res    string // the resource the request names
	op     kmsg.ACLOperation
	denied int16
	base   []kafka.ACL
	req    func() kmsg.Request
	code   func(kmsg.Response) int16
	// alsoAllowed names variants that allow this case although they
	// refuse the resource named: a rule satisfied by some other resource.
	alsoAllowed map[string]bool
}

func anonACL(rt kmsg.ACLResourceType, name string, pt kmsg.ACLResourcePatternType, op kmsg.ACLOperation, perm kmsg.ACLPermissionType, who, host string) kafka.ACL {
	return kafka.ACL{ResourceType: int8(rt), Name: name, Pattern: int8(pt), Principal: who, Host: host,
		Operation: int8(op), Permission: int8(perm)}
}

const anon = "User:ANONYMOUS"

func allowAnon(rt kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kafka.ACL {
	return anonACL(rt, name, kmsg.ACLResourcePatternTypeLiteral, op, kmsg.ACLPermissionTypeAllow, anon, "*")
}

func aclCases(t *testing.T, b *Broker) []aclCase {
	topic, group := "acl-topic", "acl-group"
	topicID := b.Topics([]string{topic}, true)[0].ID
	T, G, C := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup, kmsg.ACLResourceTypeCluster
	groupRead := []kafka.ACL{allowAnon(G, group, kmsg.ACLOperationRead)}
	return []aclCase{
		{name: "Produce", rt: T, res: topic, op: kmsg.ACLOperationWrite, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrProduceRequest()
				r.Acks, r.TimeoutMillis = -1, 5000
				r.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: testBatch(t)}}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode }},
		{name: "Fetch", rt: T, res: topic, op: kmsg.ACLOperationRead, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrFetchRequest()
				r.MaxBytes, r.MaxWaitMillis = 1<<20, 10
				p := kmsg.NewFetchRequestTopicPartition()
				p.PartitionMaxBytes = 1 << 20
				r.Topics = []kmsg.FetchRequestTopic{{Topic: topic, TopicID: topicID, Partitions: []kmsg.FetchRequestTopicPartition{p}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.FetchResponse).Topics[0].Partitions[0].ErrorCode }},
		{name: "ListOffsets", rt: T, res: topic, op: kmsg.ACLOperationDescribe, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrListOffsetsRequest()
				p := kmsg.NewListOffsetsRequestTopicPartition()
				p.Timestamp = -1
				r.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: topic, Partitions: []kmsg.ListOffsetsRequestTopicPartition{p}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].ErrorCode }},
		{name: "Metadata", rt: T, res: topic, op: kmsg.ACLOperationDescribe, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrMetadataRequest()
				r.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(topic)}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.MetadataResponse).Topics[0].ErrorCode }},
		{name: "MetadataByID", rt: T, res: topic, op: kmsg.ACLOperationDescribe, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrMetadataRequest()
				r.Topics = []kmsg.MetadataRequestTopic{{TopicID: topicID}}
				return r
			},
			code: func(x kmsg.Response) int16 {
				rt := x.(*kmsg.MetadataResponse).Topics[0]
				if rt.ErrorCode != 0 && rt.Topic != nil && *rt.Topic != "" {
					t.Errorf("a refused lookup by id names the topic %q", *rt.Topic)
				}
				return rt.ErrorCode
			}},
		{name: "OffsetForLeaderEpoch", rt: T, res: topic, op: kmsg.ACLOperationDescribe, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetForLeaderEpochRequest()
				r.Version = 3
				p := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
				p.LeaderEpoch = 1
				r.Topics = []kmsg.OffsetForLeaderEpochRequestTopic{{Topic: topic, Partitions: []kmsg.OffsetForLeaderEpochRequestTopicPartition{p}}}
				return r
			},
			code: func(x kmsg.Response) int16 {
				return x.(*kmsg.OffsetForLeaderEpochResponse).Topics[0].Partitions[0].ErrorCode
			}},
		{name: "CreateTopics", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationCreate, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrCreateTopicsRequest()
				r.ValidateOnly, r.TimeoutMillis = true, 5000
				ct := kmsg.NewCreateTopicsRequestTopic()
				ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "acl-new", 1, 1
				r.Topics = []kmsg.CreateTopicsRequestTopic{ct}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.CreateTopicsResponse).Topics[0].ErrorCode }},
		{name: "DeleteTopics", rt: T, res: "acl-absent", op: kmsg.ACLOperationDelete, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteTopicsRequest()
				r.Version, r.TimeoutMillis = 5, 5000
				r.TopicNames = []string{"acl-absent"}
				r.Topics = []kmsg.DeleteTopicsRequestTopic{{Topic: kmsg.StringPtr("acl-absent")}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode }},
		{name: "DeleteRecords", rt: T, res: topic, op: kmsg.ACLOperationDelete, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteRecordsRequest()
				r.TimeoutMillis = 5000
				r.Topics = []kmsg.DeleteRecordsRequestTopic{{Topic: topic, Partitions: []kmsg.DeleteRecordsRequestTopicPartition{{Partition: 0, Offset: 0}}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DeleteRecordsResponse).Topics[0].Partitions[0].ErrorCode }},
		{name: "CreatePartitions", rt: T, res: topic, op: kmsg.ACLOperationAlter, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrCreatePartitionsRequest()
				r.ValidateOnly, r.TimeoutMillis = true, 5000
				r.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: topic, Count: 2}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.CreatePartitionsResponse).Topics[0].ErrorCode }},
		{name: "DescribeConfigs", rt: T, res: topic, op: kmsg.ACLOperationDescribeConfigs, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeConfigsRequest()
				r.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: topic}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeConfigsResponse).Resources[0].ErrorCode }},
		{name: "DescribeBrokerConfigs", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationDescribeConfigs, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeConfigsRequest()
				r.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeBroker, ResourceName: "1"}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeConfigsResponse).Resources[0].ErrorCode }},
		{name: "AlterConfigs", rt: T, res: topic, op: kmsg.ACLOperationAlterConfigs, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterConfigsRequest()
				r.ValidateOnly = true
				r.Resources = []kmsg.AlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: topic}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.AlterConfigsResponse).Resources[0].ErrorCode }},
		{name: "IncrementalAlterConfigs", rt: T, res: topic, op: kmsg.ACLOperationAlterConfigs, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrIncrementalAlterConfigsRequest()
				r.ValidateOnly = true
				r.Resources = []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: topic}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.IncrementalAlterConfigsResponse).Resources[0].ErrorCode }},
		{name: "AlterPartitionAssignments", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationAlter, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterPartitionAssignmentsRequest()
				// A cancel with none in progress: allowed, it changes nothing.
				r.Topics = []kmsg.AlterPartitionAssignmentsRequestTopic{{Topic: topic, Partitions: []kmsg.AlterPartitionAssignmentsRequestTopicPartition{{Partition: 0}}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.AlterPartitionAssignmentsResponse).ErrorCode }},
		{name: "ListPartitionReassignments", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationDescribe, denied: kerr.ClusterAuthorizationFailed.Code,
			req:  func() kmsg.Request { return kmsg.NewPtrListPartitionReassignmentsRequest() },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.ListPartitionReassignmentsResponse).ErrorCode }},
		{name: "DescribeLogDirs", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationDescribe, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeLogDirsRequest()
				r.Version = 3
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeLogDirsResponse).ErrorCode }},
		{name: "InitProducerID", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationIdempotentWrite, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrInitProducerIDRequest()
				r.TransactionTimeoutMillis = 60000
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.InitProducerIDResponse).ErrorCode }},
		{name: "InitProducerIDByTopicWrite", rt: T, res: topic, op: kmsg.ACLOperationWrite, denied: kerr.ClusterAuthorizationFailed.Code,
			// WRITE on any topic will do: the prefix and the wildcard
			// still allow topics the DENY does not cover.
			alsoAllowed: map[string]bool{"prefixed allow, literal deny": true, "wildcard allow, prefixed deny of ALL": true},
			req: func() kmsg.Request {
				r := kmsg.NewPtrInitProducerIDRequest()
				r.TransactionTimeoutMillis = 60000
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.InitProducerIDResponse).ErrorCode }},
		{name: "FindCoordinator", rt: G, res: group, op: kmsg.ACLOperationDescribe, denied: kerr.GroupAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrFindCoordinatorRequest()
				r.CoordinatorKey, r.CoordinatorKeys = group, []string{group}
				return r
			},
			code: func(x kmsg.Response) int16 {
				if r := x.(*kmsg.FindCoordinatorResponse); r.Version < 4 {
					return r.ErrorCode
				}
				return x.(*kmsg.FindCoordinatorResponse).Coordinators[0].ErrorCode
			}},
		{name: "JoinGroup", rt: G, res: group, op: kmsg.ACLOperationRead, denied: kerr.GroupAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrJoinGroupRequest()
				r.Version, r.Group, r.ProtocolType, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis = 5, group, "consumer", 10000, 1000
				r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{0, 0}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.JoinGroupResponse).ErrorCode }},
		{name: "Heartbeat", rt: G, res: group, op: kmsg.ACLOperationRead, denied: kerr.GroupAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrHeartbeatRequest()
				r.Group, r.MemberID = group, "nobody"
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.HeartbeatResponse).ErrorCode }},
		{name: "SyncGroup", rt: G, res: group, op: kmsg.ACLOperationRead, denied: kerr.GroupAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrSyncGroupRequest()
				r.Group, r.MemberID = group, "nobody"
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.SyncGroupResponse).ErrorCode }},
		{name: "LeaveGroup", rt: G, res: group, op: kmsg.ACLOperationRead, denied: kerr.GroupAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrLeaveGroupRequest()
				r.Group, r.MemberID = group, "nobody"
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.LeaveGroupResponse).ErrorCode }},
		{name: "OffsetCommitGroup", rt: G, res: group, op: kmsg.ACLOperationRead, denied: kerr.GroupAuthorizationFailed.Code,
			base: []kafka.ACL{allowAnon(T, topic, kmsg.ACLOperationRead)},
			req:  func() kmsg.Request { return offsetCommit(group, topic) },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode }},
		{name: "OffsetCommitTopic", rt: T, res: topic, op: kmsg.ACLOperationRead, denied: kerr.TopicAuthorizationFailed.Code,
			base: groupRead,
			req:  func() kmsg.Request { return offsetCommit(group, topic) },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode }},
		{name: "OffsetFetch", rt: G, res: group, op: kmsg.ACLOperationDescribe, denied: kerr.GroupAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetFetchRequest()
				r.Groups = []kmsg.OffsetFetchRequestGroup{{Group: group, Topics: []kmsg.OffsetFetchRequestGroupTopic{{Topic: topic, Partitions: []int32{0}}}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.OffsetFetchResponse).Groups[0].ErrorCode }},
		{name: "OffsetFetchTopic", rt: T, res: topic, op: kmsg.ACLOperationDescribe, denied: kerr.TopicAuthorizationFailed.Code,
			base: []kafka.ACL{allowAnon(G, group, kmsg.ACLOperationDescribe)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetFetchRequest()
				r.Groups = []kmsg.OffsetFetchRequestGroup{{Group: group, Topics: []kmsg.OffsetFetchRequestGroupTopic{{Topic: topic, Partitions: []int32{0}}}}}
				return r
			},
			code: func(x kmsg.Response) int16 {
				g := x.(*kmsg.OffsetFetchResponse).Groups[0]
				if g.ErrorCode != 0 || len(g.Topics) == 0 {
					return g.ErrorCode
				}
				return g.Topics[0].Partitions[0].ErrorCode
			}},
		{name: "DescribeGroups", rt: G, res: group, op: kmsg.ACLOperationDescribe, denied: kerr.GroupAuthorizationFailed.Code,
			req:  func() kmsg.Request { r := kmsg.NewPtrDescribeGroupsRequest(); r.Groups = []string{group}; return r },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeGroupsResponse).Groups[0].ErrorCode }},
		{name: "DeleteGroups", rt: G, res: group, op: kmsg.ACLOperationDelete, denied: kerr.GroupAuthorizationFailed.Code,
			req:  func() kmsg.Request { r := kmsg.NewPtrDeleteGroupsRequest(); r.Groups = []string{group}; return r },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DeleteGroupsResponse).Groups[0].ErrorCode }},
		{name: "OffsetDelete", rt: G, res: group, op: kmsg.ACLOperationDelete, denied: kerr.GroupAuthorizationFailed.Code,
			base: []kafka.ACL{allowAnon(T, topic, kmsg.ACLOperationRead)},
			req: func() kmsg.Request {
				r := kmsg.NewPtrOffsetDeleteRequest()
				r.Group = group
				r.Topics = []kmsg.OffsetDeleteRequestTopic{{Topic: topic, Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.OffsetDeleteResponse).ErrorCode }},
		{name: "DescribeAcls", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationDescribe, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeACLsRequest()
				r.ResourceType, r.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
				r.Operation, r.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeACLsResponse).ErrorCode }},
		{name: "CreateAcls", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationAlter, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrCreateACLsRequest()
				r.Creations = []kmsg.CreateACLsRequestCreation{{ResourceType: T, ResourceName: "other", ResourcePatternType: kmsg.ACLResourcePatternTypeLiteral,
					Principal: "User:bob", Host: "*", Operation: kmsg.ACLOperationRead, PermissionType: kmsg.ACLPermissionTypeAllow}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.CreateACLsResponse).Results[0].ErrorCode }},
		{name: "DeleteAcls", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationAlter, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDeleteACLsRequest()
				r.Filters = []kmsg.DeleteACLsRequestFilter{{ResourceType: T, ResourceName: kmsg.StringPtr("nothing"), ResourcePatternType: kmsg.ACLResourcePatternTypeLiteral,
					Operation: kmsg.ACLOperationAny, PermissionType: kmsg.ACLPermissionTypeAny}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DeleteACLsResponse).Results[0].ErrorCode }},
		{name: "DescribeUserScramCredentials", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationDescribe, denied: kerr.ClusterAuthorizationFailed.Code,
			req:  func() kmsg.Request { return kmsg.NewPtrDescribeUserSCRAMCredentialsRequest() },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeUserSCRAMCredentialsResponse).ErrorCode }},
		{name: "AlterUserScramCredentials", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationAlter, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
				r.Deletions = []kmsg.AlterUserSCRAMCredentialsRequestDeletion{{Name: "nobody", Mechanism: 2}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.AlterUserSCRAMCredentialsResponse).Results[0].ErrorCode }},
		{name: "ElectLeaders", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationAlter, denied: kerr.ClusterAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrElectLeadersRequest()
				r.TimeoutMillis = 5000
				r.Topics = []kmsg.ElectLeadersRequestTopic{{Topic: topic, Partitions: []int32{0}}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.ElectLeadersResponse).ErrorCode }},
		{name: "UpdateFeatures", rt: C, res: kafka.ClusterResource, op: kmsg.ACLOperationAlter, denied: kerr.ClusterAuthorizationFailed.Code,
			req:  func() kmsg.Request { return kmsg.NewPtrUpdateFeaturesRequest() },
			code: func(x kmsg.Response) int16 { return x.(*kmsg.UpdateFeaturesResponse).ErrorCode }},
		{name: "DescribeTopicPartitions", rt: T, res: topic, op: kmsg.ACLOperationDescribe, denied: kerr.TopicAuthorizationFailed.Code,
			req: func() kmsg.Request {
				r := kmsg.NewPtrDescribeTopicPartitionsRequest()
				r.Topics = []kmsg.DescribeTopicPartitionsRequestTopic{{Topic: topic}}
				return r
			},
			code: func(x kmsg.Response) int16 { return x.(*kmsg.DescribeTopicPartitionsResponse).Topics[0].ErrorCode }},
	}
}

func offsetCommit(group, topic string) kmsg.Request {
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version, r.Group, r.Generation = 7, group, -1
	r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: topic, Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 0, LeaderEpoch: -1}}}}
	return r
}

// aclVariant is a set of ACLs for a case's resource and whether the
// anonymous client (on 127.0.0.1) should pass.
type aclVariant struct {
	name  string
	acls  func(c aclCase) []kafka.ACL
	allow bool
}

// prefix is a prefix of the case's resource (the cluster has one name).
func (c aclCase) prefix() string {
	if c.rt == kmsg.ACLResourceTypeCluster {
		return c.res
	}
	return c.res[:3]
}

var aclVariants = []aclVariant{
	{"no ACL", func(aclCase) []kafka.ACL { return nil }, false},
	{"literal allow", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{allowAnon(c.rt, c.res, c.op)}
	}, true},
	{"prefixed allow for everyone on this host", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{anonACL(c.rt, c.prefix(), kmsg.ACLResourcePatternTypePrefixed, c.op, kmsg.ACLPermissionTypeAllow, "User:*", "127.0.0.1")}
	}, true},
	{"allow ALL", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{allowAnon(c.rt, c.res, kmsg.ACLOperationAll)}
	}, true},
	{"allow for another principal", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{anonACL(c.rt, c.res, kmsg.ACLResourcePatternTypeLiteral, c.op, kmsg.ACLPermissionTypeAllow, "User:alice", "*")}
	}, false},
	{"allow for another host", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{anonACL(c.rt, c.res, kmsg.ACLResourcePatternTypeLiteral, c.op, kmsg.ACLPermissionTypeAllow, anon, "10.1.2.3")}
	}, false},
	{"prefixed allow, literal deny", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{
			anonACL(c.rt, c.prefix(), kmsg.ACLResourcePatternTypePrefixed, c.op, kmsg.ACLPermissionTypeAllow, anon, "*"),
			anonACL(c.rt, c.res, kmsg.ACLResourcePatternTypeLiteral, c.op, kmsg.ACLPermissionTypeDeny, anon, "*"),
		}
	}, false},
	{"wildcard allow, prefixed deny of ALL", func(c aclCase) []kafka.ACL {
		return []kafka.ACL{
			anonACL(c.rt, "*", kmsg.ACLResourcePatternTypeLiteral, c.op, kmsg.ACLPermissionTypeAllow, anon, "*"),
			anonACL(c.rt, c.prefix(), kmsg.ACLResourcePatternTypePrefixed, kmsg.ACLOperationAll, kmsg.ACLPermissionTypeDeny, "User:*", "*"),
		}
	}, false},
}

// TestACLMatrix drives every API key the broker serves through a real TCP
// connection, as the anonymous principal, under ACL sets that must allow
// or refuse it: literal and prefixed patterns, wildcards, other
// principals and hosts, and a DENY over an ALLOW.
func TestACLMatrix(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.Cluster.ACLsEnabled = true
	b := startNode(t, cfg)
	newTopic(t, b, "acl-topic")
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Cluster.Nodes[0].Kafka), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	everything := kafka.ACLFilter{ResourceType: int8(kmsg.ACLResourceTypeAny), Pattern: int8(kmsg.ACLResourcePatternTypeAny),
		Operation: int8(kmsg.ACLOperationAny), Permission: int8(kmsg.ACLPermissionTypeAny)}
	for _, c := range aclCases(t, b) {
		for _, v := range aclVariants {
			if _, err := b.DeleteACLs(ctx, []kafka.ACLFilter{everything}); err != nil {
				t.Fatal(err)
			}
			if err := b.CreateACLs(ctx, append(append([]kafka.ACL(nil), c.base...), v.acls(c)...)); err != nil {
				t.Fatal(err)
			}
			resp, err := cl.Broker(1).Request(ctx, c.req())
			if err != nil {
				t.Fatalf("%s, %s: %v", c.name, v.name, err)
			}
			got := c.code(resp)
			allow := v.allow || c.alsoAllowed[v.name]
			if allow && got == c.denied || !allow && got != c.denied {
				t.Errorf("%s, %s: error %d (%s); want allowed=%v", c.name, v.name, got, kerr.ErrorForCode(got), allow)
			}
		}
	}
}

// TestACLListGroupsAndCreateChecks: ListGroups lists only the groups the
// principal may describe, unless it may describe the cluster; CreateAcls
// refuses malformed ACLs one by one and keeps the valid ones.
func TestACLListGroupsAndCreateChecks(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.Cluster.ACLsEnabled = true
	b := startNode(t, cfg)
	newTopic(t, b, "lg-topic")
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Cluster.Nodes[0].Kafka), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	T, G, C := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup, kmsg.ACLResourceTypeCluster
	if err := b.CreateACLs(ctx, []kafka.ACL{allowAnon(T, "lg-topic", kmsg.ACLOperationRead),
		allowAnon(G, "*", kmsg.ACLOperationRead)}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"vis-1", "hid-1"} {
		resp, err := cl.Broker(1).Request(ctx, offsetCommit(g, "lg-topic"))
		if err != nil {
			t.Fatal(err)
		}
		if code := resp.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("commit for %s: error %d", g, code)
		}
	}
	listed := func() map[string]bool {
		resp, err := cl.Broker(1).Request(ctx, kmsg.NewPtrListGroupsRequest())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, g := range resp.(*kmsg.ListGroupsResponse).Groups {
			out[g.Group] = true
		}
		return out
	}
	if got := listed(); !got["vis-1"] || !got["hid-1"] {
		t.Fatalf("ListGroups with READ on every group (implying DESCRIBE): %v, want both", got)
	}
	if err := b.CreateACLs(ctx, []kafka.ACL{anonACL(G, "hid-", kmsg.ACLResourcePatternTypePrefixed, kmsg.ACLOperationDescribe,
		kmsg.ACLPermissionTypeDeny, anon, "*")}); err != nil {
		t.Fatal(err)
	}
	if got := listed(); !got["vis-1"] || got["hid-1"] {
		t.Fatalf("ListGroups: %v, want vis-1 alone", got)
	}
	// One request, one group allowed and one refused: both answered.
	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Groups = []string{"hid-1", "vis-1"}
	dresp, err := cl.Broker(1).Request(ctx, dreq)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]int16{}
	for _, g := range dresp.(*kmsg.DescribeGroupsResponse).Groups {
		codes[g.Group] = g.ErrorCode
	}
	if len(codes) != 2 || codes["vis-1"] != 0 || codes["hid-1"] != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("DescribeGroups of an allowed and a refused group: %v", codes)
	}
	// A commit to a topic allowed and one refused: the first is stored.
	creq := offsetCommit("vis-1", "lg-topic").(*kmsg.OffsetCommitRequest)
	creq.Topics = append(creq.Topics, kmsg.OffsetCommitRequestTopic{Topic: "lg-other",
		Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 5, LeaderEpoch: -1}}})
	cresp, err := cl.Broker(1).Request(ctx, creq)
	if err != nil {
		t.Fatal(err)
	}
	codes = map[string]int16{}
	for _, tp := range cresp.(*kmsg.OffsetCommitResponse).Topics {
		codes[tp.Topic] = tp.Partitions[0].ErrorCode
	}
	if len(codes) != 2 || codes["lg-topic"] != 0 || codes["lg-other"] != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("OffsetCommit to an allowed and a refused topic: %v", codes)
	}
	if err := b.CreateACLs(ctx, []kafka.ACL{allowAnon(C, kafka.ClusterResource, kmsg.ACLOperationDescribe)}); err != nil {
		t.Fatal(err)
	}
	if got := listed(); !got["vis-1"] || !got["hid-1"] {
		t.Fatalf("ListGroups with DESCRIBE on the cluster: %v, want both", got)
	}

	if err := b.CreateACLs(ctx, []kafka.ACL{allowAnon(C, kafka.ClusterResource, kmsg.ACLOperationAlter)}); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrCreateACLsRequest()
	good := kmsg.CreateACLsRequestCreation{ResourceType: T, ResourceName: "ok", ResourcePatternType: kmsg.ACLResourcePatternTypeLiteral,
		Principal: "User:bob", Host: "*", Operation: kmsg.ACLOperationRead, PermissionType: kmsg.ACLPermissionTypeAllow}
	badCluster, badPrincipal, badPattern, badOp := good, good, good, good
	badCluster.ResourceType, badCluster.ResourceName = C, "other"
	badPrincipal.Principal = "bob"
	badPattern.ResourcePatternType = kmsg.ACLResourcePatternTypeMatch
	badOp.Operation = kmsg.ACLOperationAny
	req.Creations = []kmsg.CreateACLsRequestCreation{good, badCluster, badPrincipal, badPattern, badOp}
	resp, err := cl.Broker(1).Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.(*kmsg.CreateACLsResponse).Results {
		want := kerr.InvalidRequest.Code
		if i == 0 {
			want = 0
		}
		if r.ErrorCode != want {
			t.Errorf("creation %d: error %d, want %d", i, r.ErrorCode, want)
		}
	}
	name := "ok"
	if got := b.DescribeACLs(kafka.ACLFilter{ResourceType: int8(T), Name: &name, Pattern: int8(kmsg.ACLResourcePatternTypeAny),
		Operation: int8(kmsg.ACLOperationAny), Permission: int8(kmsg.ACLPermissionTypeAny)}); len(got) != 1 {
		t.Fatalf("the valid creation: %v", got)
	}
}

// TestACLOffsetFetchV7: before v8 OffsetFetch names one group; a refused
// group answers GROUP_AUTHORIZATION_FAILED, and a topic the principal may
// not describe is blanked when named and left out when all are asked for.
func TestACLOffsetFetchV7(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.Cluster.ACLsEnabled = true
	b := startNode(t, cfg)
	newTopic(t, b, "of-a")
	newTopic(t, b, "of-b")
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Cluster.Nodes[0].Kafka), kgo.RequestRetries(0), kgo.MaxVersions(kversion.V2_8_0()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	T, G := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup
	if err := b.CreateACLs(ctx, []kafka.ACL{allowAnon(G, "g", kmsg.ACLOperationRead),
		allowAnon(T, "of-a", kmsg.ACLOperationRead), allowAnon(T, "of-b", kmsg.ACLOperationRead)}); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"of-a", "of-b"} {
		resp, err := cl.Broker(1).Request(ctx, offsetCommit("g", topic))
		if err != nil || resp.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode != 0 {
			t.Fatalf("commit %s: %v %+v", topic, err, resp)
		}
	}
	if err := b.CreateACLs(ctx, []kafka.ACL{anonACL(T, "of-b", kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLOperationDescribe,
		kmsg.ACLPermissionTypeDeny, anon, "*")}); err != nil {
		t.Fatal(err)
	}
	fetch := func(group string, topics []string) *kmsg.OffsetFetchResponse {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Group = group
		for _, tp := range topics {
			req.Topics = append(req.Topics, kmsg.OffsetFetchRequestTopic{Topic: tp, Partitions: []int32{0}})
		}
		resp, err := cl.Broker(1).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if r := resp.(*kmsg.OffsetFetchResponse); r.Version >= 8 {
			t.Fatalf("OffsetFetch went out as v%d", r.Version)
		}
		return resp.(*kmsg.OffsetFetchResponse)
	}
	if r := fetch("other", []string{"of-a"}); r.ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("OffsetFetch of a refused group: error %d", r.ErrorCode)
	}
	codes := map[string]int16{}
	for _, tp := range fetch("g", []string{"of-a", "of-b"}).Topics {
		codes[tp.Topic] = tp.Partitions[0].ErrorCode
	}
	if len(codes) != 2 || codes["of-a"] != 0 || codes["of-b"] != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("OffsetFetch naming both topics: %v", codes)
	}
	all := fetch("g", nil).Topics
	if len(all) != 1 || all[0].Topic != "of-a" {
		t.Fatalf("OffsetFetch of every topic: %+v, want of-a alone", all)
	}
}
