package podmap

import (
	"slices"
	"testing"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

const (
	resGPU    = "nvidia.com/gpu"
	resShared = "nvidia.com/gpu.shared"
	resMIG3g  = "nvidia.com/mig-3g.40gb"
	resMIG1g  = "nvidia.com/mig-1g.10gb"
	resCustom = "example.com/gpu"
	resOther  = "amd.com/gpu"
)

// Keys as the agent builds them: full GPUs with GPUInstance -1, MIG
// instances with their parent's minor, GPU instance and UUID.
var (
	keyA      = DeviceKey{UUID: uuidA, Minor: 0, GPUInstance: -1}
	keyB      = DeviceKey{UUID: uuidB, Minor: 1, GPUInstance: -1}
	keyIdle   = DeviceKey{UUID: "GPU-ffffffff-0000-0000-0000-000000000000", Minor: 7, GPUInstance: -1}
	keyMigA   = DeviceKey{UUID: migA, Minor: 0, GPUInstance: 1, ParentUUID: uuidA}
	keyMigB   = DeviceKey{UUID: migB, Minor: 1, GPUInstance: 2, ParentUUID: uuidB}
	keyMigB3  = DeviceKey{UUID: "MIG-00000000-1111-2222-3333-444444444444", Minor: 1, GPUInstance: 3, ParentUUID: uuidB}
	keyNoInfo = DeviceKey{UUID: "GPU-abcdef", Minor: -1, GPUInstance: -1}
)

func owner(ns, pod, container, resource, replica string) Owner {
	return Owner{Namespace: ns, Pod: pod, Container: container, Resource: resource, Replica: replica}
}

func pod(ns, name string, containers ...*podresourcesv1.ContainerResources) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{Namespace: ns, Name: name, Containers: containers}
}

func container(name string, devs ...*podresourcesv1.ContainerDevices) *podresourcesv1.ContainerResources {
	return &podresourcesv1.ContainerResources{Name: name, Devices: devs}
}

func devices(resource string, ids ...string) *podresourcesv1.ContainerDevices {
	return &podresourcesv1.ContainerDevices{ResourceName: resource, DeviceIds: ids}
}

type ownerCheck struct {
	key  DeviceKey
	want []Owner
}

// scenario is one List answer and what the mapping built from it must
// say. The same table runs through NewMapping and through a Refresher
// talking to a fake kubelet.
type scenario struct {
	name    string
	pods    []*podresourcesv1.PodResources
	extra   []string
	checks  []ownerCheck
	devices int
	unknown []string
	skipped int
}

