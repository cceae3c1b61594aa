package podmap

import (
	"cmp"
	"iter"
	"maps"
	"slices"
	"strconv"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Mapping is an immutable record of which containers hold which GPU devices,
// built from one answer of the kubelet's List call. A nil *Mapping is empty.
type Mapping struct {
	// owners is keyed by the device's identity in the form the kubelet
	// reported it; each slice is sorted, free of duplicates and clipped.
	owners map[deviceIdentity][]Owner
	// unknown holds the distinct device IDs, under GPU resource names,
	// that ParseDeviceID rejected, sorted.
	unknown []string
	// skipped counts containers holding GPU devices that were left out
	// because their namespace, pod or container name was empty.
	skipped int
	// cut counts the owners left out beyond MaxOwnersPerDevice.
	cut int
}

// MaxOwnersPerDevice bounds the containers one device is attributed to (its
// time-slicing replicas or MPS clients; CUDA MPS serves at most 48): a
// kubelet listing tens of thousands of containers on one GPU would make the
// agent hold, and /metrics serve, a series per container per field. The
// owners beyond it, in the mapping's order (namespace, pod, container), are
// left out and counted (Cut).
const MaxOwnersPerDevice = 128

var _ Lookup = (*Mapping)(nil)

// deviceIdentity is a device as one ID form names it: a replica suffix is
// dropped, so the replicas of one GPU share an identity.
type deviceIdentity struct {
	form  IDForm
	uuid  string // FormUUID: the device; FormLegacyMIG: the parent GPU
	minor int    // FormMinor only, else -1
	gi    int    // GPU instance, -1 for a full GPU or FormUUID
}

func identityOf(d DeviceID) deviceIdentity {
	id := deviceIdentity{form: d.Form, uuid: d.UUID, minor: -1, gi: -1}
	switch d.Form {
	case FormLegacyMIG:
		id.gi = d.GPUInstance
	case FormMinor:
		id.minor, id.gi = d.Minor, d.GPUInstance
	}
	return id
}

// NewMapping builds a Mapping from a List answer. Devices allocated under
// nvidia.com/gpu, nvidia.com/gpu.shared, any nvidia.com/mig-* name or one of
// extraResourceNames are mapped; other resources are ignored. A nil answer
// gives an empty mapping.
func NewMapping(resp *podresourcesv1.ListPodResourcesResponse, extraResourceNames ...string) *Mapping {
	return buildMapping(resp.GetPodResources(), newResourceSet(extraResourceNames))
}

func buildMapping(pods []*podresourcesv1.PodResources, resources resourceSet) *Mapping {
	m := &Mapping{owners: make(map[deviceIdentity][]Owner)}
	unknown := make(map[string]struct{})
	for _, pod := range pods {
		for _, c := range pod.GetContainers() {
			if pod.GetNamespace() == "" || pod.GetName() == "" || c.GetName() == "" {
				if holdsGPUs(c.GetDevices(), resources) {
					m.skipped++
				}
				continue
			}
			for resource, d := range gpuDevices(c.GetDevices(), resources, unknown) {
				id := identityOf(d)
				m.owners[id] = append(m.owners[id], Owner{
					Namespace: pod.GetNamespace(),
					Pod:       pod.GetName(),
					Container: c.GetName(),
					Resource:  resource,
					Replica:   d.Replica,
				})
			}
		}
	}
	for id, owners := range m.owners {
		slices.SortFunc(owners, compareOwners)
		owners = slices.Compact(owners)
		if len(owners) > MaxOwnersPerDevice {
			m.cut += len(owners) - MaxOwnersPerDevice
			owners = owners[:MaxOwnersPerDevice]
		}
		m.owners[id] = slices.Clip(owners)
	}
	m.unknown = slices.Sorted(maps.Keys(unknown))
	return m
}

// gpuDevices yields each device ID of devs allocated under a GPU resource
// name, parsed, with that resource name; an ID in no known form is added to
// unknown instead.
func gpuDevices(devs []*podresourcesv1.ContainerDevices, resources resourceSet, unknown map[string]struct{}) iter.Seq2[string, DeviceID] {
	return func(yield func(string, DeviceID) bool) {
		for _, dev := range devs {
			if !resources.has(dev.GetResourceName()) {
				continue
			}
			for _, raw := range dev.GetDeviceIds() {
				d, err := ParseDeviceID(raw)
				if err != nil {
					unknown[raw] = struct{}{}
					continue
				}
				if !yield(dev.GetResourceName(), d) {
					return
				}
			}
		}
	}
}

// holdsGPUs reports whether devs has a device ID under a GPU resource name.
func holdsGPUs(devs []*podresourcesv1.ContainerDevices, resources resourceSet) bool {
	return slices.ContainsFunc(devs, func(dev *podresourcesv1.ContainerDevices) bool {
		return resources.has(dev.GetResourceName()) && len(dev.GetDeviceIds()) > 0
	})
}

// Owners returns the containers holding the device named by k, matching
// every ID form: k.UUID against "GPU-…"/"MIG-…" IDs, (k.ParentUUID,
// k.GPUInstance) against legacy MIG IDs and (k.Minor, k.GPUInstance) against
// GKE's "nvidia<minor>" IDs. It does not allocate unless the kubelet named
// the same device in more than one form.
func (m *Mapping) Owners(k DeviceKey) []Owner {
	if m == nil || len(m.owners) == 0 {
		return nil
	}
	gi := max(k.GPUInstance, -1)
	var hits [3][]Owner
	n := 0
	if k.UUID != "" {
		if o := m.owners[deviceIdentity{form: FormUUID, uuid: k.UUID, minor: -1, gi: -1}]; o != nil {
			hits[n] = o
			n++
		}
	}
	if k.ParentUUID != "" && gi >= 0 {
		if o := m.owners[deviceIdentity{form: FormLegacyMIG, uuid: k.ParentUUID, minor: -1, gi: gi}]; o != nil {
			hits[n] = o
			n++
		}
	}
	if k.Minor >= 0 {
		if o := m.owners[deviceIdentity{form: FormMinor, minor: k.Minor, gi: gi}]; o != nil {
			hits[n] = o
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case 1:
		return hits[0]
	}
	var merged []Owner
	for _, o := range hits[:n] {
		merged = append(merged, o...)
	}
	slices.SortFunc(merged, compareOwners)
	return slices.Clip(slices.Compact(merged))
}

// Devices returns how many devices at least one container holds; the
// replicas of a time-sliced GPU count once.
func (m *Mapping) Devices() int {
	if m == nil {
		return 0
	}
	return len(m.owners)
}

// UnknownDeviceIDs returns the distinct device IDs, allocated under a GPU
// resource name, that are in no known form, sorted. The slice must not be
// modified.
func (m *Mapping) UnknownDeviceIDs() []string {
	if m == nil {
		return nil
	}
	return m.unknown
}

// Skipped returns how many containers holding GPU devices were left out
// because the answer gave no namespace, pod or container name.
func (m *Mapping) Skipped() int {
	if m == nil {
		return 0
	}
	return m.skipped
}

// Cut returns how many owners were left out beyond MaxOwnersPerDevice.
func (m *Mapping) Cut() int {
	if m == nil {
		return 0
	}
	return m.cut
}

// countDevices returns how many distinct devices devs names under GPU
// resource names, and the distinct IDs in no known form, sorted.
func countDevices(devs []*podresourcesv1.ContainerDevices, resources resourceSet) (int, []string) {
	seen := make(map[deviceIdentity]struct{})
	unknown := make(map[string]struct{})
	for _, d := range gpuDevices(devs, resources, unknown) {
		seen[identityOf(d)] = struct{}{}
	}
	return len(seen), slices.Sorted(maps.Keys(unknown))
}

// compareOwners orders owners by namespace, pod, container, replica
// (numerically, a whole device first) and resource.
func compareOwners(a, b Owner) int {
	return cmp.Or(
		cmp.Compare(a.Namespace, b.Namespace),
		cmp.Compare(a.Pod, b.Pod),
		cmp.Compare(a.Container, b.Container),
		cmp.Compare(replicaNumber(a.Replica), replicaNumber(b.Replica)),
		cmp.Compare(a.Replica, b.Replica),
		cmp.Compare(a.Resource, b.Resource),
	)
}

// replicaNumber returns a replica's number, -1 for "" (a whole device).
// Replicas are validated decimal numbers of at most maxNumberDigits digits.
func replicaNumber(r string) int {
	n, err := strconv.Atoi(r)
	if err != nil {
		return -1
	}
	return n
}
