package doctor

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// HPAControllerUser is the user the HPA controller reads metrics as when
// kube-controller-manager runs with --use-service-account-credentials.
const HPAControllerUser = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"

// need is a permission a component needs.
type need struct {
	verb, group, resource string
	why                   string
}

var aggregatorNeeds = []need{
	{"list", "", "pods", "resolve the HPA's pod selectors and find the agents"},
	{"watch", "", "pods", "keep its pod cache current"},
	{"list", "", "nodes", "resolve the node selectors of the node metrics"},
	{"watch", "", "nodes", "keep its node cache current"},
	{"create", "authentication.k8s.io", "tokenreviews", "authenticate its callers (system:auth-delegator)"},
	{"create", "authorization.k8s.io", "subjectaccessreviews", "authorize its callers (system:auth-delegator)"},
}

var hpaNeeds = []need{
	{"get", kubeapi.CustomMetricsGroup, "pods", "read one pod's metric"},
	{"list", kubeapi.CustomMetricsGroup, "pods", "read the metrics of the HPA's pods"},
}

// checkRBAC: check 6, the aggregator's ServiceAccount and the HPA
// controller have what they need, asked with SubjectAccessReviews.
func (d *Doctor) checkRBAC(ctx context.Context, cfg Config, r *report, st *state) {
	const name = "rbac"
	if err := d.listAggregators(ctx, cfg, st); err != nil {
		r.failed(name, err, "the aggregator's ServiceAccount")
	} else if len(st.aggregators) > 0 {
		sa := st.aggregators[0].Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		user := fmt.Sprintf("system:serviceaccount:%s:%s", cfg.ServerNamespace, sa)
		groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + cfg.ServerNamespace, "system:authenticated"}
		d.checkNeeds(ctx, r, "the aggregator's ServiceAccount "+cfg.ServerNamespace+"/"+sa, user, groups, aggregatorNeeds,
			"helm upgrade restores the chart's ClusterRole and bindings (aggregator-rbac.yaml)")
	}
	d.checkNeeds(ctx, r, "the HPA controller ("+HPAControllerUser+")", HPAControllerUser,
		[]string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}, hpaNeeds,
		"the chart's custom-metrics-reader ClusterRole and its binding to horizontal-pod-autoscaler (hpa-controller-rbac.yaml)")
}

// checkNeeds asks one SubjectAccessReview per need; one the user may not
// ask is reported as skipped.
func (d *Doctor) checkNeeds(ctx context.Context, r *report, who, user string, groups []string, needs []need, fix string) {
	const name = "rbac"
	var missing []string
	for _, n := range needs {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: n.verb, Group: n.group, Resource: n.resource},
		}}
		res, err := d.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			err = kubeapi.Explain(err, "create", "authorization.k8s.io", "subjectaccessreviews", "")
			if !r.denied(name, err, "what "+who+" may do") {
				r.failed(name, err, "what "+who+" may do")
			}
			return
		}
		if !res.Status.Allowed {
			res := n.resource
			if n.group != "" {
				res += "." + n.group
			}
			missing = append(missing, fmt.Sprintf("%s %s (to %s)", n.verb, res, n.why))
		}
	}
	if len(missing) > 0 {
		for _, m := range missing {
			r.fail(name, fix, "%s may not %s", who, m)
		}
		return
	}
	r.pass(name, "%s has every permission it needs", who)
}
