// Package devices says which extended resources and device IDs NVIDIA's
// device plugin would advertise for a node of simulated GPUs (collector/sim):
// the test device plugin (hack/deviceplugin) advertises them, and the
// end-to-end harness expects them on the node and maps the IDs the kubelet
// allocates back to GPUs and MIG instances.
package devices

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
)

// Resource names as NVIDIA's device plugin advertises them.
const (
	// GPUResource holds whole GPUs (those not in MIG mode).
	GPUResource = "nvidia.com/gpu"
	// MIGResourcePrefix, followed by the profile (e.g. "1g.10gb"), holds
	// MIG instances with the mixed strategy.
	MIGResourcePrefix = "nvidia.com/mig-"
	// SharedSuffix is appended to the name of a time-sliced resource when
	// the sharing config renames it (renameByDefault: true).
	SharedSuffix = ".shared"
	// ReplicaSep separates a device's UUID from its time-slicing replica,
	// as in "GPU-<uuid>::<n>".
	ReplicaSep = "::"
)

// Layout is the simulated hardware of one node and how it is shared.
type Layout struct {
	// Node, GPUs and MIG are the agent's --node-name, --sim-gpus and
	// --sim-mig: the simulation derives the same UUIDs from them.
	Node string
	GPUs int
	MIG  []int
	// Replicas is the number of time-slicing replicas of each device; 0
	// or 1: not shared.
	Replicas int
	// RenameShared advertises time-sliced resources as "<name>.shared".
	RenameShared bool
}

// Device is one advertised device ID and the hardware behind it.
type Device struct {
	// ID is what the kubelet allocates: "GPU-<uuid>" or "MIG-<uuid>",
	// followed by "::<n>" for a time-slicing replica.
	ID string
	// UUID is the GPU's or MIG instance's UUID; Replica the "<n>" of a
	// time-slicing replica, "" when not shared.
	UUID, Replica string
	// GPU is the index of the GPU (of the parent GPU for a MIG instance).
	GPU int
	// GPUInstance is the MIG GPU instance id, -1 for a whole GPU; Profile
	// is the MIG profile, e.g. "1g.10gb".
	GPUInstance int
	Profile     string
}

// Resource is one extended resource and its devices.
type Resource struct {
	Name    string
	Devices []Device
}

// IDs returns the device IDs of r, in order.
func (r Resource) IDs() []string {
	ids := make([]string, 0, len(r.Devices))
	for _, d := range r.Devices {
		ids = append(ids, d.ID)
	}
	return ids
}

// Resources returns what NVIDIA's device plugin would advertise for l with
// the mixed MIG strategy: every GPU not in MIG mode under nvidia.com/gpu,
// every MIG instance under nvidia.com/mig-<profile>; with time-slicing each
// device as Replicas IDs "<uuid>::<n>", and with RenameShared each name with
// the ".shared" suffix. Resources are sorted by name, devices in the
// simulation's order.
func (l Layout) Resources() ([]Resource, error) {
	replicas := max(l.Replicas, 1)
	if l.RenameShared && replicas == 1 {
		return nil, fmt.Errorf("renaming shared resources needs time-slicing replicas")
	}
	s, err := sim.New(l.Node, l.GPUs, l.MIG)
	if err != nil {
		return nil, err
	}
	readings, _ := s.Sample(time.Now())
	byName := map[string][]Device{}
	for _, r := range readings {
		d := r.Device
		name, dev := GPUResource, Device{UUID: d.UUID, GPU: d.Index, GPUInstance: -1}
		switch {
		case d.MIG != nil:
			name = MIGResourcePrefix + d.MIG.Profile
			dev.GPUInstance, dev.Profile = d.MIG.GPUInstance, d.MIG.Profile
		case slices.Contains(l.MIG, d.Index):
			continue // a GPU in MIG mode is handed out as its instances
		}
		if replicas > 1 && l.RenameShared {
			name += SharedSuffix
		}
		for n := range replicas {
			dev.ID = d.UUID
			if replicas > 1 {
				dev.Replica = strconv.Itoa(n)
				dev.ID += ReplicaSep + dev.Replica
			}
			byName[name] = append(byName[name], dev)
		}
	}
	out := make([]Resource, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, Resource{Name: name, Devices: byName[name]})
	}
	return out, nil
}

// Find returns the device the kubelet allocated as id, and its resource's
// name.
func Find(resources []Resource, id string) (Device, string, bool) {
	for _, r := range resources {
		for _, d := range r.Devices {
			if d.ID == id {
				return d, r.Name, true
			}
		}
	}
	return Device{}, "", false
}

// UUIDOf returns the device a (possibly replica) ID stands for: the ID
// without its "::<n>" suffix.
func UUIDOf(id string) string {
	uuid, _, _ := strings.Cut(id, ReplicaSep)
	return uuid
}
