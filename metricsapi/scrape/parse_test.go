package scrape

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

var receipt = time.Date(2026, 3, 2, 16, 0, 4, 0, time.UTC)

const mib = 1 << 20

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortSamples(s []store.Sample) []store.Sample {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b store.Sample) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod),
			cmp.Compare(a.Container, b.Container), cmp.Compare(a.Device, b.Device))
	})
	return s
}

// sameSamples compares two sample sets in any order, values within a
// relative 1e-9 (float arithmetic of MiB and ratios).
func sameSamples(got, want []store.Sample) error {
	got, want = sortSamples(got), sortSamples(want)
	if len(got) != len(want) {
		return fmt.Errorf("got %d samples, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	near := func(a, b float64) bool { return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }
	for i := range got {
		g, w := got[i], want[i]
		if g.Node != w.Node || g.Namespace != w.Namespace || g.Pod != w.Pod || g.Container != w.Container || g.Device != w.Device ||
			!g.Time.Equal(w.Time) || g.Precedence != w.Precedence || g.Present != w.Present || !near(g.Utilization, w.Utilization) ||
			!near(g.MemoryUsedBytes, w.MemoryUsedBytes) || !near(g.MemoryTotalBytes, w.MemoryTotalBytes) ||
			!near(g.PowerWatts, w.PowerWatts) {
			return fmt.Errorf("sample %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	return nil
}

const allFields = store.FieldUtilization | store.FieldMemoryUsed | store.FieldMemoryTotal | store.FieldPower

func TestParseExpositions(t *testing.T) {
	agentTime := time.Unix(1772467203, 500_000_000)
	const (
		h100a = "GPU-8a1c6f0e-3b7d-4c52-9e1f-5d2a7b9c0e11"
		h100b = "GPU-2f6e9d3a-71c4-4b0e-8d25-c3a1e6f7b842"
		a100a = "GPU-5fd4e3f5-2d1b-8e3c-3a0b-1c2d3e4f5a6b"
		a100b = "GPU-0b7e2c44-9a61-45d3-8f02-6e1d9c3b7a55"
	)
	dcgmSamples := []store.Sample{
		{Namespace: "ml", Pod: "trainer-1", Container: "pytorch", Device: a100a, Time: receipt, Present: allFields,
			Utilization: 93, MemoryUsedBytes: 68380 * mib, MemoryTotalBytes: (68380 + 11903 + 637) * mib, PowerWatts: 287.131},
		{Namespace: "default", Pod: "notebook-7c9f5d8b6-x2kqp", Container: "jupyter", Device: a100b, Time: receipt, Present: allFields,
			Utilization: 0, MemoryUsedBytes: 3 * mib, MemoryTotalBytes: (3 + 80411 + 637) * mib, PowerWatts: 64.517},
	}
	tests := []struct {
		file      string
		want      []store.Sample
		wantStats ParseStats
	}{
		{
			// The agent: snapshot time from its timestamp series; a
			// time-sliced GPU gives both pods its numbers; the idle GPU
			// is no pod's.
			file: "agent.prom",
			want: []store.Sample{
				{Namespace: "ml", Pod: "trainer-0", Container: "trainer", Device: h100a, Time: agentTime, Precedence: store.PrecedenceAgent, Present: allFields,
					Utilization: 87, MemoryUsedBytes: 61440 * mib, MemoryTotalBytes: 81000 * mib, PowerWatts: 312.456},
				{Namespace: "web", Pod: "infer-a", Container: "server", Device: h100b, Time: agentTime, Precedence: store.PrecedenceAgent, Present: allFields,
					Utilization: 35, MemoryUsedBytes: 20480 * mib, MemoryTotalBytes: 81000 * mib, PowerWatts: 145.2},
				{Namespace: "web", Pod: "infer-b", Container: "server", Device: h100b, Time: agentTime, Precedence: store.PrecedenceAgent, Present: allFields,
					Utilization: 35, MemoryUsedBytes: 20480 * mib, MemoryTotalBytes: 81000 * mib, PowerWatts: 145.2},
			},
			wantStats: ParseStats{Series: 17, Samples: 3, NodeSamples: 3, Unattributed: 4, SnapshotTime: true},
		},
		{
			// The agent on an A100 in MIG mode: instances keyed by the
			// parent's UUID and GPU_I_ID as dcgm-exporter keys them,
			// memory only (no GPM); the parent's power is no pod's.
			file: "agent-mig.prom",
			want: []store.Sample{
				{Namespace: "ml", Pod: "tiny-0", Container: "app", Device: a100a + "/13", Time: agentTime, Precedence: store.PrecedenceAgent,
					Present: store.FieldMemoryUsed | store.FieldMemoryTotal, MemoryUsedBytes: 260 * mib, MemoryTotalBytes: 9735 * mib},
				{Namespace: "ml", Pod: "mid-0", Container: "app", Device: a100a + "/2", Time: agentTime, Precedence: store.PrecedenceAgent,
					Present: store.FieldMemoryUsed | store.FieldMemoryTotal, MemoryUsedBytes: 9900 * mib, MemoryTotalBytes: 39978 * mib},
			},
			wantStats: ParseStats{Series: 6, Samples: 2, NodeSamples: 1, Unattributed: 1, SnapshotTime: true},
		},
		{
			// dcgm-exporter read directly: receipt time, reserved memory
			// counts in the total, GPU_UTIL preferred over the engine ratio.
			file:      "dcgm-exporter.prom",
			want:      dcgmSamples,
			wantStats: ParseStats{Series: 18, Samples: 2, NodeSamples: 3, Unattributed: 6},
		},
		{
			// dcgm-exporter after Prometheus relabelling: exported_* name
			// the workload; the idle GPU, labelled with the exporter's own
			// pod, is no workload's.
			file:      "dcgm-exporter-relabelled.prom",
			want:      dcgmSamples,
			wantStats: ParseStats{Series: 18, Samples: 2, NodeSamples: 3, Unattributed: 6},
		},
		{
			// MIG instances: no GPU_UTIL, the engine activity instead; one
			// device per GPU instance of the same parent UUID.
			file: "dcgm-exporter-mig.prom",
			want: []store.Sample{
				{Namespace: "ml", Pod: "tiny-0", Container: "app", Device: a100a + "/13", Time: receipt, Present: allFields,
					Utilization: 25.4312, MemoryUsedBytes: 251 * mib, MemoryTotalBytes: 9735 * mib, PowerWatts: 98.4},
				{Namespace: "ml", Pod: "mid-0", Container: "app", Device: a100a + "/2", Time: receipt, Present: allFields,
					Utilization: 80.125, MemoryUsedBytes: 9876 * mib, MemoryTotalBytes: 39978 * mib, PowerWatts: 98.4},
			},
			wantStats: ParseStats{Series: 10, Samples: 2, NodeSamples: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body := readTestdata(t, tc.file)
			got, stats, err := NewParser().Parse(body, receipt)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameSamples(got, tc.want); err != nil {
				t.Error(err)
			}
			if stats != tc.wantStats {
				t.Errorf("stats = %+v, want %+v", stats, tc.wantStats)
			}
			// The reference parser agrees.
			ref, err := parseWithReference(body, receipt)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameSamples(ref, tc.want); err != nil {
				t.Errorf("reference parser: %v", err)
			}
		})
	}
}

// parseWithReference runs only the expfmt path.
func parseWithReference(body []byte, at time.Time) ([]store.Sample, error) {
	s, _, err := parseWithReferenceNodes(body, at)
	return s, err
}

// parseWithReferenceNodes runs only the expfmt path and returns the node
// samples too.
func parseWithReferenceNodes(body []byte, at time.Time) ([]store.Sample, []store.Sample, error) {
	var acc accumulator
	acc.reset()
	if err := parseReference(body, &acc); err != nil {
		return nil, nil, err
	}
	if acc.badTimestamp {
		return nil, nil, fmt.Errorf("bad timestamp")
	}
	return acc.finish(at), acc.nodes.samples, nil
}

func TestParseLines(t *testing.T) {
	const uuid = `UUID="GPU-1"`
	const owner = `,pod="p",namespace="ns",container="c"`
	one := func(present store.Fields, u, used, total, watts float64) []store.Sample {
		return []store.Sample{{Namespace: "ns", Pod: "p", Container: "c", Device: "GPU-1", Time: receipt, Present: present,
			Utilization: u, MemoryUsedBytes: used, MemoryTotalBytes: total, PowerWatts: watts}}
	}
	tests := []struct {
		name         string
		body         string
		want         []store.Sample
		wantFallback bool
		wantSkipped  int // Unattributed + Invalid
	}{
		{"empty body", "", nil, false, 0},
		{"comments only", "# hello\n#\n# HELP x y\n\n", nil, false, 0},
		{"plain line", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 42\n", one(store.FieldUtilization, 42, 0, 0, 0), false, 0},
		{"no final newline", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 42", one(store.FieldUtilization, 42, 0, 0, 0), false, 0},
		{"blanks everywhere", "  DCGM_FI_DEV_GPU_UTIL \t{ " + `UUID = "GPU-1" , pod="p",namespace="ns",container="c",` + " }\t42 1700000000000\n",
			one(store.FieldUtilization, 42, 0, 0, 0), false, 0},
		{"escaped label value", `DCGM_FI_DEV_GPU_UTIL{UUID="GPU-1",pod="p",namespace="ns",container="c\\\"\n"} 1` + "\n",
			[]store.Sample{{Namespace: "ns", Pod: "p", Container: "c\\\"\n", Device: "GPU-1", Time: receipt, Present: store.FieldUtilization, Utilization: 1}}, false, 0},
		{"other series skipped unparsed", "DCGM_FI_DEV_SM_CLOCK{this is not parsed} x\nDCGM_FI_DEV_POWER_USAGE{" + uuid + owner + "} 7.5\n",
			one(store.FieldPower, 0, 0, 0, 7.5), false, 0},
		{"used without free has no total", "DCGM_FI_DEV_FB_USED{" + uuid + owner + "} 2\n", one(store.FieldMemoryUsed, 0, 2*mib, 0, 0), false, 0},
		{"free alone is no sample", "DCGM_FI_DEV_FB_FREE{" + uuid + owner + "} 2\n", nil, false, 0},
		{"last duplicate wins", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 1\nDCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 2\n",
			one(store.FieldUtilization, 2, 0, 0, 0), false, 0},
		{"counter and untyped types carry values", "# TYPE DCGM_FI_DEV_GPU_UTIL counter\nDCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 3\n",
			one(store.FieldUtilization, 3, 0, 0, 0), false, 0},
		{"summary declared but empty is harmless", "# TYPE DCGM_FI_DEV_POWER_USAGE summary\nDCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 3\n",
			one(store.FieldUtilization, 3, 0, 0, 0), false, 0},
		{"no UUID", "DCGM_FI_DEV_GPU_UTIL{" + owner[1:] + "} 3\n", nil, false, 1},
		{"no pod", "DCGM_FI_DEV_GPU_UTIL{" + uuid + "} 3\n", nil, false, 1},
		{"exported pod without exported namespace", "DCGM_FI_DEV_GPU_UTIL{" + uuid + `,exported_pod="p",namespace="gpu-operator"} 3` + "\n", nil, false, 1},
		{"NaN utilization", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} NaN\n", nil, false, 1},
		{"utilization over 100", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 100.5\n", nil, false, 1},
		{"engine ratio over 1", "DCGM_FI_PROF_GR_ENGINE_ACTIVE{" + uuid + owner + "} 1.5\n", nil, false, 1},
		{"negative power", "DCGM_FI_DEV_POWER_USAGE{" + uuid + owner + "} -1\n", nil, false, 1},
		{"infinite memory", "DCGM_FI_DEV_FB_USED{" + uuid + owner + "} +Inf\n", nil, false, 1},
		{"two containers of a pod holding one device give one sample", "DCGM_FI_DEV_GPU_UTIL{" + uuid + `,pod="p",namespace="ns",container="b"} 7` + "\n" +
			"DCGM_FI_DEV_POWER_USAGE{" + uuid + `,pod="p",namespace="ns",container="a"} 9` + "\n" +
			"DCGM_FI_DEV_GPU_UTIL{" + uuid + `,pod="p",namespace="ns",container="a"} 7` + "\n",
			[]store.Sample{{Namespace: "ns", Pod: "p", Container: "a,b", Device: "GPU-1", Time: receipt, Present: store.FieldUtilization | store.FieldPower,
				Utilization: 7, PowerWatts: 9}}, false, 0},
		{"time-slicing replicas of one container give one sample", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + `,vgpu="0"} 7` + "\n" +
			"DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + `,vgpu="1"} 7` + "\n",
			one(store.FieldUtilization, 7, 0, 0, 0), false, 0},
		{"container names are a set", "DCGM_FI_DEV_GPU_UTIL{" + uuid + `,pod="p",namespace="ns",container="b,a"} 7` + "\n" +
			"DCGM_FI_DEV_GPU_UTIL{" + uuid + `,pod="p",namespace="ns"} 7` + "\n" +
			"DCGM_FI_DEV_GPU_UTIL{" + uuid + `,pod="p",namespace="ns",container="c"} 7` + "\n" +
			"DCGM_FI_DEV_GPU_UTIL{" + uuid + `,pod="p",namespace="ns",container="a"} 7` + "\n",
			[]store.Sample{{Namespace: "ns", Pod: "p", Container: "a,b,c", Device: "GPU-1", Time: receipt, Present: store.FieldUtilization, Utilization: 7}}, false, 0},
		{"GPU instances of one parent are two devices", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + `,GPU_I_ID="1"} 7` + "\n" +
			"DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + `,GPU_I_ID="2"} 8` + "\n",
			[]store.Sample{
				{Namespace: "ns", Pod: "p", Container: "c", Device: "GPU-1/1", Time: receipt, Present: store.FieldUtilization, Utilization: 7},
				{Namespace: "ns", Pod: "p", Container: "c", Device: "GPU-1/2", Time: receipt, Present: store.FieldUtilization, Utilization: 8},
			}, false, 0},
		{"snapshot timestamp makes the agent's precedence", "DCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 7\ngpu_metrics_server_sample_timestamp_seconds 1700000000.5\n",
			[]store.Sample{{Namespace: "ns", Pod: "p", Container: "c", Device: "GPU-1", Time: time.Unix(1700000000, 5e8), Precedence: store.PrecedenceAgent,
				Present: store.FieldUtilization, Utilization: 7}}, false, 0},
		{"quoted metric name falls back", `{"DCGM_FI_DEV_GPU_UTIL",` + uuid + owner + "} 5\n", one(store.FieldUtilization, 5, 0, 0, 0), true, 0},
		{"quoted label name falls back", `DCGM_FI_DEV_GPU_UTIL{"UUID"="GPU-1"` + owner + "} 5\n", one(store.FieldUtilization, 5, 0, 0, 0), true, 0},
		{"quoted name in TYPE falls back", `# TYPE "DCGM_FI_DEV_GPU_UTIL" gauge` + "\nDCGM_FI_DEV_GPU_UTIL{" + uuid + owner + "} 5\n",
			one(store.FieldUtilization, 5, 0, 0, 0), true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, stats, err := NewParser().Parse([]byte(tc.body), receipt)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameSamples(got, tc.want); err != nil {
				t.Error(err)
			}
			if stats.Fallback != tc.wantFallback {
				t.Errorf("Fallback = %v, want %v", stats.Fallback, tc.wantFallback)
			}
			if n := stats.Unattributed + stats.Invalid; n != tc.wantSkipped {
				t.Errorf("skipped %d lines (stats %+v), want %d", n, stats, tc.wantSkipped)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const line = `DCGM_FI_DEV_GPU_UTIL{UUID="GPU-1",pod="p",namespace="ns"}`
	tests := []struct {
		name, body, wantErr string
	}{
		{"value not a float", line + " abc\n", `line 1: expected float as value, got "abc"`},
		{"missing value", line + "\n", "expected float as value"},
		{"hex float", line + " 0x1p3\n", "expected float as value"},
		{"bad timestamp", line + " 1 12.5\n", "expected integer as timestamp"},
		{"trailing junk", line + " 1 12 x\n", "spurious string after timestamp"},
		{"trailing blank", line + " 1 \n", "expected integer as timestamp"},
		{"unterminated labels", `DCGM_FI_DEV_GPU_UTIL{UUID="GPU-1"` + "\n", "unexpected end of label set"},
		{"unterminated value", `DCGM_FI_DEV_GPU_UTIL{UUID="GPU-1` + "\n", "unexpected end of label value"},
		{"bad escape", `DCGM_FI_DEV_GPU_UTIL{UUID="GPU-1\x"} 1` + "\n", `invalid escape sequence '\x'`},
		{"label without value", `DCGM_FI_DEV_GPU_UTIL{UUID} 1` + "\n", "expected '=' after label name"},
		{"unquoted value", `DCGM_FI_DEV_GPU_UTIL{UUID=GPU} 1` + "\n", "expected '\"' at start of label value"},
		{"bad label name", `DCGM_FI_DEV_GPU_UTIL{1a="x"} 1` + "\n", "invalid label name"},
		{"junk after label value", `DCGM_FI_DEV_GPU_UTIL{UUID="x";pod="p"} 1` + "\n", "unexpected ';' after label value"},
		{"duplicate label", `DCGM_FI_DEV_GPU_UTIL{pod="a",pod="b"} 1` + "\n", "duplicate label names"},
		{"invalid UTF-8 value", "DCGM_FI_DEV_GPU_UTIL{pod=\"\xff\"} 1\n", "invalid label value"},
		{"invalid metric name", "# ok\n9abc 1\n", "line 2: invalid metric name"},
		{"summary with samples", "# TYPE DCGM_FI_DEV_GPU_UTIL summary\n" + line + " 1\n", `DCGM_FI_DEV_GPU_UTIL has type "summary", want gauge`},
		{"bad name in TYPE", "# TYPE DCGM_FI_DEV_GPU_UTIL{ gauge\n", "invalid metric name in comment"},
		{"bad snapshot timestamp", "gpu_metrics_server_sample_timestamp_seconds -5\n", "invalid gpu_metrics_server_sample_timestamp_seconds value"},
		{"reference error after fallback", "{\"DCGM_FI_DEV_GPU_UTIL\" 1\n", "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := NewParser().Parse([]byte(tc.body), receipt)
			if err == nil {
				t.Fatalf("Parse accepted %q, giving %+v", tc.body, got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestParserReuse(t *testing.T) {
	p := NewParser()
	first, _, err := p.Parse(readTestdata(t, "agent.prom"), receipt)
	if err != nil || len(first) != 3 {
		t.Fatalf("first Parse = %d samples, %v", len(first), err)
	}
	second, stats, err := p.Parse(readTestdata(t, "dcgm-exporter-mig.prom"), receipt)
	if err != nil || len(second) != 2 || stats.SnapshotTime {
		t.Fatalf("second Parse = %d samples, stats %+v, %v; want 2 samples without the first body's snapshot time", len(second), stats, err)
	}
	if !second[0].Time.Equal(receipt) {
		t.Errorf("second Parse kept the first body's timestamp: %v", second[0].Time)
	}
}

// TestParseFleetNode: one node of the fleet benchmark (hack/fleetsim, the
// agent's exposition: 8 GPUs, each held by one pod), whole with its
// self-metrics or with just the families the aggregator asks for, gives
// one sample per pod and GPU, as the reference parser does.
func TestParseFleetNode(t *testing.T) {
	for _, file := range []struct{ name, snapshot string }{
		{"fleet-node.prom", "1796047757554"}, {"fleet-node-read.prom", "1796049368412"},
	} {
		t.Run(file.name, func(t *testing.T) { testParseFleetNode(t, file.name, file.snapshot) })
	}
}

func testParseFleetNode(t *testing.T, file string, snapshotMillis string) {
	body := readTestdata(t, file)
	uuids := []string{
		"GPU-16ec7f62-54cc-961c-f251-540a2b7c95ab", "GPU-2f3eff0a-e2ac-f5f6-a3b7-72543c027fd3",
		"GPU-a74df3b1-f8d9-673c-0c1d-480574260132", "GPU-d3851c46-f7de-d273-fa64-f312c431f274",
		"GPU-6726eb8e-798e-daaf-4302-d17f874887b7", "GPU-508cfd3c-7b2e-5ac8-a849-93dd7349a621",
		"GPU-48f5f713-013e-bcf9-ce5b-f29f135b803a", "GPU-467c33f5-16d6-ad30-46d3-c3973a036085",
	}
	p := NewParser()
	got, stats, err := p.Parse(body, receipt)
	if err != nil {
		t.Fatal(err)
	}
	wantStats := ParseStats{Series: 49, Samples: 8, NodeSamples: 8, SnapshotTime: true}
	if stats != wantStats {
		t.Errorf("stats = %+v, want %+v", stats, wantStats)
	}
	ms, err := strconv.ParseInt(snapshotMillis, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := time.UnixMilli(ms)
	var want []store.Sample
	for i, uuid := range uuids {
		s := store.Sample{Namespace: "bench", Pod: fmt.Sprintf("fleet-node-0-gpu%d", i), Container: "main", Device: uuid,
			Time: snapshot, Precedence: store.PrecedenceAgent, Present: allFields,
			Utilization: 10, MemoryUsedBytes: 0, MemoryTotalBytes: (80978 + 581) * mib, PowerWatts: 133}
		if len(got) > i {
			// The snapshot time is a float of seconds: its millisecond,
			// not its nanoseconds.
			if d := got[i].Time.Sub(snapshot).Abs(); d < time.Millisecond {
				s.Time = got[i].Time
			}
		}
		want = append(want, s)
	}
	if err := sameSamples(got, want); err != nil {
		t.Error(err)
	}
	nodes := sortSamples(p.NodeSamples())
	ref, refNodes, err := parseWithReferenceNodes(body, receipt)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameSamples(got, ref); err != nil {
		t.Errorf("reference parser: %v", err)
	}
	if err := sameSamples(nodes, refNodes); err != nil {
		t.Errorf("reference parser's node samples: %v", err)
	}
	for _, n := range nodes {
		if n.Node != "fleet-node-0" || !slices.Contains(uuids, n.Device) {
			t.Errorf("node sample %+v: want node fleet-node-0 and one of the GPUs", n)
		}
	}
}

// TestParseRepeatedLabelSets: a label set seen before (the scanner parses
// each text once per body) gives what parsing it again gives, in any order
// of the families and sets, and a line that only starts like one, or
// whose label set ends in a later '}', is read as itself.
func TestParseRepeatedLabelSets(t *testing.T) {
	set := func(gpu, pod string) string {
		return `{UUID="GPU-` + gpu + `",pod="` + pod + `",namespace="ns",container="c",Hostname="n"}`
	}
	a, b, c := set("1", "p"), set("2", "q"), set("3", "r")
	tests := []struct {
		name, body string
		wantErr    string // "" when the reference's samples are wanted
	}{
		{"same order in every family", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_GPU_UTIL" + b + " 2\nDCGM_FI_DEV_GPU_UTIL" + c + " 3\n" +
			"DCGM_FI_DEV_POWER_USAGE" + a + " 4\nDCGM_FI_DEV_POWER_USAGE" + b + " 5\nDCGM_FI_DEV_POWER_USAGE" + c + " 6\n" +
			"DCGM_FI_DEV_FB_USED" + a + " 7\nDCGM_FI_DEV_FB_USED" + b + " 8 1700000000000\nDCGM_FI_DEV_FB_USED" + c + " 9\n", ""},
		{"another order, a set left out, a new one", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_GPU_UTIL" + b + " 2\n" +
			"DCGM_FI_DEV_POWER_USAGE" + b + " 5\nDCGM_FI_DEV_POWER_USAGE" + a + " 4\nDCGM_FI_DEV_POWER_USAGE" + c + " 6\n" +
			"DCGM_FI_DEV_FB_USED" + c + " 9\nDCGM_FI_DEV_FB_USED" + a + " 7\n", ""},
		{"the same set twice in a row", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_POWER_USAGE" + a + " 4\nDCGM_FI_DEV_FB_USED" + a + " 7\n", ""},
		{"a set and a longer one", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\n" +
			"DCGM_FI_DEV_POWER_USAGE" + a[:len(a)-1] + `,vgpu="1"}` + " 4\n", ""},
		{"blanks make another text of the same set", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\n" +
			"DCGM_FI_DEV_POWER_USAGE" + strings.ReplaceAll(a, ",", " , ") + " 4\n", ""},
		{"escaped values", "DCGM_FI_DEV_GPU_UTIL" + `{UUID="GPU-1",pod="p\"x",namespace="n\\s"} 1` + "\n" +
			"DCGM_FI_DEV_POWER_USAGE" + `{UUID="GPU-1",pod="p\"x",namespace="n\\s"} 2` + "\n", ""},
		{"a brace after the value", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_POWER_USAGE" + a + " 4 }\n",
			`line 2: expected integer as timestamp, got "}"`},
		{"a brace in a value after the set", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_POWER_USAGE" + a + " 4} 5\n",
			`line 2: expected float as value, got "4}"`},
		{"a bad set after a good one", "DCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_POWER_USAGE" + a[:len(a)-1] + `,pod="x"} 4` + "\n",
			`line 2: duplicate label names for metric "DCGM_FI_DEV_POWER_USAGE"`},
		{"a summary's set seen before", "# TYPE DCGM_FI_DEV_POWER_USAGE summary\nDCGM_FI_DEV_GPU_UTIL" + a + " 1\nDCGM_FI_DEV_POWER_USAGE" + a + " 4\n",
			`line 3: DCGM_FI_DEV_POWER_USAGE has type "summary", want gauge`},
	}
	p := NewParser()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Twice with one parser: nothing of a parse stays in the next.
			for range 2 {
				got, _, err := p.Parse([]byte(tc.body), receipt)
				if tc.wantErr != "" {
					if err == nil || err.Error() != tc.wantErr {
						t.Fatalf("Parse error = %v, want %s", err, tc.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				nodes := sortSamples(p.NodeSamples())
				want, wantNodes, err := parseWithReferenceNodes([]byte(tc.body), receipt)
				if err != nil {
					t.Fatal(err)
				}
				if len(want) == 0 {
					t.Fatal("the reference parser found no sample: a test of nothing")
				}
				if err := sameSamples(got, want); err != nil {
					t.Error(err)
				}
				if err := sameSamples(nodes, wantNodes); err != nil {
					t.Errorf("node samples: %v", err)
				}
			}
		})
	}
}

// TestParseSkipsFamiliesByName: a line of the family skipped just before is
// skipped on its name alone, and only a line of that very name.
func TestParseSkipsFamiliesByName(t *testing.T) {
	const owner = `{UUID="GPU-1",pod="p",namespace="ns",container="c"}`
	tests := []struct {
		name, body string
		wantUtil   float64 // the sample's utilization; -1: no sample
		wantErr    string
		fallback   bool
	}{
		{"a read family whose name starts with the skipped one", "DCGM_FI_DEV_GPU{x} 1\nDCGM_FI_DEV_GPU_UTIL" + owner + " 7\n", 7, "", false},
		{"the skipped name then a read family", "DCGM_FI_DEV_SM_CLOCK 1\nDCGM_FI_DEV_SM_CLOCK{x} 1\nDCGM_FI_DEV_GPU_UTIL" + owner + " 7\n", 7, "", false},
		{"the skipped name alone on a line", "DCGM_FI_DEV_SM_CLOCK{x} 1\nDCGM_FI_DEV_SM_CLOCK\nDCGM_FI_DEV_GPU_UTIL" + owner + " 7\n", 7, "", false},
		{"a skipped name then a quote falls back", "DCGM_FI_DEV_SM_CLOCK 1\nDCGM_FI_DEV_SM_CLOCK\"x\" 1\nDCGM_FI_DEV_GPU_UTIL" + owner + " 7\n", 7, "", true},
		{"a skipped name then a bad name", "DCGM_FI_DEV_SM_CLOCK 1\nDCGM_FI_DEV_SM_CLOCK 1\n9x 1\n", -1, "line 3: invalid metric name", false},
		{"the skipped name after blanks", "DCGM_FI_DEV_SM_CLOCK 1\n \tDCGM_FI_DEV_SM_CLOCK{x} 1\nDCGM_FI_DEV_GPU_UTIL" + owner + " 7\n", 7, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, stats, err := NewParser().Parse([]byte(tc.body), receipt)
			if stats.Fallback != tc.fallback {
				t.Errorf("Fallback = %v, want %v", stats.Fallback, tc.fallback)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse error = %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Utilization != tc.wantUtil {
				t.Errorf("samples %+v, want one of utilization %v", got, tc.wantUtil)
			}
		})
	}
}

// TestParseFloatIntegers: the integers read without strconv give what
// strconv gives.
func TestParseFloatIntegers(t *testing.T) {
	for _, s := range []string{"0", "7", "007", "80978", "999999999999999", "1000000000000000", "9007199254740993",
		"123456789012345678901234567890", "1e3", "1.5", "-3", "+3", "", "1_000", "0x10", "NaN"} {
		got, err := parseFloat([]byte(s))
		want, wantErr := strconv.ParseFloat(s, 64)
		if strings.ContainsAny(s, "pP_") {
			wantErr = errors.New("unsupported")
		}
		if (err != nil) != (wantErr != nil) || err == nil && !(got == want || math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("parseFloat(%q) = %v, %v; want %v, %v", s, got, err, want, wantErr)
		}
	}
}
