package compat

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// netProxy forwards TCP connections to a target. When cut, it blackholes
// traffic: connections stay open but nothing passes, as in a network
// partition (no reset, no FIN). Healing closes the blackholed connections
// so both ends reconnect cleanly.
type netProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newNetProxy(target string) (*netProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &netProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *netProxy) addr() string { return p.ln.Addr().String() }

func (p *netProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
}

func (p *netProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(in)
		if p.cut.Load() {
			p.wg.Add(1)
			go func() { defer p.wg.Done(); io.Copy(io.Discard, in) }()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.track(out)
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// pipe copies src to dst, dropping everything while the proxy is cut.
func (p *netProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *netProxy) setCut(cut bool) {
	was := p.cut.Swap(cut)
	if was && !cut {
		// Streams lost bytes while cut: close them so peers reconnect.
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
		p.mu.Unlock()
	}
}

func (p *netProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// setupProxies gives every node its own cluster config in which the other
// nodes' Raft addresses are proxies from this node to them.
func (c *cluster) setupProxies(extra string) {
	c.proxies = map[[2]int]*netProxy{}
	for _, from := range c.nodes {
		for _, to := range c.nodes {
			if from.id == to.id {
				continue
			}
			p, err := newNetProxy(to.raft)
			if err != nil {
				c.t.Fatal(err)
			}
			c.proxies[[2]int{from.id, to.id}] = p
			c.t.Cleanup(p.close)
		}
	}
	for _, from := range c.nodes {
		var sb strings.Builder
		sb.WriteString("cluster_id = \"compat\"\n")
		sb.WriteString(extra)
		for _, to := range c.nodes {
			raft := to.raft
			if to.id != from.id {
				raft = c.proxies[[2]int{from.id, to.id}].addr()
			}
			fmt.Fprintf(&sb, "\n[[nodes]]\nid = %d\nkafka = %q\nraft = %q\nadmin = %q\n", to.id, to.kafka, raft, to.admin)
		}
		from.cfg = filepath.Join(c.dir, fmt.Sprintf("cluster-node-%d.toml", from.id))
		if err := os.WriteFile(from.cfg, []byte(sb.String()), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
}

// isolate cuts node id off from the other nodes (both directions).
func (c *cluster) isolate(id int) {
	for k, p := range c.proxies {
		if k[0] == id || k[1] == id {
			p.setCut(true)
		}
	}
}

// heal restores every link.
func (c *cluster) heal() {
	for _, p := range c.proxies {
		p.setCut(false)
	}
}
