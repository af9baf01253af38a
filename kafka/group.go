package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleGroup passes consumer-group APIs (OffsetCommit 8, OffsetFetch 9,
// JoinGroup 11, Heartbeat 12, LeaveGroup 13, SyncGroup 14, DescribeGroups
// 15, ListGroups 16, DeleteGroups 42, OffsetDelete 47) to the coordinator.
// The backend says which versions; they are registered in NewServer.
// JoinGroup and SyncGroup park until the rebalance settles, so the work
// happens in the reply, off the reader goroutine.
func handleGroup(s *Server, cc *connCtx, req kmsg.Request) reply {
	return func() kmsg.Response {
		ctx, cancel := context.WithCancel(cc.ctx)
		defer cancel()
		resp := s.backend.GroupRequest(ctx, req)
		if resp != nil {
			resp.SetVersion(req.GetVersion())
		}
		return resp
	}
}
