//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestAgentAuthKubernetes runs the agents as the chart's agent.auth does
// (TLS, --authn-authz=kubernetes) on the real control plane: a scrape
// without a token is refused with 401, one by a ServiceAccount without get
// on /metrics with 403, and the aggregator's (its ServiceAccount granted
// that) succeeds, so that the HPA scales on the agents' values.
func TestAgentAuthKubernetes(t *testing.T) {
	ns := cluster.NewNamespace(t, "agentauth")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}, AgentAuth: true})
	metricsURL := env.Nodes[0].URL + "/metrics"
	nobody := cluster.ServiceAccountToken(t, ns, "nobody")

	get := func(token string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, metricsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := env.AgentHTTP.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", metricsURL, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a forged token", "forged", http.StatusUnauthorized},
		{"a ServiceAccount without the permission", nobody, http.StatusForbidden},
		{"the aggregator's ServiceAccount", env.AgentToken, http.StatusOK},
	} {
		if got := get(tc.token); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	// The probes stay open.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := env.AgentHTTP.Get(env.Nodes[0].URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %s, want 200", path, resp.Status)
		}
	}
	// The refusals are counted by reason.
	framework.WaitFor(t, 30*time.Second, "the agent to count the refusals", func(ctx context.Context) (bool, string, error) {
		families, err := framework.ScrapeFamiliesAs(ctx, env.AgentHTTP, env.AgentToken, metricsURL)
		if err != nil {
			return false, err.Error(), nil
		}
		got := map[string]float64{}
		for _, m := range families["gpu_metrics_server_http_auth_refused_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		return got["unauthenticated"] >= 2 && got["forbidden"] >= 1, fmt.Sprint(got), nil
	})

	// The aggregator's scrapes succeed: the HPA scales on them.
	const name, selector = "trainer", "app=trainer"
	env.SetAllUtilization(100)
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 1))
	cluster.CreateHPA(t, framework.GPUHPA(ns, name, 1, 2, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("60")),
	}))
	pods := cluster.WaitPods(t, ns, selector, 1)
	env.GPUOf(pods[0])
	cluster.WaitHPAMetric(t, ns, name, 100)
	waitReplicas(t, ns, name, func(n int32) bool { return n == 2 })
}
