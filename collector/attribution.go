package collector

import (
	"errors"
	"io/fs"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// ProcessResolver finds the pod a host process runs in.
type ProcessResolver interface {
	// PodUID returns the UID of the pod process pid runs in, "" for a
	// process outside any pod. An error wrapping fs.ErrNotExist means the
	// process is not visible: it has exited, or the agent does not see the
	// host's PIDs.
	PodUID(pid uint32) (string, error)
}

// PodIndex knows the UIDs of this node's pods.
type PodIndex interface {
	// UID returns the UID of pod namespace/name; false when not known.
	UID(namespace, name string) (string, bool)
}

// Attribution configures per-process attribution of shared devices.
type Attribution struct {
	// Resolver maps PIDs to pod UIDs; nil when the backend's processes
	// carry their pod already (sim).
	Resolver ProcessResolver
	// Pods gives the UIDs of the pods holding devices; nil when processes
	// carry their pod's namespace and name (sim without a cluster): the
	// pod_uid label is then left out.
	Pods PodIndex
}

// Why a device falls back to device-level attribution.
const (
	reasonNotVisible = "the device's processes are not visible under the host proc root: " +
		"run the agent with hostPID: true (or mount the host's /proc and set --host-proc)"
	reasonBusyNoProcesses = "the device is busy but the driver lists no process on it: " +
		"the agent probably does not share the host's PID namespace (hostPID: true)"
	reasonPodUnknown = "a pod holding the device is not in the pod index yet"
	reasonNoPodIndex = "processes name their pod by UID but there is no pod index (no Kubernetes API access)"
)

// Reasons a process on a device is not counted for any pod holding it.
const (
	unattributedHost      = "host"         // outside any pod
	unattributedOtherPod  = "other_pod"    // in a pod that does not hold the device
	unattributedNotFound  = "not_found"    // exited, or not visible
	unattributedLookupErr = "lookup_error" // cgroup file unreadable or unparsable
)

// attributor joins each device's processes with the pods holding it. It is
// used by the sampling goroutine only.
type attributor struct {
	opts Attribution
	// logged remembers which device fell back for which reason, so each
	// is logged once.
	logged       map[string]struct{}
	unattributed *prometheus.GaugeVec
	counts       map[string]int
	// scratch space reused every round
	pods []podGroup
}

// podGroup is one pod among a device's owners.
type podGroup struct {
	namespace, name string
	containers      []string
	uid             string
	share           PodShare
	// memoryUnknown: a running process of the pod has no memory figure.
	memoryUnknown bool
}

func newAttributor(o Attribution, reg prometheus.Registerer) *attributor {
	a := &attributor{
		opts:   o,
		logged: make(map[string]struct{}),
		unattributed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_unattributed_gpu_processes",
			Help: "GPU processes in the last round that count for no pod holding their device, by reason: " +
				"host (outside any pod), other_pod (a pod that does not hold the device), not_found (exited or not visible), lookup_error (unreadable cgroup).",
		}, []string{"reason"}),
		counts: make(map[string]int),
	}
	for _, r := range []string{unattributedHost, unattributedOtherPod, unattributedNotFound, unattributedLookupErr} {
		a.unattributed.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(a.unattributed)
	}
	return a
}

// attribute sets the attribution mode of every device of snap and, for
// devices several pods hold, their shares.
func (a *attributor) attribute(snap *Snapshot) {
	for k := range a.counts {
		a.counts[k] = 0
	}
	for i := range snap.Devices {
		a.device(&snap.Devices[i])
	}
	for k, n := range a.counts {
		a.unattributed.WithLabelValues(k).Set(float64(n))
	}
}

