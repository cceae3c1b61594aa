package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
)

// discardWriter is a ResponseWriter that drops the body, so that a
// benchmark measures the node's work rather than a recorder's copying.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return io.Discard.Write(b) }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkNodeSample is one node's sampling round (8 GPUs, 8 pods): what
// the fleet spends per node and sample interval.
func BenchmarkNodeSample(b *testing.B) {
	n := mustFleet(b, testConfig(1, 8, "fill")).nodes[0]
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		n.sampler.SampleOnce(now)
	}
}

// BenchmarkNodeScrape serves one scrape of one node (8 GPUs, 8 pods) after a
// new sample: the render of the exposition plus the write, the fleet's cost
// per scrape when every scrape finds a new snapshot (aggregator: no gzip).
func BenchmarkNodeScrape(b *testing.B) {
	benchmarkScrape(b, "", "/metrics")
}

// BenchmarkNodeScrapeRead is the same for the families the aggregator asks
// for (exposition.ReadFamilies), filtered for the request.
func BenchmarkNodeScrapeRead(b *testing.B) {
	benchmarkScrape(b, "", readPath)
}

// readPath asks for the families the aggregator reads, as it does.
var readPath = "/metrics?" + url.Values{exposition.FamilyParam: exposition.ReadFamilies()}.Encode()

// BenchmarkNodeScrapeGzip is the same for a client asking gzip
// (Prometheus).
func BenchmarkNodeScrapeGzip(b *testing.B) {
	benchmarkScrape(b, "gzip", "/metrics")
}

func benchmarkScrape(b *testing.B, encoding, path string) {
	n := mustFleet(b, testConfig(1, 8, "fill")).nodes[0]
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	w := &discardWriter{h: http.Header{}}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		n.sampler.SampleOnce(now)
		n.ServeHTTP(w, req)
	}
}

// BenchmarkAggregatorParseNode parses one node's body (8 GPUs, 8 pods, the
// device series and the self-metrics) with the aggregator's parser: the
// aggregator's parse cost per scrape at fleet scale, before it asked for
// the families it reads.
func BenchmarkAggregatorParseNode(b *testing.B) {
	benchmarkParse(b, "/metrics")
}

// BenchmarkAggregatorParseNodeRead parses the families the aggregator asks
// for: its parse cost per scrape.
func BenchmarkAggregatorParseNodeRead(b *testing.B) {
	benchmarkParse(b, readPath)
}

func benchmarkParse(b *testing.B, path string) {
	n := mustFleet(b, testConfig(1, 8, "fill")).nodes[0]
	rec := httptest.NewRecorder()
	n.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body := rec.Body.Bytes()
	p := scrape.NewParser()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := p.Parse(body, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
