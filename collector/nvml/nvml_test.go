package nvml

import (
	"errors"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// h100 returns go-nvml's mock DGX H100 (8 GPUs) with the fields its
// prebuilt fake leaves unset filled in per device, as a healthy idle node.
func h100(t testing.TB) *server.Server {
	t.Helper()
	s := dgxh100.New()
	for i, d := range s.Devices {
		healthyDevice(d.(*server.Device), i)
	}
	return s
}

func healthyDevice(d *server.Device, i int) {
	d.PciBusID = "00000000:" + string(rune('A'+i)) + "0:00.0"
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for j, c := range d.PciBusID {
			p.BusId[j] = int8(c)
		}
		return p, nvml.SUCCESS
	}
	d.MemoryInfo = nvml.Memory{Total: 80 << 30, Used: uint64(i+1) << 30, Free: 80<<30 - uint64(i+1)<<30}
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
	d.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return 987654321, nvml.SUCCESS }
	// An idle GPU: no process, no utilization sample.
	setProcesses(d, nil, nil, nil)
}

func TestNVMLSample(t *testing.T) {
	lib := h100(t)
	b, err := newBackend(lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
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
		if r.Device.Name != "NVIDIA H100 80GB HBM3" {
			t.Errorf("device %d name = %q", i, r.Device.Name)
		}
		if r.Device.PCIBusID != dev.PciBusID {
			t.Errorf("device %d bus id = %q, want %q", i, r.Device.PCIBusID, dev.PciBusID)
		}
		var want collector.Reading
		for f, v := range map[exposition.Field]float64{
			exposition.GPUUtil: float64(10 * i), exposition.MemCopyUtil: float64(i), exposition.EncUtil: 1, exposition.DecUtil: 2,
			exposition.FBUsed: float64(uint64(i+1) << 30), exposition.FBFree: float64(80<<30 - uint64(i+1)<<30),
			exposition.PowerUsage: 123.456, exposition.GPUTemp: 41, exposition.SMClock: 1980, exposition.MemClock: 2619,
			exposition.TotalEnergy: 987654321,
		} {
			want.Set(f, v)
		}
		if r.Reading != want {
			t.Errorf("device %d reading\n got %+v\nwant %+v", i, r.Reading, want)
		}
	}
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
