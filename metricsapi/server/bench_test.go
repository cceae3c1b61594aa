package server

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// BenchmarkAPIQuery is the HPA's request for 1,000 pods over HTTPS, end to
// end through the API server (delegated authorization allowing anonymous,
// JSON encoding), reporting p99 besides the mean.
func BenchmarkAPIQuery(b *testing.B) {
	const pods = 1000
	st, err := store.New(store.Config{Window: time.Minute, StaleAfter: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	var static []provider.StaticPod
	now := time.Now()
	for node := 0; node < pods/8; node++ {
		samples := make([]store.Sample, 8)
		for j := range samples {
			name := fmt.Sprintf("worker-%d", node*8+j)
			static = append(static, provider.StaticPod{Namespace: "bench", Name: name, Labels: map[string]string{"app": "gpu-app"}})
			samples[j] = store.Sample{Namespace: "bench", Pod: name, Device: fmt.Sprintf("GPU-%d", node*8+j), Time: now,
				Present: store.FieldUtilization, Utilization: 42.5}
		}
		if _, err := st.Append(fmt.Sprintf("node-%d", node), now, samples); err != nil {
			b.Fatal(err)
		}
	}
	ts := startServer(b, Config{Metrics: st, Pods: provider.NewStaticPodLister(static)}, false)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := ts.url + "/apis/custom.metrics.k8s.io/v1beta2/namespaces/bench/pods/*/gpu_utilization?labelSelector=app%3Dgpu-app"
	var durations []time.Duration
	for b.Loop() {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		durations = append(durations, time.Since(start))
		if err != nil || resp.StatusCode != http.StatusOK || n < pods*100 {
			b.Fatalf("HTTP %d, %d bytes, %v", resp.StatusCode, n, err)
		}
	}
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
}