var scenarios = []scenario{
	{
		name: "exclusive GPUs",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("ml", "train-0", "worker", resGPU, uuidB),
			fakekubelet.GPUPod("default", "infer", "server", resGPU, uuidA),
		},
		checks: []ownerCheck{
			{keyA, []Owner{owner("default", "infer", "server", resGPU, "")}},
			{keyB, []Owner{owner("ml", "train-0", "worker", resGPU, "")}},
			{keyIdle, nil},
			{keyNoInfo, nil},
		},
		devices: 2,
	},
	{
		name: "time-sliced replicas",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("b", "p3", "c", resGPU, uuidA+"::3"),
			fakekubelet.GPUPod("a", "p2", "c", resShared, uuidA+"::10"),
			fakekubelet.GPUPod("a", "p1", "c", resGPU, uuidA+"::1"),
			fakekubelet.GPUPod("a", "p2", "d", resShared, uuidA+"::2"),
			// One container holding two replicas of the same GPU.
			fakekubelet.GPUPod("a", "p4", "c", resGPU, uuidA+"::11", uuidA+"::4"),
			fakekubelet.GPUPod("a", "solo", "c", resGPU, uuidB+"::0"),
		},
		checks: []ownerCheck{
			{keyA, []Owner{
				owner("a", "p1", "c", resGPU, "1"),
				owner("a", "p2", "c", resShared, "10"),
				owner("a", "p2", "d", resShared, "2"),
				owner("a", "p4", "c", resGPU, "4"),
				owner("a", "p4", "c", resGPU, "11"),
				owner("b", "p3", "c", resGPU, "3"),
			}},
			{keyB, []Owner{owner("a", "solo", "c", resGPU, "0")}},
		},
		devices: 2,
	},
	{
		name: "MIG devices",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("ml", "big", "c", resMIG3g, migA),
			fakekubelet.GPUPod("ml", "small", "c", resMIG1g, "MIG-"+uuidB+"/2/0"),
			fakekubelet.GPUPod("ml", "shared-0", "c", resMIG1g, migB+"::0"),
			fakekubelet.GPUPod("ml", "shared-1", "c", resMIG1g, migB+"::1"),
		},
		checks: []ownerCheck{
			{keyMigA, []Owner{owner("ml", "big", "c", resMIG3g, "")}},
			{keyMigB, []Owner{
				owner("ml", "shared-0", "c", resMIG1g, "0"),
				owner("ml", "shared-1", "c", resMIG1g, "1"),
				owner("ml", "small", "c", resMIG1g, ""),
			}},
			{keyMigB3, nil},
			// The parents are not held whole.
			{keyA, nil},
			{keyB, nil},
		},
		devices: 3,
	},
	{
		name: "GKE device IDs",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("gke", "whole", "c", resGPU, "nvidia0"),
			fakekubelet.GPUPod("gke", "mig", "c", resGPU, "nvidia1/gi2"),
			fakekubelet.GPUPod("gke", "ts-1", "c", resGPU, "nvidia7/vgpu1"),
			fakekubelet.GPUPod("gke", "ts-0", "c", resGPU, "nvidia7/vgpu0"),
			fakekubelet.GPUPod("gke", "mig-ts", "c", resGPU, "nvidia1/gi3/vgpu5"),
		},
		checks: []ownerCheck{
			{keyA, []Owner{owner("gke", "whole", "c", resGPU, "")}},
			{keyMigB, []Owner{owner("gke", "mig", "c", resGPU, "")}},
			{keyMigB3, []Owner{owner("gke", "mig-ts", "c", resGPU, "5")}},
			{keyIdle, []Owner{owner("gke", "ts-0", "c", resGPU, "0"), owner("gke", "ts-1", "c", resGPU, "1")}},
			// GPU 1 is partitioned, not held whole.
			{keyB, nil},
			{keyNoInfo, nil},
		},
		devices: 4,
	},
	{
		name: "several containers per pod",
		pods: []*podresourcesv1.PodResources{
			pod("web", "app",
				container("main", devices(resGPU, uuidA+"::0")),
				container("sidecar", devices(resGPU, uuidA+"::1")),
				container("cpu-only"),
				container("other-vendor", devices(resOther, uuidB)),
				container("loader", devices(resGPU, uuidB)),
			),
		},
		checks: []ownerCheck{
			{keyA, []Owner{owner("web", "app", "main", resGPU, "0"), owner("web", "app", "sidecar", resGPU, "1")}},
			{keyB, []Owner{owner("web", "app", "loader", resGPU, "")}},
		},
		devices: 2,
	},
	{
		name: "pod with two GPUs",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("ml", "ddp", "trainer", resGPU, uuidA, uuidB),
		},
		checks: []ownerCheck{
			{keyA, []Owner{owner("ml", "ddp", "trainer", resGPU, "")}},
			{keyB, []Owner{owner("ml", "ddp", "trainer", resGPU, "")}},
		},
		devices: 2,
	},
	{
		name:   "empty list",
		checks: []ownerCheck{{keyA, nil}, {keyMigA, nil}},
	},
	{
		name: "extra and foreign resource names",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("x", "custom", "c", resCustom, uuidA),
			fakekubelet.GPUPod("x", "amd", "c", resOther, uuidB),
		},
		extra: []string{resCustom},
		checks: []ownerCheck{
			{keyA, []Owner{owner("x", "custom", "c", resCustom, "")}},
			{keyB, nil},
		},
		devices: 1,
	},
	{
		name: "one device named in two forms",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("x", "by-uuid", "c", resGPU, uuidA+"::0"),
			fakekubelet.GPUPod("x", "by-minor", "c", resCustom, "nvidia0/vgpu1"),
			fakekubelet.GPUPod("x", "legacy", "c", resMIG1g, "MIG-"+uuidA+"/1/0"),
			fakekubelet.GPUPod("x", "new", "c", resMIG1g, migA),
		},
		extra: []string{resCustom},
		checks: []ownerCheck{
			{keyA, []Owner{owner("x", "by-minor", "c", resCustom, "1"), owner("x", "by-uuid", "c", resGPU, "0")}},
			{keyMigA, []Owner{owner("x", "legacy", "c", resMIG1g, ""), owner("x", "new", "c", resMIG1g, "")}},
		},
		devices: 4,
	},
	{
		name: "unknown device IDs",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("x", "mixed", "c", resGPU, "0", uuidA, "GPU-zz", "0"),
			fakekubelet.GPUPod("x", "foreign", "c", resOther, "card0"),
			fakekubelet.GPUPod("x", "more", "c", resMIG1g, "MIG-GPU-zz/1/0"),
		},
		checks: []ownerCheck{
			{keyA, []Owner{owner("x", "mixed", "c", resGPU, "")}},
		},
		devices: 1,
		unknown: []string{"0", "GPU-zz", "MIG-GPU-zz/1/0"},
	},
	{
		name: "nameless entries and duplicates",
		pods: []*podresourcesv1.PodResources{
			fakekubelet.GPUPod("", "no-namespace", "c", resGPU, uuidB),
			fakekubelet.GPUPod("x", "", "c", resGPU, uuidB),
			fakekubelet.GPUPod("x", "no-container", "", resGPU, uuidB),
			fakekubelet.GPUPod("x", "twice", "c", resGPU, uuidA),
			fakekubelet.GPUPod("x", "twice", "c", resGPU, uuidA),
			pod("x", "cpu-only", container("")),
		},
		checks: []ownerCheck{
			{keyA, []Owner{owner("x", "twice", "c", resGPU, "")}},
			{keyB, nil},
		},
		devices: 1,
		skipped: 3,
	},
}

