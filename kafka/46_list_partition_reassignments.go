package kafka

import "github.com/twmb/franz-go/pkg/kmsg"

// ListPartitionReassignments v0 (KIP-455). Needs DESCRIBE on the cluster.
// Lists the moves in progress, of every partition (Topics null) or of the
// ones named; a partition with no move is left out, as in Kafka.
func init() { register(46, 0, 0, handleListPartitionReassignments) }

func handleListPartitionReassignments(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.ListPartitionReassignmentsRequest)
	resp := req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
	resp.Version = req.Version
	if code := clusterErr(s, cc, kmsg.ACLOperationDescribe); code != 0 {
		resp.ErrorCode = code
		s.metrics.countErr(46, code)
		return func() kmsg.Response { return resp }
	}
	var filter map[string][]int32
	if req.Topics != nil {
		filter = map[string][]int32{}
		for _, t := range req.Topics {
			filter[t.Topic] = append(append([]int32{}, filter[t.Topic]...), t.Partitions...)
		}
	}
	byTopic := map[string]int{}
	for _, ri := range s.backend.ListReassignments(filter) {
		i, ok := byTopic[ri.Topic]
		if !ok {
			i = len(resp.Topics)
			byTopic[ri.Topic] = i
			resp.Topics = append(resp.Topics, kmsg.ListPartitionReassignmentsResponseTopic{Topic: ri.Topic})
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, kmsg.ListPartitionReassignmentsResponseTopicPartition{
			Partition: ri.Partition, Replicas: ri.Replicas, AddingReplicas: ri.Adding, RemovingReplicas: ri.Removing})
	}
	return func() kmsg.Response { return resp }
}
