package podmap

import (
	"errors"
	"strings"
	"testing"
)

const (
	uuidA = "GPU-5fd4ea4f-4d22-6a01-5e3c-9d3b8c7e5e7f"
	uuidB = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
	migA  = "MIG-1fe7c4f3-6b53-5e4c-a0e0-3a3c7f9d4d52"
	migB  = "MIG-9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
)

func TestParseDeviceID(t *testing.T) {
	tests := []struct {
		id   string
		want DeviceID
	}{
		{uuidA, DeviceID{Form: FormUUID, UUID: uuidA, Minor: -1, GPUInstance: -1, ComputeInstance: -1}},
		{"GPU-ABCDEF01-2345", DeviceID{Form: FormUUID, UUID: "GPU-ABCDEF01-2345", Minor: -1, GPUInstance: -1, ComputeInstance: -1}},
		{uuidA + "::0", DeviceID{Form: FormUUID, UUID: uuidA, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: "0"}},
		{uuidA + "::13", DeviceID{Form: FormUUID, UUID: uuidA, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: "13"}},
		{migA, DeviceID{Form: FormUUID, UUID: migA, Minor: -1, GPUInstance: -1, ComputeInstance: -1}},
		{migA + "::2", DeviceID{Form: FormUUID, UUID: migA, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: "2"}},
		{"MIG-" + uuidA + "/1/0", DeviceID{Form: FormLegacyMIG, UUID: uuidA, Minor: -1, GPUInstance: 1, ComputeInstance: 0}},
		{"MIG-" + uuidA + "/13/2::4", DeviceID{Form: FormLegacyMIG, UUID: uuidA, Minor: -1, GPUInstance: 13, ComputeInstance: 2, Replica: "4"}},
		{"nvidia0", DeviceID{Form: FormMinor, Minor: 0, GPUInstance: -1, ComputeInstance: -1}},
		{"nvidia15", DeviceID{Form: FormMinor, Minor: 15, GPUInstance: -1, ComputeInstance: -1}},
		{"nvidia0/gi1", DeviceID{Form: FormMinor, Minor: 0, GPUInstance: 1, ComputeInstance: -1}},
		{"nvidia0/vgpu2", DeviceID{Form: FormMinor, Minor: 0, GPUInstance: -1, ComputeInstance: -1, Replica: "2"}},
		{"nvidia3/gi5/vgpu0", DeviceID{Form: FormMinor, Minor: 3, GPUInstance: 5, ComputeInstance: -1, Replica: "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := ParseDeviceID(tt.id)
			if err != nil {
				t.Fatalf("ParseDeviceID(%q): %v", tt.id, err)
			}
			if got != tt.want {
				t.Errorf("ParseDeviceID(%q) = %+v, want %+v", tt.id, got, tt.want)
			}
		})
	}
}

func TestParseDeviceIDRejects(t *testing.T) {
	tests := []struct {
		name, id string
	}{
		{"empty", ""},
		{"too long", "GPU-" + strings.Repeat("a", maxDeviceIDLen)},
		{"bare uuid", "5fd4ea4f-4d22-6a01-5e3c-9d3b8c7e5e7f"},
		{"device-plugin index strategy", "0"},
		{"index MIG strategy", "0:1"},
		{"other vendor", "amd-gpu-0"},
		{"lowercase prefix", "gpu-5fd4ea4f"},
		{"empty uuid", "GPU-"},
		{"non-hex uuid", "GPU-xyz"},
		{"leading dash", "GPU--abc"},
		{"double dash", "GPU-ab--cd"},
		{"trailing dash", "GPU-abc-"},
		{"uuid too long", "GPU-" + strings.Repeat("a", maxUUIDBodyLen+1)},
		{"empty replica", uuidA + "::"},
		{"non-numeric replica", uuidA + "::x"},
		{"negative replica", uuidA + "::-1"},
		{"replica too long", uuidA + "::1234567"},
		{"two replicas", uuidA + "::1::2"},
		{"replica then slash", uuidA + "::1/2"},
		{"legacy without ci", "MIG-" + uuidA + "/1"},
		{"legacy extra part", "MIG-" + uuidA + "/1/0/3"},
		{"legacy bad gi", "MIG-" + uuidA + "/x/0"},
		{"legacy empty ci", "MIG-" + uuidA + "/1/"},
		{"legacy bad parent", "MIG-GPU-zz/1/0"},
		{"mig with slash", migA + "/1/0"},
		{"nvidia without minor", "nvidia"},
		{"nvidia control device", "nvidiactl"},
		{"nvidia uvm", "nvidia-uvm"},
		{"negative minor", "nvidia-1"},
		{"minor too long", "nvidia1234567"},
		{"gi without number", "nvidia0/gi"},
		{"vgpu without number", "nvidia0/vgpu"},
		{"vgpu before gi", "nvidia0/vgpu1/gi2"},
		{"unknown part", "nvidia0/ci1"},
		{"four parts", "nvidia0/gi1/vgpu2/x"},
		{"trailing slash", "nvidia0/"},
		{"minor with replica suffix", "nvidia0::1"},
		{"space", " " + uuidA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDeviceID(tt.id)
			if !errors.Is(err, ErrUnknownDeviceID) {
				t.Fatalf("ParseDeviceID(%q) = %+v, %v; want an ErrUnknownDeviceID error", tt.id, got, err)
			}
			if got != (DeviceID{}) {
				t.Errorf("ParseDeviceID(%q) returned %+v with its error, want the zero DeviceID", tt.id, got)
			}
			if len(err.Error()) > maxErrorIDLen+200 {
				t.Errorf("error message is %d bytes, want it bounded: %.100s…", len(err.Error()), err)
			}
		})
	}
}