// checkMapping verifies m against sc.
func checkMapping(t *testing.T, m *Mapping, sc scenario) {
	t.Helper()
	for _, c := range sc.checks {
		if got := m.Owners(c.key); !slices.Equal(got, c.want) {
			t.Errorf("Owners(%+v) =\n  %+v\nwant\n  %+v", c.key, got, c.want)
		}
	}
	if got := m.Devices(); got != sc.devices {
		t.Errorf("Devices() = %d, want %d", got, sc.devices)
	}
	if got := m.UnknownDeviceIDs(); !slices.Equal(got, sc.unknown) {
		t.Errorf("UnknownDeviceIDs() = %q, want %q", got, sc.unknown)
	}
	if got := m.Skipped(); got != sc.skipped {
		t.Errorf("Skipped() = %d, want %d", got, sc.skipped)
	}
}

func TestNewMapping(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			m := NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: sc.pods}, sc.extra...)
			checkMapping(t, m, sc)
		})
	}
}

func TestEmptyMappings(t *testing.T) {
	for name, m := range map[string]*Mapping{
		"nil":          nil,
		"zero":         {},
		"nil response": NewMapping(nil),
	} {
		t.Run(name, func(t *testing.T) {
			if got := m.Owners(keyA); got != nil {
				t.Errorf("Owners = %v, want nil", got)
			}
			if m.Devices() != 0 || m.UnknownDeviceIDs() != nil || m.Skipped() != 0 {
				t.Errorf("Devices, UnknownDeviceIDs, Skipped = %d, %q, %d; want 0, nil, 0", m.Devices(), m.UnknownDeviceIDs(), m.Skipped())
			}
		})
	}
}

func TestNewMappingToleratesNilEntries(t *testing.T) {
	pods := []*podresourcesv1.PodResources{
		nil,
		pod("x", "nil-container", nil),
		pod("x", "nil-devices", container("c", nil)),
		pod("x", "nil-ids", container("c", devices(resGPU))),
		fakekubelet.GPUPod("x", "ok", "c", resGPU, uuidA),
	}
	m := NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: pods})
	checkMapping(t, m, scenario{
		checks:  []ownerCheck{{keyA, []Owner{owner("x", "ok", "c", resGPU, "")}}},
		devices: 1,
	})
}

func TestOwnersDoesNotAllocate(t *testing.T) {
	m := NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: benchPods(110, 8)})
	keys := append(benchKeys(8), keyIdle, keyNoInfo)
	for _, k := range keys {
		if allocs := testing.AllocsPerRun(100, func() { m.Owners(k) }); allocs != 0 {
			t.Errorf("Owners(%+v) allocates %v times, want 0", k, allocs)
		}
	}
}

func TestOwnersResultIsClipped(t *testing.T) {
	sc := scenarios[1] // time-sliced: keyA has several owners
	m := NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: sc.pods})
	got := m.Owners(keyA)
	intruder := owner("intruder", "p", "c", resGPU, "")
	if grown := append(got, intruder); grown[len(got)] != intruder {
		t.Fatalf("append did not add the owner: %+v", grown)
	}
	if after := m.Owners(keyA); !slices.Equal(after, sc.checks[0].want) {
		t.Errorf("appending to a result changed the mapping: %+v", after)
	}
}

func TestCountDevices(t *testing.T) {
	devs := []*podresourcesv1.ContainerDevices{
		devices(resGPU, uuidA+"::0", uuidA+"::1", uuidA+"::2", uuidB),
		devices(resMIG1g, migA, "MIG-"+uuidB+"/1/0", "nvidia3/gi1"),
		devices(resShared, "nvidia4/vgpu0", "nvidia4/vgpu1", "bogus"),
		devices(resOther, "card0", "card1"),
		devices(resCustom, uuidA),
	}
	tests := []struct {
		name        string
		extra       []string
		wantN       int
		wantUnknown []string
	}{
		{"defaults", nil, 6, []string{"bogus"}},
		// The custom resource names a GPU already counted.
		{"with extra name", []string{resCustom}, 6, []string{"bogus"}},
		{"foreign resource as extra", []string{resOther}, 6, []string{"bogus", "card0", "card1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, unknown := countDevices(devs, newResourceSet(tt.extra))
			if n != tt.wantN || !slices.Equal(unknown, tt.wantUnknown) {
				t.Errorf("countDevices = %d, %q; want %d, %q", n, unknown, tt.wantN, tt.wantUnknown)
			}
		})
	}
}

func TestValidateResourceName(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
	}{
		{"example.com/gpu", true},
		{"nvidia.com/mig-1g.10gb", true},
		{"gpu", false},
		{"", false},
		{"/gpu", false},
		{"example.com/", false},
		{"a/b/c", false},
		{"example.com/g pu", false},
		{"example.com/a,example.com/b", false},
	}
	for _, tt := range tests {
		err := ValidateResourceName(tt.name)
		if (err == nil) != tt.valid {
			t.Errorf("ValidateResourceName(%q) = %v, want valid=%v", tt.name, err, tt.valid)
		}
	}
}
