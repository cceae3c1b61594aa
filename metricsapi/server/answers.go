package server

import (
	"mime"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	endpointsmetrics "k8s.io/apiserver/pkg/endpoints/metrics"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/metrics/pkg/apis/custom_metrics"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
)

// serveAnswers answers the HPA's query (GET of one metric of the pods of a
// namespace matching a label selector, in JSON) from the provider's kept
// answers, and hands every other request to next, the library's handler,
// which answers the same query with the same body: it runs inside the
// authentication, authorization, audit and priority filters and records
// the same request metrics as the library's route, only without the
// conversions and reflection of the generic encoder (and uncompressed:
// on a cluster network gunzip costs more CPU than the bytes it saves).
func serveAnswers(next http.Handler, p *provider.Provider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, sel, ok := answerable(r)
		if ok {
			if body, ok := p.Answer(info.APIVersion, info.Namespace, info.Subresource, sel); ok {
				start, received := request.ReceivedTimestampFrom(r.Context())
				if !received {
					start = time.Now()
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(body)
				// As the library's route records it (installer: LIST,
				// resource "*", subresource "*", scope "resource").
				endpointsmetrics.MonitorRequest(r, "LIST", info.APIGroup, info.APIVersion, "*", "*", "resource", "custom-metrics",
					false, "", http.StatusOK, len(body), time.Since(start))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// answerable reports whether r is the HPA's query in the form the kept
// answers serve, and returns its request info and label selector: a GET
// of /apis/custom.metrics.k8s.io/<version>/namespaces/<ns>/pods/*/<metric>
// whose only parameters are a valid labelSelector and an empty
// metricLabelSelector, accepting JSON. Anything else (a named pod,
// another resource, options, another encoding, a bad selector) is the
// library's to answer, errors included.
func answerable(r *http.Request) (*request.RequestInfo, labels.Selector, bool) {
	if r.Method != http.MethodGet {
		return nil, nil, false
	}
	info, ok := request.RequestInfoFrom(r.Context())
	if !ok || !info.IsResourceRequest || info.APIGroup != custom_metrics.GroupName || info.Namespace == "" ||
		info.Resource != "pods" || info.Name != "*" || info.Subresource == "" || len(info.Parts) != 3 {
		return nil, nil, false
	}
	q := r.URL.Query()
	for k, v := range q {
		switch {
		case k == "labelSelector" && len(v) == 1:
		case k == "metricLabelSelector" && len(v) == 1 && v[0] == "":
		default:
			return nil, nil, false
		}
	}
	sel, err := labels.Parse(q.Get("labelSelector"))
	if err != nil || !acceptsJSON(r.Header.Values("Accept")) {
		return nil, nil, false
	}
	return info, sel, true
}

// acceptsJSON reports whether the Accept header leaves the server nothing
// but JSON to choose: absent, or only application/json, application/* and
// */* ranges without parameters but q.
func acceptsJSON(accept []string) bool {
	for _, h := range accept {
		for _, r := range strings.Split(h, ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				continue
			}
			mt, params, err := mime.ParseMediaType(r)
			if err != nil {
				return false
			}
			if mt != "application/json" && mt != "application/*" && mt != "*/*" {
				return false
			}
			for k := range params {
				if k != "q" {
					return false
				}
			}
		}
	}
	return true
}
