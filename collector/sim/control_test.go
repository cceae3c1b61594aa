package sim

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
)

func TestParseRequest(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	m := func(v uint64) *uint64 { return &v }
	b := func(v bool) *bool { return &v }
	tests := []struct {
		query   string
		want    Request
		wantErr string // a part of the error; "" for none
	}{
		{query: "gpu=all&utilization=55", want: Request{GPU: AllGPUs, Update: Update{Utilization: f(55)}}},
		{query: "gpu=1&utilization=0&memory_used_mib=100", want: Request{GPU: 1, Update: Update{Utilization: f(0), MemoryUsedBytes: m(100 * mib)}}},
		{query: "gpu=1&gpu_i_id=3&memory_used_mib=0", want: Request{GPU: 1, GPUInstance: gi(3), Update: Update{MemoryUsedBytes: m(0)}}},
		{query: "gpu=0&pod=inf/a&pod_uid=u&utilization=100", want: Request{GPU: 0, Pod: collector.PodRef{Namespace: "inf", Name: "a", UID: "u"}, Update: Update{Utilization: f(100)}}},
		{query: "gpu=0&pod_uid=u&utilization=1&node=7", want: Request{GPU: 0, Pod: collector.PodRef{UID: "u"}, Update: Update{Utilization: f(1)}}},
		{query: "utilization=1", wantErr: "missing gpu"},
		{query: "gpu=2&utilization=1", wantErr: `gpu="2": want an index below 2`},
		{query: "gpu=-1&utilization=1", wantErr: `gpu="-1"`},
		{query: "gpu=one&utilization=1", wantErr: `gpu="one"`},
		{query: "gpu=0", wantErr: "missing utilization"},
		{query: "gpu=0&utilization=100.5", wantErr: "utilization="},
		{query: "gpu=0&utilization=NaN", wantErr: "utilization="},
		{query: "gpu=0&utilization=-0.1", wantErr: "utilization="},
		{query: "gpu=0&memory_used_mib=-1", wantErr: "memory_used_mib="},
		{query: "gpu=0&memory_used_mib=1.5", wantErr: "memory_used_mib="},
		{query: "gpu=0&memory_used_mib=1099511627777", wantErr: "memory_used_mib="},
		{query: "gpu=0&pod=inf&utilization=1", wantErr: "pod="},
		{query: "gpu=0&pod=/a&utilization=1", wantErr: "pod="},
		{query: "gpu=0&pod=a/b/c&utilization=1", wantErr: "pod="},
		{query: "gpu=all&pod=a/b&utilization=1", wantErr: "one GPU index"},
		{query: "gpu=all&gpu_i_id=3&utilization=1", wantErr: "gpu_i_id="},
		{query: "gpu=1&gpu_i_id=x&utilization=1", wantErr: "gpu_i_id="},
		{query: "gpu=1&gpu_i_id=-2&utilization=1", wantErr: "gpu_i_id="},
		{query: "gpu=1&gpu_i_id=3&pod=a/b&utilization=1", wantErr: "do not go together"},
		{query: "gpu=1&xid=79", want: Request{GPU: 1, Update: Update{XID: m(79)}}},
		{query: "gpu=all&correctable_remapped_rows=3&uncorrectable_remapped_rows=1&row_remap_failure=true",
			want: Request{GPU: AllGPUs, Update: Update{CorrectableRemappedRows: m(3), UncorrectableRemappedRows: m(1), RowRemapFailure: b(true)}}},
		{query: "gpu=0&row_remap_failure=0&utilization=5", want: Request{GPU: 0, Update: Update{Utilization: f(5), RowRemapFailure: b(false)}}},
		{query: "gpu=0&xid=-1", wantErr: "xid="},
		{query: "gpu=0&xid=65537", wantErr: "xid="},
		{query: "gpu=0&xid=7.5", wantErr: "xid="},
		{query: "gpu=0&correctable_remapped_rows=x", wantErr: "correctable_remapped_rows="},
		{query: "gpu=0&uncorrectable_remapped_rows=4294967297", wantErr: "uncorrectable_remapped_rows="},
		{query: "gpu=0&row_remap_failure=maybe", wantErr: "row_remap_failure="},
		{query: "gpu=1&gpu_i_id=3&xid=13", wantErr: "whole GPU"},
		{query: "gpu=0&pod=a/b&correctable_remapped_rows=1", wantErr: "whole GPU"},
		{query: "gpu=1&lost=true", want: Request{GPU: 1, Update: Update{Lost: b(true)}}},
		{query: "gpu=all&lost=1", want: Request{GPU: AllGPUs, Update: Update{Lost: b(true)}}},
		{query: "gpu=0&lost=false", wantErr: "lost="},
		{query: "gpu=0&lost=gone", wantErr: "lost="},
		{query: "gpu=1&gpu_i_id=3&lost=true", wantErr: "whole GPU"},
		{query: "gpu=0&pod=a/b&lost=true", wantErr: "whole GPU"},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseRequest(q, 2)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("?%s: error %v, want one with %q", tt.query, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("?%s: %v", tt.query, err)
		case fmtRequest(got) != fmtRequest(tt.want):
			t.Errorf("?%s: %s, want %s", tt.query, fmtRequest(got), fmtRequest(tt.want))
		}
	}
}

