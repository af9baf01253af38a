package kafka

import "github.com/twmb/franz-go/pkg/kmsg"

// DescribeCluster v0-1 (v1 added EndpointType; we only have brokers).
// The cluster's authorized operations are computed when asked (KIP-430).
func init() { register(60, 0, 1, handleDescribeCluster) }

func handleDescribeCluster(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeClusterRequest)
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.Version = req.Version
	resp.ClusterID = s.backend.ClusterID()
	resp.ControllerID = s.backend.ControllerID()
	resp.EndpointType = 1
	resp.ClusterAuthorizedOperations = omittedOperations
	if req.IncludeClusterAuthorizedOperations {
		resp.ClusterAuthorizedOperations = clusterOps(s, cc)
	}
	for _, b := range s.brokersFor(cc) {
		resp.Brokers = append(resp.Brokers, kmsg.DescribeClusterResponseBroker{NodeID: b.NodeID, Host: b.Host, Port: b.Port, Rack: b.Rack})
	}
	return func() kmsg.Response { return resp }
}
