package server

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// getWith is get with request headers.
func (ts *testServer) getWith(t testing.TB, path string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableCompression: true}, Timeout: testutil.DefaultTimeout}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// requestSeries returns the API server's request counter series for the
// custom metrics group, by their label sets.
func (ts *testServer) requestSeries(t testing.TB) map[string]string {
	t.Helper()
	_, _, body := ts.getWith(t, "/metrics", nil)
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range []string{"apiserver_request_total{", "apiserver_request_duration_seconds_count{", "apiserver_response_sizes_count{"} {
			if strings.HasPrefix(line, name) && strings.Contains(line, `group="custom.metrics.k8s.io"`) {
				i := strings.LastIndexByte(line, ' ')
				out[line[:i]] = line[i+1:]
			}
		}
	}
	return out
}

// changed returns the series whose value differs between two snapshots.
func changed(before, after map[string]string) []string {
	var out []string
	for k, v := range after {
		if before[k] != v {
			out = append(out, k)
		}
	}
	return out
}

// TestAnswersMatchTheLibrary checks that the kept answers serve, for every
// version, metric and selector, byte for byte what the library's handler
// writes (reached with a parameter the fast path leaves to it), and that a
// request they serve records the same request metrics.
func TestAnswersMatchTheLibrary(t *testing.T) {
	st, pods, _ := fixture(t)
	ts := startServer(t, Config{Metrics: st, Pods: pods}, true)
	p := ts.srv.provider
	for _, version := range []string{"v1beta1", "v1beta2"} {
		for _, metric := range []string{"gpu_utilization", "gpu_power_usage_watts", "gpu_memory_used_bytes"} {
			for _, sel := range []string{"app=train", "app in (train,other)", "", "app=none", "app!=other"} {
				path := "/apis/custom.metrics.k8s.io/" + version + "/namespaces/ml/pods/*/" + metric + "?labelSelector=" + url.QueryEscape(sel)
				before := p.AnswerStats()
				code, header, fast := ts.getWith(t, path, nil)
				after := p.AnswerStats()
				if after.Hits+after.Rebuilt != before.Hits+before.Rebuilt+1 {
					t.Fatalf("%s: not served by the kept answers (%+v, then %+v)", path, before, after)
				}
				libCode, libHeader, lib := ts.getWith(t, path+"&pretty=false", nil)
				if p.AnswerStats() != after {
					t.Fatalf("%s&pretty=false went through the kept answers", path)
				}
				if code != http.StatusOK || code != libCode || fast != lib {
					t.Errorf("%s:\nfast    %d %s\nlibrary %d %s", path, code, fast, libCode, lib)
				}
				if ct, libCT := header.Get("Content-Type"), libHeader.Get("Content-Type"); ct != libCT {
					t.Errorf("%s: Content-Type %q, library %q", path, ct, libCT)
				}
			}
		}
	}

	// The same request metrics, one request each way.
	path := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_utilization?labelSelector=app%3Dtrain"
	s0 := ts.requestSeries(t)
	ts.getWith(t, path, nil)
	s1 := ts.requestSeries(t)
	ts.getWith(t, path+"&pretty=false", nil)
	s2 := ts.requestSeries(t)
	fast, lib := changed(s0, s1), changed(s1, s2)
	slices.Sort(fast)
	slices.Sort(lib)
	if len(fast) == 0 || !slices.Equal(fast, lib) {
		t.Errorf("request metrics changed by the fast path:\n%s\nby the library:\n%s", strings.Join(fast, "\n"), strings.Join(lib, "\n"))
	}
}

// TestAnswersLeaveTheRestToTheLibrary checks that requests the kept answers
// do not serve reach the library.
func TestAnswersLeaveTheRestToTheLibrary(t *testing.T) {
	st, pods, _ := fixture(t)
	ts := startServer(t, Config{Metrics: st, Pods: pods}, true)
	p := ts.srv.provider
	tests := []struct {
		name, path string
		header     map[string]string
		wantCode   int
	}{
		{"a named pod", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/a/gpu_utilization", nil, http.StatusOK},
		{"protobuf", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_utilization?labelSelector=app%3Dtrain",
			map[string]string{"Accept": "application/vnd.kubernetes.protobuf"}, http.StatusOK},
		{"a bad selector", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_utilization?labelSelector=app%20in%20(", nil, http.StatusBadRequest},
		{"a metric label selector", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_utilization?metricLabelSelector=a%3Db", nil, http.StatusBadRequest},
		{"an unknown metric", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_temperature", nil, http.StatusNotFound},
		{"another resource", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/services/*/gpu_utilization", nil, http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := p.AnswerStats()
			code, _, body := ts.getWith(t, tc.path, tc.header)
			if code != tc.wantCode {
				t.Errorf("%s: HTTP %d (%s), want %d", tc.path, code, body, tc.wantCode)
			}
			if after := p.AnswerStats(); after.Hits != before.Hits || after.Rebuilt != before.Rebuilt {
				t.Errorf("%s went through the kept answers", tc.path)
			}
		})
	}
}

func TestAcceptsJSON(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, true},
		{[]string{"application/json"}, true},
		{[]string{"application/json, */*"}, true},
		{[]string{"application/json;q=0.9", "*/*;q=0.1"}, true},
		{[]string{"application/vnd.kubernetes.protobuf, application/json"}, false},
		{[]string{"application/json;as=Table;v=v1;g=meta.k8s.io"}, false},
		{[]string{"application/yaml"}, false},
		{[]string{"not a media type;;"}, false},
	}
	for _, tc := range tests {
		if got := acceptsJSON(tc.accept); got != tc.want {
			t.Errorf("acceptsJSON(%q) = %v, want %v", tc.accept, got, tc.want)
		}
	}
}
