package kafka

import (
	"context"
	"fmt"
	"net"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The consumer-group APIs have a file each, NN_name.go like the other
// keys, that says what the key does and registers it here. They are
// answered by the backend's group coordinator, which also says which
// versions it serves (Backend.GroupAPIs); NewServer binds each of those to
// handleGroup.

// groupKeys are the group API keys this package passes to the coordinator.
var groupKeys = map[int16]bool{}

func registerGroup(key int16) {
	if groupKeys[key] || registry[key] != nil {
		panic(fmt.Sprintf("kafka: api key %d registered twice", key))
	}
	groupKeys[key] = true
}

// handleGroup passes a group request to the coordinator. JoinGroup and
// SyncGroup park until the rebalance settles, so the work happens in the
// reply, off the reader goroutine.
func handleGroup(s *Server, cc *connCtx, req kmsg.Request) reply {
	az := authorizeGroup(s, cc, req)
	if az.refused != nil {
		az.refused.SetVersion(req.GetVersion())
		return func() kmsg.Response { return az.refused }
	}
	req = az.pass
	who := &connCtx{principal: cc.principal, remote: cc.remote}
	return func() kmsg.Response {
		ctx, cancel := context.WithCancel(context.WithValue(cc.ctx, clientKey{}, Client{ID: cc.clientID, Host: hostOf(cc.remote)}))
		defer cancel()
		resp := s.backend.GroupRequest(ctx, req)
		if resp != nil {
			az.finish(resp)
			fillGroupOps(s, who, req, resp)
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