func TestIDFormString(t *testing.T) {
	tests := []struct {
		form IDForm
		want string
	}{
		{FormUUID, "uuid"},
		{FormLegacyMIG, "legacy-mig"},
		{FormMinor, "minor"},
		{IDForm(0), "IDForm(0)"},
	}
	for _, tt := range tests {
		if got := tt.form.String(); got != tt.want {
			t.Errorf("IDForm(%d).String() = %q, want %q", uint8(tt.form), got, tt.want)
		}
	}
}

// FuzzParseDeviceID checks that the parser never panics, that it rejects
// with a zero DeviceID and ErrUnknownDeviceID, and that what it accepts is
// consistent with the input. The seed corpus is testdata/fuzz/FuzzParseDeviceID.
func FuzzParseDeviceID(f *testing.F) {
	f.Fuzz(func(t *testing.T, id string) {
		d, err := ParseDeviceID(id)
		if err != nil {
			if !errors.Is(err, ErrUnknownDeviceID) || d != (DeviceID{}) {
				t.Fatalf("ParseDeviceID(%q) = %+v, %v", id, d, err)
			}
			return
		}
		if d.Replica != "" && !isNumber(d.Replica) {
			t.Fatalf("ParseDeviceID(%q): replica %q is not a number", id, d.Replica)
		}
		switch d.Form {
		case FormUUID:
			if !strings.HasPrefix(id, d.UUID) || !validUUID(d.UUID) || d.Minor != -1 || d.GPUInstance != -1 || d.ComputeInstance != -1 {
				t.Fatalf("ParseDeviceID(%q) = %+v: inconsistent uuid form", id, d)
			}
			if want := d.UUID + suffixIf("::", d.Replica); id != want {
				t.Fatalf("ParseDeviceID(%q) = %+v, which describes %q", id, d, want)
			}
		case FormLegacyMIG:
			if !strings.HasPrefix(d.UUID, gpuPrefix) || !validUUID(d.UUID) || d.Minor != -1 || d.GPUInstance < 0 || d.ComputeInstance < 0 {
				t.Fatalf("ParseDeviceID(%q) = %+v: inconsistent legacy MIG form", id, d)
			}
			if !strings.HasPrefix(id, migPrefix+d.UUID+"/") {
				t.Fatalf("ParseDeviceID(%q) = %+v: parent UUID is not in the ID", id, d)
			}
		case FormMinor:
			if d.UUID != "" || d.Minor < 0 || d.GPUInstance < -1 || d.ComputeInstance != -1 || !strings.HasPrefix(id, minorPrefix) {
				t.Fatalf("ParseDeviceID(%q) = %+v: inconsistent minor form", id, d)
			}
		default:
			t.Fatalf("ParseDeviceID(%q) = %+v: unknown form", id, d)
		}
		if again, err := ParseDeviceID(id); err != nil || again != d {
			t.Fatalf("ParseDeviceID(%q) is not deterministic: %+v then %+v, %v", id, d, again, err)
		}
	})
}

func suffixIf(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}
