package nvml

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// h100 returns go-nvml's mock DGX H100 (8 GPUs) with the fields its
// prebuilt fake leaves unset filled in per device, as a healthy idle node:
// no GPM (newFakeGPM adds it), XID events through a fake event set.
func h100(t testing.TB) *server.Server { return h100Node(t).Server }

// node is a mock node and the fakes behind it.
type node struct {
	*server.Server
	fields []*fakeFields
	events *fakeEvents
}

func h100Node(t testing.TB) node {
	t.Helper()
	n := node{Server: dgxh100.New()}
	for i, d := range n.Devices {
		n.fields = append(n.fields, healthyDevice(d.(*server.Device), i))
	}
	n.events = fakeNode(t, n.Server)
	return n
}

// fakeNode sets what newBackend asks of the library beyond the devices: GPM
// support (none) and an event set whose events a test sends with
// fakeEvents.send.
func fakeNode(t testing.TB, s *server.Server) *fakeEvents {
	s.GpmQueryDeviceSupportFunc = func(nvml.Device) (nvml.GpmSupport, nvml.Return) {
		return nvml.GpmSupport{IsSupportedDevice: 0}, nvml.SUCCESS
	}
	s.NvmlVersion = "12.550.54.15"
	ev := &fakeEvents{t: t, events: make(chan nvml.EventData, 16), waitErr: make(chan nvml.Return, 16)}
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return ev.set(), nvml.SUCCESS }
	return ev
}

// fakeEvents is an NVML event set: Wait returns the events a test sends,
// or a scripted error, or times out.
type fakeEvents struct {
	t       testing.TB
	events  chan nvml.EventData
	waitErr chan nvml.Return
	mu      sync.Mutex
	waits   int
	freed   bool
	// order records Free and, through the library's Shutdown, the order
	// of the backend's cleanup.
	order []string
}

func (e *fakeEvents) set() nvml.EventSet {
	return &mock.EventSet{
		WaitFunc: func(timeout uint32) (nvml.EventData, nvml.Return) {
			e.mu.Lock()
			e.waits++
			if e.freed {
				e.t.Error("event set waited on after it was freed")
			}
			e.mu.Unlock()
			select {
			case d := <-e.events:
				return d, nvml.SUCCESS
			case ret := <-e.waitErr:
				return nvml.EventData{}, ret
			case <-time.After(time.Duration(min(timeout, 20)) * time.Millisecond):
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.freed = true
			e.order = append(e.order, "free event set")
			return nvml.SUCCESS
		},
	}
}

func (e *fakeEvents) send(d nvml.Device, xid uint64) {
	e.events <- nvml.EventData{Device: d, EventType: nvml.EventTypeXidCriticalError, EventData: xid}
}

// fieldValue is a scripted NVML field value: a value or an error.
type scriptedValue struct {
	v   uint64
	ret nvml.Return
}

// fakeFields scripts a device's nvmlDeviceGetFieldValues: the values by
// field id (an id not in the map answers NOT_SUPPORTED), each call one
// second after the previous; calls counts them and asked records the ids of
// the last one.
type fakeFields struct {
	values map[uint32]scriptedValue
	calls  int
	asked  []uint32
	usec   int64
}

func (f *fakeFields) get(req []nvml.FieldValue) nvml.Return {
	f.calls++
	f.usec += 1e6
	f.asked = f.asked[:0]
	for i := range req {
		r := &req[i]
		f.asked = append(f.asked, r.FieldId)
		sv, ok := f.values[r.FieldId]
		if !ok {
			r.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
			continue
		}
		r.NvmlReturn = uint32(sv.ret)
		r.ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_LONG_LONG)
		r.Timestamp = f.usec
		binary.NativeEndian.PutUint64(r.Value[:], sv.v)
	}
	return nvml.SUCCESS
}

