//go:build e2e && benchcompare

package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// Environment of TestDelegateOverhead.
const (
	// envDelegateRequests is the number of requests per path (default
	// 4000; 400 with BENCH_QUICK).
	envDelegateRequests = "BENCH_DELEGATE_REQUESTS"
	// envDelegateWorkers is the number of concurrent callers (default 4).
	envDelegateWorkers = "BENCH_DELEGATE_WORKERS"
)

// delegateResult is the latency of one path.
type delegateResult struct {
	Path          string
	N, Failed     int
	P50, P90, P99 time.Duration
	Mean          time.Duration
}

// TestDelegateOverhead measures what delegation adds to a request for a
// metric prometheus-adapter serves: requests_per_second of one podinfo pod
// (the seed's rule), the pods taken in turn, sent straight to
// prometheus-adapter and through the aggregator (--delegate-to at
// prometheus-adapter's Service), interleaved at random by the same callers
// in one run, with the same credentials (a ServiceAccount token both
// servers review). Both calls go to the servers' own ports, not through
// kube-apiserver, whose proxy would be the same for both. It prints
// p50/p90/p99 of each and the difference; it asserts nothing about speed.
//
// One pod by name, not the HPA's label selector: for a selector
// prometheus-adapter lists the pods from kube-apiserver behind client-go's
// default client-side limit of 5 requests/s, so a selector benchmark would
// measure that queue, on both paths alike, rather than the delegation.
// The selector query itself is forwarded the same way (the path and query
// are passed through untouched; e2e/delegate_test.go runs it).
func TestDelegateOverhead(t *testing.T) {
	requests, workers := 4000, 4
	if os.Getenv("BENCH_QUICK") != "" {
		requests = 400
	}
	for env, dst := range map[string]*int{envDelegateRequests: &requests, envDelegateWorkers: &workers} {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", env, v)
			}
			*dst = n
		}
	}
	dir := framework.TempDir(t, "gms-bench-delegate-")

	// The seed's request rate: 10 podinfo pods at 1 request/s each.
	const pods = 10
	web := cluster.NewNamespace(t, "bench-web")
	framework.StartPodFaker(t, cluster.Client, web, nil, nil)
	cluster.CreateDeployment(t, framework.WebDeployment(web, "podinfo", pods))
	podNames := cluster.WaitPods(t, web, "app=podinfo", pods)
	counter := cluster.StartRequestCounter(t, web, "app=podinfo")
	counter.SetRate(pods)
	prom := framework.StartPrometheus(t, dir, "istio", []string{counter.URL}, time.Second)
	framework.WaitFor(t, 60*time.Second, "Prometheus to hold every pod's counter", func(ctx context.Context) (bool, string, error) {
		n, err := prom.Scalar(ctx, fmt.Sprintf(`count(istio_requests_total{namespace=%q})`, web))
		return err == nil && n == pods, fmt.Sprint(n, err), nil
	})

	mon := cluster.NewNamespace(t, "bench-monitoring")
	cert := cluster.ServingCertFor(t, dir, mon, "prometheus-adapter")
	adapter := cluster.StartPrometheusAdapter(t, dir, framework.AdapterOptions{
		PrometheusURL: prom.URL, Rules: framework.SeedRequestRateRules, RelistInterval: time.Minute, Cert: &cert,
	})
	cluster.CreateLoopbackService(t, mon, "prometheus-adapter", adapter.Port)

	gms := cluster.NewNamespace(t, "bench-gms")
	const delegateSA = "gpu-metrics-server-aggregator"
	cluster.GrantCustomMetricsGet(t, gms, delegateSA)
	tokenFile := filepath.Join(dir, "delegate-token")
	if err := os.WriteFile(tokenFile, []byte(cluster.ServiceAccountToken(t, gms, delegateSA)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := framework.StartGMS(t, cluster, gms, framework.GMSOptions{
		GPUsPerNode: []int{1},
		// The benchmark's control plane runs no kubelets: no GPU pod is
		// measured, only the requests the aggregator forwards.
		FakeKubelets: true,
		AggregatorArgs: []string{
			"--delegate-to=" + mon + "/prometheus-adapter:" + strconv.Itoa(adapter.Port),
			"--delegate-ca-file=" + cluster.CAFile(),
			"--delegate-bearer-token-file=" + tokenFile,
		},
		Unregistered: true,
	})

	// The caller: a ServiceAccount that may read custom metrics, as the
	// HPA controller's.
	cluster.GrantCustomMetricsGet(t, gms, "bench-caller")
	caller := "Bearer " + cluster.ServiceAccountToken(t, gms, "bench-caller")
	path := func(i int) string {
		return "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + web + "/pods/" + podNames[i%len(podNames)] + "/requests_per_second"
	}
	bases := map[string]string{"direct": adapter.URL, "delegated": env.Aggregator.URL}
	client := cluster.AnonymousClient(t, queryTimeout, workers)
	get := func(ctx context.Context, url string) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", caller)
		req.Header.Set("Accept", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		took := time.Since(start)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"value"`) {
			return 0, fmt.Errorf("%s: %s: %.200s", url, resp.Status, body)
		}
		return took, nil
	}
	// Both paths answer every pod before anything is measured.
	for name, base := range bases {
		for i := range podNames {
			framework.WaitFor(t, 3*time.Minute, "the "+name+" path to answer for "+podNames[i], func(ctx context.Context) (bool, string, error) {
				_, err := get(ctx, base+path(i))
				if err != nil {
					return false, err.Error(), nil
				}
				return true, "", nil
			})
		}
	}

	// Warm-up (connections, the servers' token and access review caches),
	// then the run: each worker sends requests/workers of each path in a
	// random order.
	run := func(n int) map[string][]time.Duration {
		var mu sync.Mutex
		took := map[string][]time.Duration{}
		failed := map[string]int{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				order := make([]string, 0, 2*n/workers)
				for range n / workers {
					order = append(order, "direct", "delegated")
				}
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				for i, name := range order {
					d, err := get(t.Context(), bases[name]+path(w+i))
					mu.Lock()
					if err != nil {
						failed[name]++
					} else {
						took[name] = append(took[name], d)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for name, n := range failed {
			t.Errorf("%s: %d requests failed", name, n)
		}
		return took
	}
	run(max(workers, requests/10))
	start := time.Now()
	took := run(requests)
	elapsed := time.Since(start)

	var results []delegateResult
	for _, name := range []string{"direct", "delegated"} {
		ds := took[name]
		slices.Sort(ds)
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		r := delegateResult{Path: name, N: len(ds), Failed: requests/workers*workers - len(ds)}
		if len(ds) > 0 {
			r.P50, r.P90, r.P99, r.Mean = quantile(ds, 0.5), quantile(ds, 0.9), quantile(ds, 0.99), sum/time.Duration(len(ds))
		}
		results = append(results, r)
	}
	direct, delegated := results[0], results[1]
	var b strings.Builder
	fmt.Fprintf(&b, "## Delegation overhead: requests_per_second of one of %d pods from prometheus-adapter v0.12.0, %d callers, %d requests per path, interleaved, in %v\n\n",
		pods, workers, requests, elapsed.Round(time.Second))
	b.WriteString("| path | requests | p50 | p90 | p99 | mean |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %v | %v | %v | %v |\n", r.Path, r.N, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Mean))
	}
	fmt.Fprintf(&b, "| added by delegation | | %v | %v | %v | %v |\n", ms(delegated.P50-direct.P50), ms(delegated.P90-direct.P90), ms(delegated.P99-direct.P99), ms(delegated.Mean-direct.Mean))
	report := b.String()
	fmt.Print("\n" + report)
	writeResults(t, "delegate", report, results)
}

// ms prints a duration in milliseconds with two decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
