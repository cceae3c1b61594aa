package top

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// fakeAPI is kube-apiserver as the custom metrics client and the pods
// client see it: discovery, pods, and custom.metrics.k8s.io v1beta2.
type fakeAPI struct {
	pods []corev1.Pod
	// values[metric] are the served values; a pod not in it is not served.
	values map[string][]cmv1beta2.MetricValue
	// nodes and nodeValues[metric] are the nodes and their served values.
	nodes      []corev1.Node
	nodeValues map[string][]cmv1beta2.MetricValue
	// forbidNodes: RBAC refuses listing nodes.
	forbidNodes bool
	// noAPIService: discovery lists no custom.metrics.k8s.io.
	noAPIService bool
	// forbidPods, forbidMetrics: RBAC refuses listing pods, getting metrics.
	forbidPods, forbidMetrics bool
	// unavailable: the APIService does not answer (503).
	unavailable bool
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	s := err.Status()
	s.Kind, s.APIVersion = "Status", "v1"
	writeJSON(w, int(s.Code), s)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	switch {
	case path == "/api":
		writeJSON(w, 200, metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"}})
	case path == "/apis":
		groups := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
		if !f.noAPIService {
			v := metav1.GroupVersionForDiscovery{GroupVersion: "custom.metrics.k8s.io/v1beta2", Version: "v1beta2"}
			groups.Groups = append(groups.Groups, metav1.APIGroup{Name: "custom.metrics.k8s.io", Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v})
		}
		writeJSON(w, 200, groups)
	case path == "/api/v1/pods" || strings.HasPrefix(path, "/api/v1/namespaces/") && strings.HasSuffix(path, "/pods"):
		ns := strings.TrimSuffix(strings.TrimPrefix(path, "/api/v1/namespaces/"), "/pods")
		if path == "/api/v1/pods" {
			ns = ""
		}
		if f.forbidPods {
			writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errForbidden))
			return
		}
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		for _, p := range f.pods {
			if (ns == "" || p.Namespace == ns) && sel.Matches(labels.Set(p.Labels)) {
				list.Items = append(list.Items, p)
			}
		}
		writeJSON(w, 200, list)
	case path == "/api/v1/nodes":
		if f.forbidNodes {
			writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errForbidden))
			return
		}
		list := corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}}
		for _, n := range f.nodes {
			if sel.Matches(labels.Set(n.Labels)) {
				list.Items = append(list.Items, n)
			}
		}
		writeJSON(w, 200, list)
	case strings.HasPrefix(path, "/apis/custom.metrics.k8s.io/v1beta2/nodes/"):
		// /apis/custom.metrics.k8s.io/v1beta2/nodes/*/<metric>
		parts := strings.Split(strings.TrimPrefix(path, "/apis/custom.metrics.k8s.io/v1beta2/nodes/"), "/")
		if f.unavailable {
			writeStatus(w, apierrors.NewServiceUnavailable("service gpu-metrics-server/gpu-metrics-server has no ready endpoints"))
			return
		}
		if f.forbidMetrics {
			writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Group: "custom.metrics.k8s.io", Resource: "nodes"}, "*", errForbidden))
			return
		}
		if len(parts) != 2 || parts[0] != "*" {
			writeStatus(w, apierrors.NewBadRequest("unexpected path "+path))
			return
		}
		values, ok := f.nodeValues[parts[1]]
		if !ok {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: "custom.metrics.k8s.io", Resource: "nodes"}, parts[1]))
			return
		}
		nodeLabels := map[string]labels.Set{}
		for _, n := range f.nodes {
			nodeLabels[n.Name] = n.Labels
		}
		list := cmv1beta2.MetricValueList{TypeMeta: metav1.TypeMeta{Kind: "MetricValueList", APIVersion: "custom.metrics.k8s.io/v1beta2"}}
		for _, v := range values {
			if sel.Matches(nodeLabels[v.DescribedObject.Name]) {
				list.Items = append(list.Items, v)
			}
		}
		writeJSON(w, 200, list)
	case strings.HasPrefix(path, "/apis/custom.metrics.k8s.io/v1beta2/namespaces/"):
		// /apis/custom.metrics.k8s.io/v1beta2/namespaces/<ns>/pods/*/<metric>
		parts := strings.Split(strings.TrimPrefix(path, "/apis/custom.metrics.k8s.io/v1beta2/namespaces/"), "/")
		if f.noAPIService {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, ""))
			return
		}
		if f.unavailable {
			writeStatus(w, apierrors.NewServiceUnavailable("service gpu-metrics-server/gpu-metrics-server has no ready endpoints"))
			return
		}
		if f.forbidMetrics {
			writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Group: "custom.metrics.k8s.io", Resource: "pods"}, "*", errForbidden))
			return
		}
		if len(parts) != 4 || parts[1] != "pods" || parts[2] != "*" {
			writeStatus(w, apierrors.NewBadRequest("unexpected path "+path))
			return
		}
		ns, metric := parts[0], parts[3]
		values, ok := f.values[metric]
		if !ok {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: "custom.metrics.k8s.io", Resource: "pods"}, metric))
			return
		}
		podLabels := map[string]labels.Set{}
		for _, p := range f.pods {
			podLabels[p.Namespace+"/"+p.Name] = p.Labels
		}
		list := cmv1beta2.MetricValueList{TypeMeta: metav1.TypeMeta{Kind: "MetricValueList", APIVersion: "custom.metrics.k8s.io/v1beta2"}}
		for _, v := range values {
			if v.DescribedObject.Namespace == ns && sel.Matches(podLabels[ns+"/"+v.DescribedObject.Name]) {
				list.Items = append(list.Items, v)
			}
		}
		writeJSON(w, 200, list)
	default:
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, path))
	}
}

var errForbidden = errString("RBAC: access denied")

type errString string

func (e errString) Error() string { return string(e) }

// clients are the real clients, pointed at f.
func (f *fakeAPI) clients(t *testing.T) *kubeapi.Clients {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := kubeapi.NewClients(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
