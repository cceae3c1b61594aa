package devices

import (
	"slices"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
)

func TestResources(t *testing.T) {
	const node = "gpu-node"
	gpu := func(i int) string { return sim.UUID(node, i) }
	mig := func(i, gi int) string { return sim.MIGUUID(node, i, gi) }
	for _, tc := range []struct {
		name string
		l    Layout
		want map[string][]string // resource → IDs
	}{
		{
			name: "whole GPUs",
			l:    Layout{Node: node, GPUs: 2},
			want: map[string][]string{"nvidia.com/gpu": {gpu(0), gpu(1)}},
		},
		{
			name: "time-slicing keeps the name",
			l:    Layout{Node: node, GPUs: 2, Replicas: 2},
			want: map[string][]string{"nvidia.com/gpu": {gpu(0) + "::0", gpu(0) + "::1", gpu(1) + "::0", gpu(1) + "::1"}},
		},
		{
			name: "time-slicing renamed",
			l:    Layout{Node: node, GPUs: 1, Replicas: 3, RenameShared: true},
			want: map[string][]string{"nvidia.com/gpu.shared": {gpu(0) + "::0", gpu(0) + "::1", gpu(0) + "::2"}},
		},
		{
			name: "MIG mixed strategy",
			l:    Layout{Node: node, GPUs: 2, MIG: []int{0}, Replicas: 1},
			want: map[string][]string{
				"nvidia.com/gpu":         {gpu(1)},
				"nvidia.com/mig-1g.10gb": {mig(0, 9), mig(0, 10)},
				"nvidia.com/mig-2g.20gb": {mig(0, 3)},
				"nvidia.com/mig-3g.40gb": {mig(0, 2)},
			},
		},
		{
			name: "every GPU in MIG mode, time-sliced and renamed: no nvidia.com/gpu",
			l:    Layout{Node: node, GPUs: 1, MIG: []int{0}, Replicas: 2, RenameShared: true},
			want: map[string][]string{
				"nvidia.com/mig-1g.10gb.shared": {mig(0, 9) + "::0", mig(0, 9) + "::1", mig(0, 10) + "::0", mig(0, 10) + "::1"},
				"nvidia.com/mig-2g.20gb.shared": {mig(0, 3) + "::0", mig(0, 3) + "::1"},
				"nvidia.com/mig-3g.40gb.shared": {mig(0, 2) + "::0", mig(0, 2) + "::1"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.l.Resources()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range got {
				names = append(names, r.Name)
				if want, ok := tc.want[r.Name]; !ok || !slices.Equal(r.IDs(), want) {
					t.Errorf("%s: IDs %v, want %v", r.Name, r.IDs(), want)
				}
				for _, d := range r.Devices {
					if d.UUID != UUIDOf(d.ID) || (d.Replica == "") != (d.UUID == d.ID) {
						t.Errorf("%s: device %+v: UUID and replica do not match its ID", r.Name, d)
					}
					if (d.GPUInstance >= 0) != (d.Profile != "") {
						t.Errorf("%s: device %+v: GPU instance and profile disagree", r.Name, d)
					}
				}
			}
			if !slices.IsSorted(names) || len(names) != len(tc.want) {
				t.Errorf("resources %v, want the %d of %v, sorted", names, len(tc.want), tc.want)
			}
		})
	}
}

func TestFindMapsIDsToHardware(t *testing.T) {
	const node = "n"
	res, err := Layout{Node: node, GPUs: 2, MIG: []int{1}, Replicas: 2}.Resources()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id       string
		resource string
		gpu, gi  int
		replica  string
	}{
		{id: sim.UUID(node, 0) + "::1", resource: "nvidia.com/gpu", gpu: 0, gi: -1, replica: "1"},
		{id: sim.MIGUUID(node, 1, 10) + "::0", resource: "nvidia.com/mig-1g.10gb", gpu: 1, gi: 10, replica: "0"},
		{id: sim.MIGUUID(node, 1, 2) + "::1", resource: "nvidia.com/mig-3g.40gb", gpu: 1, gi: 2, replica: "1"},
	} {
		d, name, ok := Find(res, tc.id)
		if !ok || name != tc.resource || d.GPU != tc.gpu || d.GPUInstance != tc.gi || d.Replica != tc.replica {
			t.Errorf("Find(%s) = %+v, %q, %v; want GPU %d instance %d replica %q of %s", tc.id, d, name, ok, tc.gpu, tc.gi, tc.replica, tc.resource)
		}
	}
	for _, id := range []string{sim.UUID(node, 1), sim.UUID(node, 0), "GPU-unknown"} {
		if d, _, ok := Find(res, id); ok {
			t.Errorf("Find(%s) = %+v: a GPU in MIG mode, an unreplicated ID of a shared GPU, or an unknown one", id, d)
		}
	}
}

func TestRenameNeedsReplicas(t *testing.T) {
	if _, err := (Layout{Node: "n", GPUs: 1, RenameShared: true}).Resources(); err == nil {
		t.Error("renaming without time-slicing accepted")
	}
	if _, err := (Layout{Node: "n", GPUs: 1, MIG: []int{1}}).Resources(); err == nil {
		t.Error("a MIG index out of range accepted")
	}
}
