package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// SelfMetricsFunc reads the /metrics of a pod's port.
type SelfMetricsFunc func(ctx context.Context, pod *corev1.Pod, scheme, port string) ([]byte, error)

// ProxySelfMetrics reads a pod's /metrics through kube-apiserver's pod proxy
// (the user needs get on pods/proxy in the pod's namespace). A refusal the
// user's permissions do not explain is the pod's own: a *PodRefused.
func ProxySelfMetrics(kube kubernetes.Interface) SelfMetricsFunc {
	return func(ctx context.Context, pod *corev1.Pod, scheme, port string) ([]byte, error) {
		b, err := kube.CoreV1().Pods(pod.Namespace).ProxyGet(scheme, pod.Name, port, "metrics", nil).DoRaw(ctx)
		if err == nil {
			return b, nil
		}
		if apierrors.IsForbidden(err) && mayProxy(ctx, kube, pod) {
			return nil, &PodRefused{Pod: pod.Namespace + "/" + pod.Name, Reason: refusal(b), Err: err}
		}
		return nil, kubeapi.Explain(err, "get", "", "pods/proxy", pod.Namespace)
	}
}

// mayProxy reports whether the user may get the pod's proxy subresource
// (false when it cannot tell): a 403 through the proxy then came from the
// pod, not from kube-apiserver.
func mayProxy(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod) bool {
	r, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: pod.Namespace, Verb: "get", Resource: "pods", Subresource: "proxy", Name: pod.Name,
		}},
	}, metav1.CreateOptions{})
	return err == nil && r.Status.Allowed
}

// PodRefused is a pod that refused a request kube-apiserver's pod proxy
// forwarded: the proxy sends no credentials of the user, so a server that
// authorizes its /metrics sees system:anonymous.
type PodRefused struct {
	Pod string
	// Reason is what the pod answered ("" : nothing).
	Reason string
	Err    error
}

func (p *PodRefused) Error() string {
	msg := fmt.Sprintf("pod %s refused the API server's pod proxy, which reads /metrics as system:anonymous", p.Pod)
	if p.Reason != "" {
		msg += ": " + p.Reason
	}
	return msg
}

// maxRefusal bounds the part of a refusal's body a message quotes.
const maxRefusal = 200

// refusal is the message of a refusal's body (a Status's message, else
// the body): its first line, bounded.
func refusal(body []byte) string {
	msg := string(body)
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		msg = st.Message
	}
	line, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	if len(line) > maxRefusal {
		line = line[:maxRefusal] + "..."
	}
	return line
}

func (p *PodRefused) Unwrap() error { return p.Err }

// selfMetrics are a pod's parsed /metrics.
type selfMetrics struct{ families map[string]*dto.MetricFamily }

func parseSelfMetrics(b []byte) (*selfMetrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return &selfMetrics{families: fams}, nil
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// value is the sum of the family's series; ok is false when it has none.
func (s *selfMetrics) value(name string) (v float64, ok bool) {
	f := s.families[name]
	if f == nil || len(f.Metric) == 0 {
		return 0, false
	}
	for _, m := range f.Metric {
		v += metricValue(m)
	}
	return v, true
}

// byLabel sums the family's series by the value of label.
func (s *selfMetrics) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	f := s.families[name]
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == label {
				out[l.GetValue()] += metricValue(m)
			}
		}
	}
	return out
}

// podDevices counts the devices the agent serves for namespace/pod.
func (s *selfMetrics) podDevices(namespace, pod string) int {
	f := s.families["DCGM_FI_DEV_GPU_UTIL"]
	if f == nil {
		return 0
	}
	seen := map[string]bool{}
	for _, m := range f.Metric {
		var ns, name, uuid string
		for _, l := range m.Label {
			switch l.GetName() {
			case "namespace":
				ns = l.GetValue()
			case "pod":
				name = l.GetValue()
			case "UUID":
				uuid = l.GetValue()
			}
		}
		if ns == namespace && name == pod {
			seen[uuid] = true
		}
	}
	return len(seen)
}

// containerPort is the pod's port named name, else its first port, as the
// proxy takes it.
func containerPort(pod *corev1.Pod, name string) string {
	first := ""
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return strconv.Itoa(int(p.ContainerPort))
			}
			if first == "" {
				first = strconv.Itoa(int(p.ContainerPort))
			}
		}
	}
	return first
}