func (a *attributor) device(ds *DeviceSample) {
	ds.Attribution = AttributionDevice
	p := &ds.Processes
	if !p.Read {
		if p.Err != nil {
			a.logOnce(ds, p.Err.Error())
		}
		return
	}
	found, runningNotFound := a.resolve(p.List)
	util, ok := ds.Reading.Get(exposition.GPUUtil)
	busy := ok && util > 0
	switch {
	case found == 0 && runningNotFound > 0:
		a.logOnce(ds, reasonNotVisible)
		return
	case len(p.List) == 0 && busy:
		a.logOnce(ds, reasonBusyNoProcesses)
		return
	}
	a.groupOwners(ds.Owners)
	switch {
	case a.opts.Pods != nil:
		for j := range a.pods {
			g := &a.pods[j]
			uid, ok := a.opts.Pods.UID(g.namespace, g.name)
			if !ok {
				a.logOnce(ds, reasonPodUnknown)
				return
			}
			g.uid = uid
		}
	case a.opts.Resolver != nil && len(a.pods) > 0:
		// Processes carry UIDs, the owners names: nothing joins them.
		a.logOnce(ds, reasonNoPodIndex)
		return
	}
	ds.Attribution = AttributionProcess
	for i := range p.List {
		a.account(&p.List[i])
	}
	if len(a.pods) < 2 {
		return // a dedicated device keeps its device values
	}
	ds.Shares = make([]PodShare, len(a.pods))
	for j := range a.pods {
		g := &a.pods[j]
		s := &g.share
		s.Namespace, s.Pod, s.UID = g.namespace, g.name, g.uid
		s.Container = strings.Join(g.containers, ",")
		s.SMUtil = min(s.SMUtil, 100)
		s.HasMemory = !g.memoryUnknown
		ds.Shares[j] = *s
	}
}

// resolve fills in the pod of every process that does not carry one,
// counts the processes that stay without a pod, and returns how many
// processes were found and how many running ones were not.
func (a *attributor) resolve(list []ProcessUsage) (found, runningNotFound int) {
	for i := range list {
		pr := &list[i]
		if pr.Pod != (PodRef{}) || a.opts.Resolver == nil {
			found++
			continue
		}
		uid, err := a.opts.Resolver.PodUID(pr.PID)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if pr.Running {
				runningNotFound++
			}
			a.counts[unattributedNotFound]++
		case err != nil:
			found++ // it exists; its cgroup is the problem
			a.counts[unattributedLookupErr]++
		case uid == "":
			found++
			a.counts[unattributedHost]++
		default:
			found++
			pr.Pod.UID = uid
		}
	}
	return found, runningNotFound
}

// groupOwners fills a.pods with the distinct pods among owners (sorted by
// namespace, pod and container, so a pod's containers are adjacent).
func (a *attributor) groupOwners(owners []podmap.Owner) {
	a.pods = a.pods[:0]
	for _, o := range owners {
		n := len(a.pods)
		if n > 0 && a.pods[n-1].namespace == o.Namespace && a.pods[n-1].name == o.Pod {
			g := &a.pods[n-1]
			if g.containers[len(g.containers)-1] != o.Container {
				g.containers = append(g.containers, o.Container)
			}
			continue
		}
		a.pods = append(a.pods, podGroup{namespace: o.Namespace, name: o.Pod, containers: []string{o.Container}})
	}
}

// account adds a resolved process to the pod holding the device it runs in,
// or counts it as unattributed.
func (a *attributor) account(pr *ProcessUsage) {
	if pr.Pod == (PodRef{}) {
		return // counted by resolve
	}
	for j := range a.pods {
		g := &a.pods[j]
		byUID := pr.Pod.UID != "" && pr.Pod.UID == g.uid
		byName := pr.Pod.Name != "" && pr.Pod.Namespace == g.namespace && pr.Pod.Name == g.name
		if !byUID && !byName {
			continue
		}
		s := &g.share
		s.SMUtil += pr.SMUtil
		if g.uid == "" {
			g.uid = pr.Pod.UID
		}
		if pr.Running {
			s.MemoryUsed += pr.MemoryUsed
			if !pr.HasMemory {
				g.memoryUnknown = true
			}
		}
		return
	}
	a.counts[unattributedOtherPod]++
}

func (a *attributor) logOnce(ds *DeviceSample, reason string) {
	key := ds.Device.UUID + "\x00" + reason
	if _, ok := a.logged[key]; ok {
		return
	}
	a.logged[key] = struct{}{}
	klog.InfoS("Per-process attribution unavailable on this device: pods holding it are given the device's values",
		"uuid", ds.Device.UUID, "gpu", ds.Device.Index, "reason", reason)
}
