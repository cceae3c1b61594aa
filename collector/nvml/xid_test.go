package nvml

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	itestutil "github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// TestXIDWatcherSetup: without an event set, or with no GPU able to
// register XID events, no watcher runs and the XID field is absent (not 0)
// while the other fields stand.
func TestXIDWatcherSetup(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(n node)
		// freed: the event set was created and must be freed.
		freed bool
	}{
		{"the event set cannot be created", func(n node) {
			n.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_UNKNOWN }
		}, false},
		{"no GPU can register XID events", func(n node) {
			for _, d := range n.Devices {
				d.(*server.Device).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := h100Node(t)
			tt.break_(n)
			b, err := newBackend(n.Server, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.xid != nil {
				t.Error("an XID watcher runs")
			}
			n.events.mu.Lock()
			freed, waits := n.events.freed, n.events.waits
			n.events.mu.Unlock()
			if freed != tt.freed || waits != 0 {
				t.Errorf("event set freed %v (want %v), waited on %d times", freed, tt.freed, waits)
			}
			r, errs := b.Sample(time.Now())
			if len(errs) != 0 || len(r) != 8 {
				t.Fatalf("%d readings, errors %v", len(r), errs)
			}
			for i, d := range r {
				if d.Reading.Fields().Has(exposition.XIDErrors) || !d.Reading.Fields().Has(exposition.GPUUtil) {
					t.Errorf("GPU %d fields %v: want every field but the XID", i, d.Reading.Fields())
				}
			}
		})
	}
}

// TestXIDEventFilter: events that are not XIDs, and XIDs of a device the
// agent does not read, change no GPU's XID and are not counted.
func TestXIDEventFilter(t *testing.T) {
	n := h100Node(t)
	b, err := newBackend(n.Server, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n.events.events <- nvml.EventData{Device: n.Devices[3], EventType: nvml.EventTypeSingleBitEccError, EventData: 5}
	n.events.events <- nvml.EventData{Device: &mock.Device{}, EventType: nvml.EventTypeXidCriticalError, EventData: 13}
	n.events.send(n.Devices[3], 31)
	xid := func(i int) float64 {
		r, _ := b.Sample(time.Now())
		v, _ := r[i].Reading.Get(exposition.XIDErrors)
		return v
	}
	// One goroutine takes the events in order: once the last shows, the
	// others were taken.
	itestutil.Eventually(t, "XID 31 on GPU 3", func() bool { return xid(3) == 31 })
	for i := range 8 {
		if v := xid(i); i != 3 && v != 0 {
			t.Errorf("GPU %d XID %v, want 0", i, v)
		}
	}
	if got := testutil.ToFloat64(b.xid.events); got != 1 {
		t.Errorf("%v XID events counted, want 1", got)
	}
}

func TestFieldFloat(t *testing.T) {
	put64 := func(typ nvml.ValueType, u uint64) nvml.FieldValue {
		fv := nvml.FieldValue{ValueType: uint32(typ)}
		binary.NativeEndian.PutUint64(fv.Value[:], u)
		return fv
	}
	tests := []struct {
		name string
		fv   nvml.FieldValue
		want any // nil: no value
	}{
		{"double", put64(nvml.VALUE_TYPE_DOUBLE, math.Float64bits(45.5)), 45.5},
		{"double NaN", put64(nvml.VALUE_TYPE_DOUBLE, math.Float64bits(math.NaN())), nil},
		{"double +Inf", put64(nvml.VALUE_TYPE_DOUBLE, math.Float64bits(math.Inf(1))), nil},
		{"unsigned int", put64(nvml.VALUE_TYPE_UNSIGNED_INT, 0xdead_0000_0000_0007), 7.0},
		{"unsigned long", put64(nvml.VALUE_TYPE_UNSIGNED_LONG, 1<<40), float64(1 << 40)},
		{"unsigned long long", put64(nvml.VALUE_TYPE_UNSIGNED_LONG_LONG, 1<<63), float64(1 << 63)},
		{"signed long long", put64(nvml.VALUE_TYPE_SIGNED_LONG_LONG, math.MaxUint64), -1.0},
		{"signed int", put64(nvml.VALUE_TYPE_SIGNED_INT, 0xffff_fffe), -2.0},
		{"unsigned short", put64(nvml.VALUE_TYPE_UNSIGNED_SHORT, 0x1_0009), 9.0},
		{"unknown type", put64(nvml.ValueType(99), 1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := fieldFloat(&tt.fv)
			if ok != (tt.want != nil) || (ok && v != tt.want.(float64)) {
				t.Errorf("fieldFloat = %v (%v), want %v", v, ok, tt.want)
			}
		})
	}
}

func TestBrandName(t *testing.T) {
	tests := []struct {
		brand nvml.BrandType
		want  string
	}{
		{nvml.BRAND_TESLA, "Tesla"},
		{nvml.BRAND_NVIDIA, "NVIDIA"},
		{nvml.BRAND_NVIDIA_VCS, "NVIDIA Virtual Compute Server"},
		{nvml.BRAND_GEFORCE_RTX, "GeForce RTX"},
		{nvml.BRAND_UNKNOWN, "Unknown"},
		{nvml.BrandType(999), "Unknown"},
	}
	for _, tt := range tests {
		if got := brandName(tt.brand); got != tt.want {
			t.Errorf("brandName(%d) = %q, want %q", tt.brand, got, tt.want)
		}
	}
}
