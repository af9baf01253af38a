package kafka

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeConfigs v0-4. v1 sources and synonyms; v3 types and docs; v4
// flexible. Topics and brokers are described with the configs that exist
// here (a broker by its id, or "" for the cluster-wide dynamic defaults);
// other resource types get INVALID_REQUEST.
func init() { register(32, 0, 4, handleDescribeConfigs) }

func handleDescribeConfigs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeConfigsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	resp.Version = req.Version
	for _, r := range req.Resources {
		rr := kmsg.DescribeConfigsResponseResource{ResourceType: r.ResourceType, ResourceName: r.ResourceName}
		var entries []ConfigEntry
		switch denied := configErr(s, cc, kmsg.ACLOperationDescribeConfigs, r.ResourceType, r.ResourceName); {
		case denied != 0:
			rr.ErrorCode = denied
		case r.ResourceType == kmsg.ConfigResourceTypeTopic:
			entries, rr.ErrorCode = s.backend.TopicConfigs(r.ResourceName)
		case r.ResourceType == kmsg.ConfigResourceTypeBroker:
			switch r.ResourceName {
			case "":
				entries = s.backend.DefaultBrokerConfigs()
			case strconv.Itoa(int(s.backend.NodeID())):
				entries = s.backend.BrokerConfigs()
			default:
				rr.ErrorCode = kerr.InvalidRequest.Code
			}
		default:
			rr.ErrorCode = kerr.InvalidRequest.Code
		}
		want := map[string]bool{}
		for _, n := range r.ConfigNames {
			want[n] = true
		}
		for _, e := range entries {
			if r.ConfigNames != nil && !want[e.Name] {
				continue
			}
			c := kmsg.DescribeConfigsResponseResourceConfig{
				Name: e.Name, Value: e.Value, ReadOnly: e.ReadOnly, IsDefault: e.IsDefault,
				Source: kmsg.ConfigSource(e.Source), IsSensitive: e.Sensitive, ConfigType: kmsg.ConfigType(e.Type),
			}
			if req.IncludeSynonyms {
				for _, syn := range e.Synonyms {
					v := syn.Value
					c.ConfigSynonyms = append(c.ConfigSynonyms, kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{
						Name: syn.Name, Value: &v, Source: kmsg.ConfigSource(syn.Source)})
				}
			}
			if req.IncludeDocumentation && e.Doc != "" {
				doc := e.Doc
				c.Documentation = &doc
			}
			rr.Configs = append(rr.Configs, c)
		}
		s.metrics.countErr(32, rr.ErrorCode)
		resp.Resources = append(resp.Resources, rr)
	}
	return func() kmsg.Response { return resp }
}