// fmtRequest shows a request with the values its pointers point to.
func fmtRequest(r Request) string {
	deref := func(p any) string {
		switch v := p.(type) {
		case *int:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *float64:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *uint64:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *bool:
			if v != nil {
				return fmt.Sprint(*v)
			}
		}
		return "-"
	}
	u := r.Update
	return fmt.Sprintf("gpu %d instance %s pod %+v utilization %s memory %s xid %s rows %s/%s failure %s lost %s", r.GPU, deref(r.GPUInstance), r.Pod,
		deref(u.Utilization), deref(u.MemoryUsedBytes), deref(u.XID), deref(u.CorrectableRemappedRows), deref(u.UncorrectableRemappedRows), deref(u.RowRemapFailure),
		deref(u.Lost))
}

// TestCheck: Check answers as Apply would, and changes nothing.
func TestCheck(t *testing.T) {
	s, err := New("n", 2, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	f := func(v float64) *float64 { return &v }
	m := func(v uint64) *uint64 { return &v }
	tests := []struct {
		name string
		r    Request
		ok   bool
	}{
		{"every GPU", Request{GPU: AllGPUs, Update: Update{Utilization: f(50), MemoryUsedBytes: m(mib)}}, true},
		{"a MIG instance", Request{GPU: 1, GPUInstance: gi(3), Update: Update{Utilization: f(50)}}, true},
		{"a pod's process", Request{GPU: 0, Pod: collector.PodRef{UID: "u"}, Update: Update{Utilization: f(50)}}, true},
		{"memory beyond a MIG instance", Request{GPU: 1, Update: Update{MemoryUsedBytes: m(20000 * mib)}}, false},
		{"no such instance", Request{GPU: 1, GPUInstance: gi(4), Update: Update{Utilization: f(1)}}, false},
		{"a pod on a MIG GPU", Request{GPU: 1, Pod: collector.PodRef{UID: "u"}, Update: Update{Utilization: f(1)}}, false},
		{"GPU out of range", Request{GPU: 2, Update: Update{Utilization: f(1)}}, false},
		{"utilization out of range", Request{GPU: 0, Update: Update{Utilization: f(101)}}, false},
	}
	now := time.Unix(100, 0)
	before, _ := s.Sample(now)
	for _, tt := range tests {
		if err := s.Check(tt.r); (err == nil) != tt.ok {
			t.Errorf("%s: Check = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	after, _ := s.Sample(now)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("Check changed the simulation:\n%v\n%v", before, after)
	}
	for _, tt := range tests {
		if err := s.Apply(tt.r); (err == nil) != tt.ok {
			t.Errorf("%s: Apply = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	if after, _ := s.Sample(now); fmt.Sprint(before) == fmt.Sprint(after) {
		t.Error("Apply changed nothing")
	}
}
