package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// UpdateFeatures v0-2 (KIP-584), flexible throughout. v1 replaced
// AllowDowngrade with UpgradeType and added ValidateOnly; v2 answers with
// the top-level error alone. Chronik has no feature flags: ApiVersions
// lists no supported or finalized features, so every update names a
// feature this cluster does not support and is refused with
// INVALID_UPDATE_VERSION, as Kafka refuses an unknown feature; a request
// naming none succeeds. Kafka's rule: ALTER on the cluster.
func init() { register(57, 0, 2, handleUpdateFeatures) }

func handleUpdateFeatures(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.UpdateFeaturesRequest)
	resp := req.ResponseKind().(*kmsg.UpdateFeaturesResponse)
	resp.Version = req.Version
	answer := func(code int16, msg string, each func(f string) (int16, string)) reply {
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = &msg
		}
		s.metrics.countErr(57, code)
		if req.Version < 2 {
			for _, u := range req.FeatureUpdates {
				r := kmsg.NewUpdateFeaturesResponseResult()
				r.Feature = u.Feature
				if each != nil {
					c, m := each(u.Feature)
					r.ErrorCode = c
					if m != "" {
						r.ErrorMessage = &m
					}
				}
				resp.Results = append(resp.Results, r)
			}
		}
		return func() kmsg.Response { return resp }
	}
	if code := clusterErr(s, cc, kmsg.ACLOperationAlter); code != 0 {
		return answer(code, "", func(string) (int16, string) { return code, "" })
	}
	seen := map[string]bool{}
	for _, u := range req.FeatureUpdates {
		if seen[u.Feature] {
			return answer(kerr.InvalidRequest.Code, "feature "+u.Feature+" is named more than once", nil)
		}
		seen[u.Feature] = true
	}
	if len(req.FeatureUpdates) == 0 {
		return answer(0, "", nil)
	}
	unsupported := func(f string) (int16, string) {
		return kerr.InvalidUpdateVersion.Code, "feature " + f + " is not supported: Chronik has no feature flags (ApiVersions lists none)"
	}
	if req.Version >= 2 {
		code, msg := unsupported(req.FeatureUpdates[0].Feature)
		return answer(code, msg, nil)
	}
	return answer(0, "", unsupported)
}