// healthyFields are the field values of a healthy H100 with NVLink.
func healthyFields(i int) map[uint32]scriptedValue {
	return map[uint32]scriptedValue{
		nvml.FI_DEV_MEMORY_TEMP:                       {v: 45},
		nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION:          {v: 987654321},
		nvml.FI_DEV_PCIE_REPLAY_COUNTER:               {v: uint64(i)},
		nvml.FI_DEV_PERF_POLICY_POWER:                 {v: 1000},
		nvml.FI_DEV_PERF_POLICY_THERMAL:               {v: 2000},
		nvml.FI_DEV_PERF_POLICY_SYNC_BOOST:            {v: 0},
		nvml.FI_DEV_PERF_POLICY_BOARD_LIMIT:           {v: 0},
		nvml.FI_DEV_PERF_POLICY_LOW_UTILIZATION:       {v: 5000},
		nvml.FI_DEV_PERF_POLICY_RELIABILITY:           {v: 0},
		nvml.FI_DEV_ECC_SBE_VOL_TOTAL:                 {v: 3},
		nvml.FI_DEV_ECC_DBE_VOL_TOTAL:                 {v: 0},
		nvml.FI_DEV_ECC_SBE_AGG_TOTAL:                 {v: 7},
		nvml.FI_DEV_ECC_DBE_AGG_TOTAL:                 {v: 0},
		nvml.FI_DEV_RETIRED_SBE:                       {v: 0},
		nvml.FI_DEV_RETIRED_DBE:                       {v: 0},
		nvml.FI_DEV_RETIRED_PENDING:                   {v: 0},
		nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: {v: 1},
		nvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: {v: 2},
		nvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL:   {v: 3},
		nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: {v: 4},
		nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX:         {v: 1000},
		nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX:         {v: 3000},
		nvml.FI_DEV_NVLINK_LINK_COUNT:                 {v: 18},
		nvml.FI_DEV_REMAPPED_COR:                      {v: 2},
		nvml.FI_DEV_REMAPPED_UNC:                      {v: 1},
		nvml.FI_DEV_REMAPPED_FAILURE:                  {v: 0},
		nvml.FI_DEV_PCIE_COUNT_TX_BYTES:               {v: 1 << 30},
		nvml.FI_DEV_PCIE_COUNT_RX_BYTES:               {v: 2 << 30},
	}
}

func healthyDevice(d *server.Device, i int) *fakeFields {
	d.PciBusID = "00000000:" + string(rune('A'+i)) + "0:00.0"
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for j, c := range d.PciBusID {
			p.BusId[j] = int8(c)
		}
		return p, nvml.SUCCESS
	}
	d.MemoryInfo = nvml.Memory{Total: 80 << 30, Used: uint64(i+1) << 30, Free: 80<<30 - uint64(i+1)<<30}
	// v2 leaves the reserved 512 MiB out of the used memory.
	d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		m := d.MemoryInfo
		return nvml.Memory_v2{Total: m.Total, Reserved: 512 << 20, Used: m.Used - 512<<20, Free: m.Free}, nvml.SUCCESS
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: uint32(10 * i), Memory: uint32(i)}, nvml.SUCCESS
	}
	d.GetEncoderUtilizationFunc = func() (uint32, uint32, nvml.Return) { return 1, 167000, nvml.SUCCESS }
	d.GetDecoderUtilizationFunc = func() (uint32, uint32, nvml.Return) { return 2, 167000, nvml.SUCCESS }
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 123456, nvml.SUCCESS }
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 41, nvml.SUCCESS }
	d.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
		if c == nvml.CLOCK_SM {
			return 1980, nvml.SUCCESS
		}
		return 2619, nvml.SUCCESS
	}
	ff := &fakeFields{values: healthyFields(i)}
	d.GetFieldValuesFunc = ff.get
	// Bare metal: no vGPU licensing.
	d.GetGridLicensableFeaturesFunc = func() (nvml.GridLicensableFeatures, nvml.Return) {
		return nvml.GridLicensableFeatures{}, nvml.ERROR_NOT_SUPPORTED
	}
	d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	d.GetSerialFunc = func() (string, nvml.Return) { return fmt.Sprintf("165092300%04d", i), nvml.SUCCESS }
	d.GetVbiosVersionFunc = func() (string, nvml.Return) { return "96.00.99.00.01", nvml.SUCCESS }
	d.GetInforomImageVersionFunc = func() (string, nvml.Return) { return "G520.0200.00.05", nvml.SUCCESS }
	d.GetInforomVersionFunc = func(o nvml.InforomObject) (string, nvml.Return) {
		return fmt.Sprintf("inforom-%d", o), nvml.SUCCESS
	}
	// An idle GPU: no process, no utilization sample.
	setProcesses(d, nil, nil, nil)
	return ff
}

