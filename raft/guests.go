package raft

import (
	"bufio"
	"net"
)

// maxGuestConns bounds the inbound connections of guests (nodes this one
// does not know yet) in all: a stranger may not hold more than that many
// connections open here on the strength of a hello.
const maxGuestConns = 8

// AdmitGuests lets a node that is neither configured nor added (SetPeer)
// connect, after the cluster-id and, with TLS, certificate checks, as a
// guest: only node-level messages on the listed channels reach the
// handler (Receive with Group 0); Raft messages and every other channel
// are dropped. The broker uses it for the questions and the registration
// of a node being added. No sender is made for a guest and it is never
// reported up or down; once SetPeer names it, its guest connections are
// closed so that it dials again and is served as a peer. Call it at any
// time; each call replaces the channel list (none: no guests).
func (t *TCPTransport) AdmitGuests(channels ...uint16) {
	set := make(map[uint16]bool, len(channels))
	for _, c := range channels {
		set[c] = true
	}
	t.mu.Lock()
	t.guestChans = set
	t.mu.Unlock()
}

// admitGuest reports whether an unknown node may connect as a guest now,
// and counts the connection when it may; t.mu is held.
func (t *TCPTransport) admitGuestLocked(c net.Conn, from uint64) bool {
	if len(t.guestChans) == 0 || len(t.guestConns) >= maxGuestConns {
		return false
	}
	t.guestConns[c] = from
	return true
}

// guestMsgs keeps what a guest may send: node-level messages on the
// admitted channels.
func (t *TCPTransport) guestMsgs(msgs []WireMsg) []WireMsg {
	t.mu.Lock()
	chans := t.guestChans
	t.mu.Unlock()
	kept := msgs[:0]
	for _, m := range msgs {
		if m.Group == 0 && chans[m.Channel] {
			kept = append(kept, m)
		}
	}
	return kept
}

// closeGuestsLocked closes the guest connections of node id (it has just
// become a peer); t.mu is held.
func (t *TCPTransport) closeGuestsLocked(id uint64) {
	for c, from := range t.guestConns {
		if from == id {
			c.Close()
		}
	}
}

// serveGuest serves the connection of a node this one does not know, as
// a guest; t.mu is held and released here.
func (t *TCPTransport) serveGuest(c, raw net.Conn, r *bufio.Reader, from, dataInc uint64, ih incarnationHandler) (uint64, bool, error) {
	if _, known := t.peers[from]; known {
		// Named by SetPeer since the hello was read: have it dial again
		// and come in as a peer.
		t.mu.Unlock()
		return 0, false, refuse(RefusedUnknownNode, "node %d became a peer during its hello; it redials", from)
	}
	if !t.admitGuestLocked(raw, from) {
		t.mu.Unlock()
		return 0, false, refuse(RefusedTooMany, "guest connections (of nodes not known yet) at their limit of %d", maxGuestConns)
	}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.guestConns, raw)
		t.mu.Unlock()
	}()
	_, graceful, err := t.readFrames(c, r, from, dataInc, ih, true)
	return 0, graceful, err // 0: a guest is never up, so never down
}
