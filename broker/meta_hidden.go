package broker

// HiddenBrokers implements kafka.BrokerHider: the nodes a Metadata answer
// leaves out, which are this node once it is stopping and the peers that
// announced a graceful stop (until they reconnect), unless one still leads
// a partition as this node sees it or is the controller. A client whose
// refresh no longer lists such a node stops using it: kafka-go closes its
// connections to it, so a stopping node that forwards for kafka-go knows
// when the client has moved (forward.go), and sarama does not pick it for
// its next refresh.
func (b *Broker) HiddenBrokers() map[int32]bool {
	var hide map[int32]bool
	for _, n := range b.clusterNodes() {
		gone := b.host.PeerLeaving(uint64(n.ID))
		if n.ID == b.cfg.NodeID {
			select {
			case <-b.shutting:
				gone = true
			default:
			}
		}
		if gone {
			if hide == nil {
				hide = map[int32]bool{}
			}
			hide[n.ID] = true
		}
	}
	if hide == nil {
		return nil
	}
	delete(hide, b.ControllerID())
	for _, t := range b.metaSM.topics() {
		for _, pm := range t.Partitions {
			delete(hide, b.leaderOf(pm.Group, false).leader)
		}
	}
	return hide
}