// TestNVMLSample reads a healthy DGX H100 without GPM for two rounds: every
// field NVML supplies, the counters' rates from the second round on, and the
// fields the GPUs do not have (vGPU licensing, profiling) absent.
func TestNVMLSample(t *testing.T) {
	n := h100Node(t)
	lib, ff := n.Server, n.fields
	b, err := newBackend(lib, Options{Labels: exposition.DefaultLabels()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for round := 1; round <= 2; round++ {
		readings, errs := b.Sample(time.Now())
		if len(errs) != 0 {
			t.Fatalf("errors: %v", errs)
		}
		if len(readings) != 8 {
			t.Fatalf("got %d readings, want 8", len(readings))
		}
		for i, r := range readings {
			dev := lib.Devices[i].(*server.Device)
			if r.Device.UUID != dev.UUID || r.Device.Index != i || r.Device.Minor != i {
				t.Errorf("device %d identity = %+v", i, r.Device)
			}
			if r.Device.Name != "NVIDIA H100 80GB HBM3" || r.Device.Profiling || r.Device.MIGInstances {
				t.Errorf("device %d = %+v", i, r.Device)
			}
			if r.Device.PCIBusID != dev.PciBusID {
				t.Errorf("device %d bus id = %q, want %q", i, r.Device.PCIBusID, dev.PciBusID)
			}
			if r.Device.Labels[exposition.DriverVersionLabel] != "550.54.15" || r.Device.Labels[exposition.SerialLabel] != "" {
				t.Errorf("device %d labels %q, want the driver version only", i, r.Device.Labels)
			}
			want := map[exposition.Field]float64{
				exposition.GPUUtil: float64(10 * i), exposition.MemCopyUtil: float64(i), exposition.EncUtil: 1, exposition.DecUtil: 2,
				exposition.FBUsed: float64(uint64(i+1)<<30 - 512<<20), exposition.FBFree: float64(80<<30 - uint64(i+1)<<30), exposition.FBReserved: 512 << 20,
				exposition.PowerUsage: 123.456, exposition.GPUTemp: 41, exposition.SMClock: 1980, exposition.MemClock: 2619,
				exposition.TotalEnergy: 987654321, exposition.MemoryTemp: 45, exposition.PCIeReplayCounter: float64(i),
				exposition.PowerViolation: 1000, exposition.ThermalViolation: 2000, exposition.SyncBoostViolation: 0,
				exposition.BoardLimitViolation: 0, exposition.LowUtilViolation: 5000, exposition.ReliabilityViolation: 0,
				exposition.ECCSBEVolatileTotal: 3, exposition.ECCDBEVolatileTotal: 0, exposition.ECCSBEAggregateTotal: 7, exposition.ECCDBEAggregateTotal: 0,
				exposition.RetiredPagesSBE: 0, exposition.RetiredPagesDBE: 0, exposition.RetiredPagesPending: 0,
				exposition.NVLinkCRCFlitErrors: 1, exposition.NVLinkCRCDataErrors: 2, exposition.NVLinkReplayErrors: 3, exposition.NVLinkRecoveryErrors: 4,
				exposition.CorrectableRemappedRows: 2, exposition.UncorrectableRemappedRows: 1, exposition.RowRemapFailure: 0,
				exposition.XIDErrors: 0,
			}
			if round == 2 {
				// 2000 + 6000 KiB in the second between the rounds: DCGM's
				// 8 "MiB/s"; 1 GB sent and nothing received over PCIe.
				want[exposition.NVLinkBandwidthTotal] = 8
				want[exposition.PCIeTXBytes] = 1e9
				want[exposition.PCIeRXBytes] = 0
			}
			if got, w := r.Reading, reading(want); got != w {
				t.Errorf("round %d device %d reading\n got %v\nwant %v", round, i, got.Fields(), w.Fields())
				for f, v := range want {
					if g, ok := got.Get(f); !ok || g != v {
						t.Errorf("  %s = %v (%v), want %v", f.Name(), g, ok, v)
					}
				}
			}
		}
		for i, f := range ff {
			if f.calls != round {
				t.Errorf("device %d: %d field-value calls after %d rounds, want one per round", i, f.calls, round)
			}
			f.values[nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX] = scriptedValue{v: 3000}
			f.values[nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX] = scriptedValue{v: 9000}
			f.values[nvml.FI_DEV_PCIE_COUNT_TX_BYTES] = scriptedValue{v: 1<<30 + 1e9}
		}
	}
}

// reading sets the given fields.
func reading(values map[exposition.Field]float64) collector.Reading {
	var r collector.Reading
	for f, v := range values {
		r.Set(f, v)
	}
	return r
}

func TestNVMLDeviceFaults(t *testing.T) {
	tests := []struct {
		name string
		// break_ modifies device 1 of the 8.
		break_ func(d *server.Device, calls *int)
		// wantDevices per round, over two rounds.
		wantDevices [2]int
		wantLost    bool
		check       func(t *testing.T, readings []collector.DeviceReading, calls int)
	}{
		{
			name: "erroring device is dropped, others report",
			break_: func(d *server.Device, calls *int) {
				d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
					*calls++
					return nvml.Utilization{}, nvml.ERROR_UNKNOWN
				}
			},
			wantDevices: [2]int{7, 7},
			check: func(t *testing.T, _ []collector.DeviceReading, calls int) {
				if calls != 2 {
					t.Errorf("failing device asked %d times over 2 rounds, want 2 (a transient error is retried)", calls)
				}
			},
		},
		{
			name: "lost GPU is dropped for good",
			break_: func(d *server.Device, calls *int) {
				d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
					*calls++
					return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST
				}
			},
			wantDevices: [2]int{7, 7},
			wantLost:    true,
			check: func(t *testing.T, _ []collector.DeviceReading, calls int) {
				if calls != 1 {
					t.Errorf("lost device asked %d times, want 1", calls)
				}
			},
		},
		{
			name: "unsupported field is absent, not zero, and not asked again",
			break_: func(d *server.Device, calls *int) {
				d.GetEncoderUtilizationFunc = func() (uint32, uint32, nvml.Return) {
					*calls++
					return 0, 0, nvml.ERROR_NOT_SUPPORTED
				}
			},
			wantDevices: [2]int{8, 8},
			check: func(t *testing.T, readings []collector.DeviceReading, calls int) {
				if calls != 1 {
					t.Errorf("unsupported field asked %d times, want 1", calls)
				}
				if readings[1].Reading.Fields().Has(exposition.EncUtil) {
					t.Error("device 1 reports an encoder utilization it does not support")
				}
				if !readings[1].Reading.Fields().Has(exposition.GPUUtil) || !readings[0].Reading.Fields().Has(exposition.EncUtil) {
					t.Error("other fields or devices lost")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := h100(t)
			var calls int
			tt.break_(lib.Devices[1].(*server.Device), &calls)
			b, err := newBackend(lib, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var readings []collector.DeviceReading
			for round := 0; round < 2; round++ {
				var errs []collector.DeviceError
				readings, errs = b.Sample(time.Now())
				if len(readings) != tt.wantDevices[round] {
					t.Fatalf("round %d: %d devices, want %d", round, len(readings), tt.wantDevices[round])
				}
				for _, r := range readings {
					if r.Device.UUID == lib.Devices[1].(*server.Device).UUID && tt.wantDevices[round] < 8 {
						t.Fatalf("round %d: failing device still reported", round)
					}
				}
				if tt.wantDevices[round] < 8 && round == 0 {
					if len(errs) != 1 || errs[0].Lost != tt.wantLost || errs[0].Device != lib.Devices[1].(*server.Device).UUID {
						t.Fatalf("round 0 errors = %+v", errs)
					}
				}
			}
			tt.check(t, readings, calls)
		})
	}
}

func TestNVMLLibraryMissing(t *testing.T) {
	// Only Init is set: any other NVML call would panic on the nil mock
	// function, proving nothing touches NVML after a failed Init.
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	_, err := newBackend(lib, Options{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	lib.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
	if _, err := newBackend(lib, Options{}); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("driver not loaded: err = %v", err)
	}
}

func TestNVMLUnidentifiableDeviceSkipped(t *testing.T) {
	lib := h100(t)
	lib.Devices[3].(*server.Device).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
	b, err := newBackend(lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	readings, errs := b.Sample(time.Now())
	if len(readings) != 7 || len(errs) != 0 {
		t.Fatalf("readings %d errs %v, want 7 and none", len(readings), errs)
	}
}

// BenchmarkNVMLRoundDefaultFields is one sampling round of the built-in
// field list on go-nvml's mock DGX H100 with GPM (the Hopper path: one
// field-value call, one GPM sample and metrics call per GPU, the XID
// watcher running); ns/GPU is the round's cost per GPU.
func BenchmarkNVMLRoundDefaultFields(b *testing.B) {
	n := h100Node(b)
	newFakeGPM(b, n.Server, true)
	be, err := newBackend(n.Server, Options{Fields: counters.Default().Fields, Labels: exposition.DefaultLabels()})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := be.Sample(now); len(r) != 8 {
			b.Fatal(len(r))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/8, "ns/GPU")
}

func BenchmarkNVMLSample8(b *testing.B) {
	be, err := newBackend(h100(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := be.Sample(now); len(r) != 8 {
			b.Fatal(len(r))
		}
	}
}
