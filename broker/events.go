package broker

import "sync/atomic"

// event is a broadcast: wait returns a channel that the next fire closes.
// A waiter takes the channel first, then checks its condition, then
// selects on the channel, so a change between the check and the select is
// never missed.
type event struct{ ch atomic.Pointer[chan struct{}] }

func newEvent() *event {
	e := &event{}
	ch := make(chan struct{})
	e.ch.Store(&ch)
	return e
}

func (e *event) wait() <-chan struct{} { return *e.ch.Load() }

func (e *event) fire() {
	ch := make(chan struct{})
	close(*e.ch.Swap(&ch))
}
