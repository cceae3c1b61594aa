//go:build e2e && benchcompare

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// queryTimeout bounds one query of the load generator and the poller.
const queryTimeout = 10 * time.Second

// procStat is one reading of a process's /proc counters.
type procStat struct {
	at      time.Time
	cpu     time.Duration // user + system
	rssKiB  uint64        // VmRSS
	anonKiB uint64        // RssAnon: heap, stacks, runtime
	hwmKiB  uint64        // VmHWM: peak RSS
}

// readProcStat reads pid's CPU time and memory from /proc.
func readProcStat(pid int) (procStat, error) {
	st := procStat{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'. utime and stime are fields 14 and 15 (1-based).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return st, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	var ticks uint64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	st.cpu = time.Duration(ticks) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch name {
		case "VmRSS":
			dst = &st.rssKiB
		case "RssAnon":
			dst = &st.anonKiB
		case "VmHWM":
			dst = &st.hwmKiB
		default:
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/%d/status %s: %w", pid, name, err)
		}
		*dst = n
	}
	return st, nil
}

// footprint is the summed RSS and CPU rate of some processes over a
// window.
type footprint struct {
	RSSMiB, AnonMiB, PeakMiB float64
	// Millicores is the CPU time used over the window per second of it.
	Millicores float64
	Window     time.Duration
}

// footprintMeter measures processes between start and stop.
type footprintMeter struct {
	procs []*framework.Process
	start []procStat
}

// meter reads the processes' counters now.
func meter(procs []*framework.Process) (*footprintMeter, error) {
	m := &footprintMeter{procs: procs}
	for _, p := range procs {
		st, err := readProcStat(p.Pid())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		m.start = append(m.start, st)
	}
	return m, nil
}

// stop reads the counters again and returns the footprint since meter.
func (m *footprintMeter) stop() (footprint, error) {
	var fp footprint
	var cpu time.Duration
	for i, p := range m.procs {
		st, err := readProcStat(p.Pid())
		if err != nil {
			return fp, fmt.Errorf("%s: %w", p.Name, err)
		}
		cpu += st.cpu - m.start[i].cpu
		fp.RSSMiB += float64(st.rssKiB) / 1024
		fp.AnonMiB += float64(st.anonKiB) / 1024
		fp.PeakMiB += float64(st.hwmKiB) / 1024
		fp.Window = max(fp.Window, st.at.Sub(m.start[i].at))
	}
	if fp.Window > 0 {
		fp.Millicores = 1000 * cpu.Seconds() / fp.Window.Seconds()
	}
	return fp, nil
}

// apiClient is an HTTP/2 client of the kube-apiserver presenting the admin
// certificate, as client-go would talk to it.
func apiClient() (*http.Client, error) {
	tlsConfig, err := rest.TLSConfigFor(cluster.RESTConfig)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: queryTimeout, Transport: &http.Transport{
		TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16,
	}}, nil
}

// selectorURL is the HPA's query: gpu_utilization of the namespace's pods
// matching selector, in v1beta2 (the HPA controller's preferred version),
// through the kube-apiserver's aggregation layer.
func selectorURL(namespace, selector string) string {
	return fmt.Sprintf("%s/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s?labelSelector=%s",
		cluster.RESTConfig.Host, namespace, framework.MetricName, url.QueryEscape(selector))
}

// metricItem is what the benchmark reads of a MetricValue.
type metricItem struct {
	DescribedObject struct {
		Name string `json:"name"`
	} `json:"describedObject"`
	Timestamp     time.Time `json:"timestamp"`
	WindowSeconds *int64    `json:"windowSeconds"`
	Value         string    `json:"value"`
}

