package collector

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

const filterBody = `# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"} 42
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b"} 7
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 40
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a"} 100
# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 1e-05
go_gc_duration_seconds_sum 0.1
go_gc_duration_seconds_count 3
`

func TestFamilyFilter(t *testing.T) {
	util := "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n" +
		"DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-a\"} 42\nDCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"GPU-b\"} 7\n"
	fb := "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n# TYPE DCGM_FI_DEV_FB_USED gauge\n" +
		"DCGM_FI_DEV_FB_USED{gpu=\"0\",UUID=\"GPU-a\"} 100\n"
	gc := "# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.\n" +
		"# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds{quantile=\"0\"} 1e-05\n" +
		"go_gc_duration_seconds_sum 0.1\ngo_gc_duration_seconds_count 3\n"
	tests := []struct {
		name  string
		query string
		body  string
		want  string // "-": no filter
	}{
		{"no parameter", "", filterBody, "-"},
		{"only empty names", "name[]=&name[]=", filterBody, "-"},
		{"one family", "name[]=DCGM_FI_DEV_GPU_UTIL", filterBody, util},
		{"two, in the body's order", "name[]=DCGM_FI_DEV_FB_USED&name[]=DCGM_FI_DEV_GPU_UTIL", filterBody, util + fb},
		{"repeated names", "name[]=DCGM_FI_DEV_FB_USED&name[]=DCGM_FI_DEV_FB_USED", filterBody, fb},
		{"a summary keeps its suffixed series", "name[]=go_gc_duration_seconds", filterBody, gc},
		{"a suffixed name is not a family", "name[]=go_gc_duration_seconds_sum", filterBody, ""},
		{"unknown family", "name[]=nope", filterBody, ""},
		{"a prefix is not a family", "name[]=DCGM_FI_DEV_GPU", filterBody, ""},
		{"other parameters are ignored", "x=1&name[]=DCGM_FI_DEV_FB_USED", filterBody, fb},
		{"samples before any comment, by their name", "name[]=a", "a 1\nb 2\na{x=\"1\"} 3\n# HELP c c\nc 4\n", "a 1\na{x=\"1\"} 3\n"},
		{"a last line without a newline", "name[]=a", "# TYPE a gauge\na 1", "# TYPE a gauge\na 1"},
		{"other comments go with their family", "name[]=a", "# x\n# TYPE a gauge\n# note\na 1\n# TYPE b gauge\n# note\nb 2\n", "# TYPE a gauge\n# note\na 1\n"},
		{"CRLF lines", "name[]=a", "# TYPE a gauge\r\na 1\r\n# TYPE b gauge\r\nb 1\r\n", "# TYPE a gauge\r\na 1\r\n"},
		{"empty body", "name[]=a", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			f, ok := FamilyFilterOf(q)
			if ok != (tt.want != "-") {
				t.Fatalf("FamilyFilterOf(%q) ok = %v", tt.query, ok)
			}
			if !ok {
				return
			}
			if got := string(f.Append(nil, []byte(tt.body))); got != tt.want {
				t.Errorf("Append:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// FuzzFamilyFilter: any body and name; the output is made of whole lines
// of the body in their order, and filtering it again changes nothing.
func FuzzFamilyFilter(f *testing.F) {
	f.Add([]byte(filterBody), "DCGM_FI_DEV_GPU_UTIL")
	f.Add([]byte("a 1\n# TYPE a gauge\na 2"), "a")
	f.Add([]byte("# HELP \n# TYPE  x\nx{} 1\r\n"), "x")
	f.Fuzz(func(t *testing.T, body []byte, name string) {
		filter, ok := FamilyFilterOf(url.Values{exposition.FamilyParam: {name}})
		if !ok {
			return
		}
		out := filter.Append(nil, body)
		rest := body
		for line := range bytes.Lines(out) {
			i := bytes.Index(rest, line)
			if i < 0 {
				t.Fatalf("line %q is not in the body after the previous one", line)
			}
			rest = rest[i+len(line):]
		}
		if again := filter.Append(nil, out); !bytes.Equal(again, out) {
			t.Fatalf("filtering again changed the body: %q -> %q", out, again)
		}
	})
}

func TestMetricsHandlerFamilyFilter(t *testing.T) {
	h, _, _ := testHandler(t, MaxScrapesInFlight)
	get := func(target string, gz bool) string {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, target, nil)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("%s: Content-Length %s, body %d bytes", target, cl, rec.Body.Len())
		}
		return responseBody(t, rec, gz)
	}
	full := get("/metrics", false)
	const q = "/metrics?name%5B%5D=DCGM_FI_DEV_GPU_UTIL&name%5B%5D=gpu_metrics_server_devices"
	for _, gz := range []bool{false, true} {
		got := get(q, gz)
		want := string(mustFilter(t, "name[]=DCGM_FI_DEV_GPU_UTIL&name[]=gpu_metrics_server_devices").Append(nil, []byte(full)))
		if got != want {
			t.Errorf("gzip %v: filtered body\n%s\nwant\n%s", gz, got, want)
		}
		// Both families are there: one from the device series, one from
		// the self-metrics; nothing else.
		if !strings.Contains(got, `DCGM_FI_DEV_GPU_UTIL{gpu="0"`) || !strings.Contains(got, "gpu_metrics_server_devices 1") ||
			strings.Count(got, "# TYPE ") != 2 {
			t.Errorf("gzip %v: filtered body:\n%s", gz, got)
		}
	}
	// One body built, its filtered form kept: one compression for the
	// filtered body's gzip, none for the full body's.
	if got := h.builds.Load(); got != 1 {
		t.Errorf("bodies built %d, want 1", got)
	}
	if got := h.compressions.Load(); got != 1 {
		t.Errorf("compressions %d, want 1", got)
	}
	if get(q, true) == "" || h.compressions.Load() != 1 {
		t.Errorf("the filtered body was compressed again: %d compressions", h.compressions.Load())
	}
}

// responseBody returns rec's body, gunzipped when gz (and failing the test
// when it is not gzipped then).
func responseBody(t *testing.T, rec *httptest.ResponseRecorder, gz bool) string {
	t.Helper()
	var body io.Reader = rec.Body
	if gz {
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatal("gzip not used")
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = zr
	}
	out, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func mustFilter(t *testing.T, query string) FamilyFilter {
	t.Helper()
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := FamilyFilterOf(q)
	if !ok {
		t.Fatalf("no filter in %q", query)
	}
	return f
}
