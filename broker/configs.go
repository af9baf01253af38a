package broker

// AutoCreateTopics implements kafka.Backend: cluster.toml's
// auto_create_topics, true unless set to false.
func (b *Broker) AutoCreateTopics() bool {
	return b.cfg.Cluster.AutoCreateTopics == nil || *b.cfg.Cluster.AutoCreateTopics
}