// getValues runs one selector query and returns the items.
func getValues(ctx context.Context, client *http.Client, u string) ([]metricItem, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var list struct {
		Items []metricItem `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// observation is one poll of the pods' values.
type observation struct {
	at     time.Time // when the answer arrived
	values map[string]float64
}

// poller queries the values of some pods at a fixed period.
type poller struct {
	mu     sync.Mutex
	obs    []observation
	errors int
	last   error
}

// startPoller polls u every period until ctx ends.
func startPoller(ctx context.Context, client *http.Client, u string, period time.Duration) *poller {
	p := &poller{}
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			items, err := getValues(ctx, client, u)
			at := time.Now()
			p.mu.Lock()
			if err != nil {
				p.errors++
				p.last = err
			} else {
				values := make(map[string]float64, len(items))
				for _, it := range items {
					if v, err := parseQuantity(it.Value); err == nil {
						values[it.DescribedObject.Name] = v
					}
				}
				p.obs = append(p.obs, observation{at: at, values: values})
			}
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// parseQuantity reads a resource.Quantity string such as "90" or "89500m".
func parseQuantity(s string) (float64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, err
	}
	return q.AsApproximateFloat64(), nil
}

// firstAfter returns how long after since the pod's value first satisfied
// ok, and whether it did.
func (p *poller) firstAfter(pod string, since time.Time, ok func(float64) bool) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.obs {
		if !o.at.After(since) {
			continue
		}
		if v, has := o.values[pod]; has && ok(v) {
			return o.at.Sub(since), true
		}
	}
	return 0, false
}

// latency is the result of one load run.
type latency struct {
	Pods   int
	Rate   float64 // offered queries per second
	Sent   int
	Failed int // errors, timeouts and answers without every pod
	// FirstFailure is the error of one failed query, for the log.
	FirstFailure string
	P50          time.Duration
	P99          time.Duration
	Max          time.Duration
	Elapsed      time.Duration
	// ServerMillicores and APIServerMillicores are the CPU the pipeline's
	// processes and the kube-apiserver used during the run.
	ServerMillicores, APIServerMillicores float64
	// Unanswered, when set, says why no run took place: the pipeline gave
	// no complete answer to a single query.
	Unanswered string
}

// probeTimeout bounds the single query that decides whether a pipeline
// answers for a group of pods at all.
const probeTimeout = time.Minute

// waitServed waits until one query of u answers all pods, retrying an
// incomplete answer every 2 s until timeout; a query that times out
// (probeTimeout) ends the wait: the pipeline does not answer in useful
// time. It does not fail the test: the caller reports the error instead of
// the pipeline's figures.
func waitServed(ctx context.Context, u string, pods int, timeout time.Duration) error {
	client, err := apiClient()
	if err != nil {
		return err
	}
	client.Timeout = probeTimeout
	last := errors.New("no query answered yet")
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(context.Context) (bool, error) {
		// Each query runs to its own timeout, even past the deadline,
		// so that the last state says what the pipeline answers.
		start := time.Now()
		items, err := getValues(ctx, client, u)
		switch {
		case err == nil && len(items) == pods:
			return true, nil
		case err != nil && time.Since(start) >= probeTimeout:
			return false, fmt.Errorf("a single query got no answer within %v: %w", probeTimeout, err)
		case err != nil:
			last = err
		default:
			last = fmt.Errorf("the last had %d of %d pods", len(items), pods)
		}
		return false, nil
	})
	if err != nil && wait.Interrupted(err) && ctx.Err() == nil {
		return fmt.Errorf("no complete answer within %v: %w", timeout, last)
	}
	return err
}

// measuredLoad runs loadQueries and records the CPU of procs (the
// pipeline) and of the kube-apiserver meanwhile.
func measuredLoad(ctx context.Context, client *http.Client, u string, pods int, rate float64, d time.Duration, procs []*framework.Process) (latency, error) {
	server, err := meter(procs)
	if err != nil {
		return latency{}, err
	}
	apiserver, err := meter([]*framework.Process{cluster.APIServer})
	if err != nil {
		return latency{}, err
	}
	l := loadQueries(ctx, client, u, pods, rate, d)
	fs, err := server.stop()
	if err != nil {
		return l, err
	}
	fa, err := apiserver.stop()
	if err != nil {
		return l, err
	}
	l.ServerMillicores, l.APIServerMillicores = fs.Millicores, fa.Millicores
	return l, nil
}

// loadQueries offers rate queries per second of u for d (open loop: a slow
// answer does not delay the next query), each expecting pods items, and
// waits for every answer. A failed query counts with the time it took.
func loadQueries(ctx context.Context, client *http.Client, u string, pods int, rate float64, d time.Duration) latency {
	res := latency{Pods: pods, Rate: rate}
	n := int(rate * d.Seconds())
	took := make([]time.Duration, n)
	failed := make([]bool, n)
	var firstFailure sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	sent := 0
	for i := range n {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		sent++
		wg.Go(func() {
			t0 := time.Now()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err == nil {
				var resp *http.Response
				resp, err = client.Do(req)
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if err == nil && (resp.StatusCode != http.StatusOK || bytes.Count(body, []byte(`"describedObject"`)) != pods) {
						err = fmt.Errorf("status %d, %d items", resp.StatusCode, bytes.Count(body, []byte(`"describedObject"`)))
					}
				}
			}
			took[i] = time.Since(t0)
			failed[i] = err != nil
			if err != nil {
				firstFailure.Do(func() { res.FirstFailure = err.Error() })
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	took, failed = took[:sent], failed[:sent]
	res.Sent = sent
	for _, f := range failed {
		if f {
			res.Failed++
		}
	}
	slices.Sort(took)
	res.P50, res.P99, res.Max = quantile(took, 0.5), quantile(took, 0.99), quantile(took, 1)
	return res
}

// quantile returns the q-quantile (nearest rank) of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// summary is the median and maximum of some durations, and how many of
// the expected ones there are.
type summary struct {
	Median, Max time.Duration
	N, Of       int
}

func summarize(ds []time.Duration, of int) summary {
	s := summary{N: len(ds), Of: of}
	if len(ds) == 0 {
		return s
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	m := len(sorted) / 2
	s.Median = sorted[m]
	if len(sorted)%2 == 0 {
		s.Median = (sorted[m-1] + sorted[m]) / 2
	}
	s.Max = sorted[len(sorted)-1]
	return s
}
