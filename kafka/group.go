package kafka

import (
	"context"
	"net"

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
		ctx, cancel := context.WithCancel(context.WithValue(cc.ctx, clientKey{}, Client{ID: cc.clientID, Host: hostOf(cc.remote)}))
		defer cancel()
		resp := s.backend.GroupRequest(ctx, req)
		if resp != nil {
			resp.SetVersion(req.GetVersion())
		}
		return resp
	}
}

// Client identifies the client connection a request came on.
type Client struct {
	ID   string // the request header's client id
	Host string // the client's address, without the port
}

type clientKey struct{}

// ClientFromContext returns the client of a group request's context.
func ClientFromContext(ctx context.Context) Client {
	c, _ := ctx.Value(clientKey{}).(Client)
	return c
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
