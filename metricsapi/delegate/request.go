package delegate

import (
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// groupPrefix is the path of the custom metrics group.
const groupPrefix = "/apis/" + custom_metrics.GroupName

// kind says what a request under the custom metrics group is.
type kind int

const (
	// The zero kind: anything the local server answers (the group
	// document, malformed paths, verbs other than get, unknown versions'
	// discovery).
	_ kind = iota
	// discoveryRequest: GET /apis/custom.metrics.k8s.io/<version>.
	discoveryRequest
	// metric: a metric of one object or of the objects a selector
	// matches.
	metric
)

// classified is a request of the custom metrics group.
type classified struct {
	kind    kind
	version string
	// info is the metric asked for (kind metric), as the library hands
	// it to its provider.
	info cmprovider.CustomMetricInfo
}

// classify reads what the API server's request-info filter parsed out of
// the request (the same RequestInfo the custom-metrics-apiserver library
// answers from) and says whether it asks for a metric, and which. The
// shapes are the library's routes:
//
//	/apis/custom.metrics.k8s.io/<v>/<resource>/<name|*>/<metric>                        root-scoped objects
//	/apis/custom.metrics.k8s.io/<v>/namespaces/<ns>/<resource>/<name|*>/<metric>        namespaced objects
//	/apis/custom.metrics.k8s.io/<v>/namespaces/<ns>/metrics/<metric>                    the namespace itself
func classify(r *http.Request) classified {
	if r.Method != http.MethodGet {
		return classified{}
	}
	info, ok := request.RequestInfoFrom(r.Context())
	if !ok {
		return classified{}
	}
	if !info.IsResourceRequest {
		// Discovery: /apis/custom.metrics.k8s.io/<version>, nothing after.
		rest, ok := strings.CutPrefix(info.Path, groupPrefix+"/")
		if ok && rest != "" && !strings.Contains(rest, "/") {
			return classified{kind: discoveryRequest, version: rest}
		}
		return classified{}
	}
	if info.APIGroup != custom_metrics.GroupName || info.Verb != "get" || info.APIVersion == "" {
		return classified{}
	}
	c := classified{kind: metric, version: info.APIVersion}
	switch {
	case info.Namespace != "" && info.Resource == "metrics" && len(info.Parts) == 2:
		// The library's special route for metrics describing namespaces.
		c.info = cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "namespaces"}, Metric: info.Name}
	case len(info.Parts) == 3 && info.Resource != "" && info.Name != "" && info.Subresource != "":
		c.info = cmprovider.CustomMetricInfo{
			GroupResource: schema.ParseGroupResource(info.Resource),
			Namespaced:    info.Namespace != "",
			Metric:        info.Subresource,
		}
	default:
		return classified{}
	}
	if c.info.Metric == "" {
		return classified{}
	}
	return c
}

// isOurs reports whether info is one of ours.
func isOurs(ours []cmprovider.CustomMetricInfo, info cmprovider.CustomMetricInfo) bool {
	for _, o := range ours {
		if o.Metric == info.Metric && o.GroupResource == info.GroupResource && o.Namespaced == info.Namespaced {
			return true
		}
	}
	return false
}
