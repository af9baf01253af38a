package kafka

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ApiVersions v0-4. v3 made the request flexible, but the response header
// never is, so that a client can always parse the answer. A request above
// v4 is answered in v0 form with UNSUPPORTED_VERSION (see conn.handle).
func init() { register(18, 0, 4, handleAPIVersions) }

func handleAPIVersions(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.ApiVersionsRequest)
	if req.Version >= 3 && isLibrdkafka(req.ClientSoftwareName, req.ClientSoftwareVersion) {
		cc.librdkafka.Store(true)
	}
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	resp.Version = req.Version
	for _, r := range s.supported() {
		resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: r.Key, MinVersion: r.Min, MaxVersion: r.Max})
	}
	return func() kmsg.Response { return resp }
}

// isLibrdkafka reports whether a KIP-511 client software name and version
// are librdkafka's or a binding's over it (confluent-kafka-python names
// itself and gives "<version>-rdkafka-<version>").
func isLibrdkafka(name, version string) bool {
	return strings.Contains(name, "rdkafka") || strings.Contains(version, "rdkafka") ||
		strings.HasPrefix(name, "confluent-kafka")
}
