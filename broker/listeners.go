package broker

import (
	"errors"
	"fmt"
	"net"

	"github.com/chronik-dev/chronik/kafka"
)

// ListenerSpec is one [[nodes.listeners]] entry of cluster.toml, as
// Kafka's listeners and advertised.listeners:
//
//	[[nodes.listeners]]
//	name = "SECURE"            # the same name on every node
//	protocol = "SASL_SSL"      # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
//	advertised = "node1:9093"  # told to clients of this listener
//	listen = "0.0.0.0:9093"    # bound; default: advertised
//
// A node's kafka address is the listener named PLAINTEXT.
type ListenerSpec struct {
	Name       string `toml:"name"`
	Protocol   string `toml:"protocol"`
	Advertised string `toml:"advertised"`
	Listen     string `toml:"listen"`
}

func checkListeners(n NodeSpec) error {
	seen := map[string]bool{}
	if n.Kafka != "" {
		seen[string(kafka.Plaintext)] = true
	}
	for _, l := range n.Listeners {
		if l.Name == "" || seen[l.Name] {
			return fmt.Errorf("listener name %q empty or used twice (kafka = ... is the PLAINTEXT listener)", l.Name)
		}
		seen[l.Name] = true
		if _, err := kafka.ParseSecurityProtocol(l.Protocol); err != nil {
			return fmt.Errorf("listener %s: %w", l.Name, err)
		}
		if _, _, err := net.SplitHostPort(l.Advertised); err != nil {
			return fmt.Errorf("listener %s: advertised address %q: %v", l.Name, l.Advertised, err)
		}
		if l.Listen != "" {
			if _, _, err := net.SplitHostPort(l.Listen); err != nil {
				return fmt.Errorf("listener %s: listen address %q: %v", l.Name, l.Listen, err)
			}
		}
	}
	return nil
}

// advertisedListeners maps a node's listener names to advertised addresses.
func advertisedListeners(n NodeSpec) map[string]string {
	out := map[string]string{}
	if n.Kafka != "" {
		out[string(kafka.Plaintext)] = n.Kafka
	}
	for _, l := range n.Listeners {
		out[l.Name] = l.Advertised
	}
	return out
}

// kafkaListeners builds the listeners this node binds.
func (c *Config) kafkaListeners(self NodeSpec) ([]kafka.Listener, error) {
	var out []kafka.Listener
	if self.Kafka != "" || self.KafkaListen != "" {
		listen := self.KafkaListen
		if listen == "" {
			listen = self.Kafka
		}
		out = append(out, kafka.Listener{Name: string(kafka.Plaintext), Protocol: kafka.Plaintext, Listen: listen})
	}
	for _, l := range self.Listeners {
		p, _ := kafka.ParseSecurityProtocol(l.Protocol) // checked at load
		kl := kafka.Listener{Name: l.Name, Protocol: p, Listen: l.Listen}
		if kl.Listen == "" {
			kl.Listen = l.Advertised
		}
		if p.TLS() {
			if c.TLS == nil {
				return nil, errors.New("broker: listener " + l.Name + " is " + l.Protocol + " but no TLS certificate is configured (--tls-cert, --tls-key)")
			}
			kl.TLS = c.TLS.ServerConfig()
		}
		out = append(out, kl)
	}
	return out, nil
}
