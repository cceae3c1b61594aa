package scrape

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// agentFamilies are the families of the agent's exposition on an H100
// (collector/exposition.go), in its order.
var agentFamilies = []string{
	"DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
	"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL",
	"DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE",
}

// agentBody renders an agent exposition of a node with gpus time-sliced GPUs
// shared by pods pods (pod i on GPU i mod gpus, replica i div gpus), node
// being the node's index (it makes names unique across nodes).
func agentBody(node, gpus, pods int, snapshot time.Time) []byte {
	var b bytes.Buffer
	device := func(g int) string {
		return fmt.Sprintf(`gpu="%d",UUID="GPU-%08x-3b7d-4c52-9e1f-5d2a7b9c%04x",pci_bus_id="00000000:%02X:00.0",device="nvidia%d",modelName="NVIDIA H100 80GB HBM3",hostname="gpu-node-%d"`,
			g, node, g, 0x17+g, g, node)
	}
	for fi, fam := range agentFamilies {
		value := strconv.Itoa(10 + fi)
		if strings.HasPrefix(fam, "DCGM_FI_PROF_") {
			value = "0.4375"
		}
		fmt.Fprintf(&b, "# HELP %s Field %d.\n# TYPE %s gauge\n", fam, fi, fam)
		for i := 0; i < pods; i++ {
			fmt.Fprintf(&b, `%s{%s,container="main",namespace="team-%d",pod="worker-%d-%d",vgpu="%d"} %s`+"\n",
				fam, device(i%gpus), i%10, node, i, i/gpus, value)
		}
	}
	b.WriteString("# HELP gpu_metrics_server_device_attribution_mode Mode.\n# TYPE gpu_metrics_server_device_attribution_mode gauge\n")
	for g := 0; g < gpus; g++ {
		fmt.Fprintf(&b, "gpu_metrics_server_device_attribution_mode{%s,mode=\"process\"} 0\n", device(g))
		fmt.Fprintf(&b, "gpu_metrics_server_device_attribution_mode{%s,mode=\"device\"} 1\n", device(g))
	}
	fmt.Fprintf(&b, "# HELP gpu_metrics_server_sample_timestamp_seconds Snapshot time.\n# TYPE gpu_metrics_server_sample_timestamp_seconds gauge\ngpu_metrics_server_sample_timestamp_seconds %.3f\n",
		float64(snapshot.UnixMilli())/1000)
	return b.Bytes()
}

func BenchmarkParse(b *testing.B) {
	body := agentBody(0, 8, 110, receipt)
	parse := func(body []byte) func(*testing.B) {
		return func(b *testing.B) {
			p := NewParser()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			defer cpuPerOp(b)()
			for b.Loop() {
				if _, _, err := p.Parse(body, receipt); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("fast", parse(body))
	// One node of the fleet benchmark (hack/fleetsim, the agent's
	// exposition): 8 GPUs each held by one pod, every built-in family and
	// the agent's self-metrics, 74.5 KB of which the parser reads 49 lines.
	b.Run("node", parse(readTestdata(b, "fleet-node.prom")))
	// The same node's answer to the aggregator, which asks for the
	// families it reads (exposition.ReadFamilies): those 49 lines, 14.4 KB.
	b.Run("node-read", parse(readTestdata(b, "fleet-node-read.prom")))
	b.Run("reference", func(b *testing.B) {
		var acc accumulator
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		defer cpuPerOp(b)()
		for b.Loop() {
			acc.reset()
			if err := parseReference(body, &acc); err != nil {
				b.Fatal(err)
			}
			acc.finish(receipt)
		}
	})
}

// BenchmarkParseAndStore is one agent scrape (8 GPUs, 110 pods) from body
// to store, in steady state: every scrape brings a new snapshot.
func BenchmarkParseAndStore(b *testing.B) {
	st, err := store.New(store.Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	// The body up to its snapshot timestamp, which each scrape advances.
	full := agentBody(0, 8, 110, receipt)
	prefix := full[:bytes.LastIndex(full, []byte("gpu_metrics_server_sample_timestamp_seconds "))]
	body := slices.Clone(prefix)
	p := NewParser()
	at := receipt
	b.SetBytes(int64(len(full)))
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		at = at.Add(2 * time.Second)
		body = fmt.Appendf(body[:len(prefix)], "gpu_metrics_server_sample_timestamp_seconds %.3f\n", float64(at.UnixMilli())/1000-0.5)
		samples, _, err := p.Parse(body, at)
		if err != nil {
			b.Fatal(err)
		}
		if res, err := st.Append("agent-0", at, samples); err != nil || res.Stored != 110 {
			b.Fatalf("Append = %+v, %v; want 110 stored", res, err)
		}
	}
}

// discard is an Appender that keeps nothing.
type discard struct{}

func (discard) Append(string, time.Time, []store.Sample) (store.AppendResult, error) {
	return store.AppendResult{}, nil
}

func (discard) AppendNodes(string, time.Time, []store.Sample) (store.AppendResult, error) {
	return store.AppendResult{}, nil
}

// BenchmarkScrape is one scrape of one node of the fleet benchmark (the
// families the aggregator asks for) over a kept loopback connection into a
// sink that keeps nothing: the scraper's per-scrape path (request,
// response, body, parse). The body comes with its Content-Length, as the
// agent and hack/fleetsim send it, or chunked, as a server that sends none.
// The in-process server's work counts too; the profile tells them apart.
func BenchmarkScrape(b *testing.B) {
	node := readTestdata(b, "fleet-node-read.prom")
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"content-length", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(node)))
			_, _ = w.Write(node)
		}},
		{"chunked", body(node)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := httptest.NewServer(tc.handler)
			b.Cleanup(srv.Close)
			s, err := New(Config{Interval: time.Minute, Timeout: time.Minute, MaxBodyBytes: 1 << 20}, nil, discard{})
			if err != nil {
				b.Fatal(err)
			}
			t := Target{Name: "node-0", URL: srv.URL + "/metrics"}
			st := &targetState{}
			b.SetBytes(int64(len(node)))
			b.ReportAllocs()
			defer cpuPerOp(b)()
			for b.Loop() {
				if err := s.scrapeOne(b.Context(), t, st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cpuPerOp, deferred before a benchmark's loop, reports the process's CPU
// time (user and system, every goroutine's, the garbage collector's too)
// per iteration as cpu-ns/op: unlike ns/op, a figure that a loaded machine
// taking the CPU away does not inflate.
func cpuPerOp(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGunzipNode is what gzip would add to a scrape of one node of the
// fleet benchmark (hack/fleetsim gzips at the default level when asked):
// decompressing its body, against Parse/node's parse of it. The scraper
// asks for no compression (client.request): on a cluster network the
// decompression costs more CPU than the bytes it saves.
func BenchmarkGunzipNode(b *testing.B) {
	node := readTestdata(b, "fleet-node.prom")
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	if _, err := zw.Write(node); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	var zr gzip.Reader
	out := bytes.NewBuffer(make([]byte, 0, len(node)+bytes.MinRead))
	b.SetBytes(int64(len(node)))
	b.ReportAllocs()
	defer b.ReportMetric(float64(zipped.Len()), "gzipped-bytes")
	defer cpuPerOp(b)()
	for b.Loop() {
		if err := zr.Reset(bytes.NewReader(zipped.Bytes())); err != nil {
			b.Fatal(err)
		}
		out.Reset()
		if _, err := out.ReadFrom(&zr); err != nil || out.Len() != len(node) {
			b.Fatalf("gunzip: %d bytes, %v", out.Len(), err)
		}
	}
}
