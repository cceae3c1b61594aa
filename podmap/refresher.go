package podmap

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

const (
	// maxRecvMsgSize matches the limit of the kubelet's own pod-resources
	// client; a List answer for a full node is far below it.
	maxRecvMsgSize = 16 << 20
	// reconnectBaseDelay is the first reconnect backoff; it grows up to
	// the refresh interval, so a restarted kubelet is found within about
	// two intervals.
	reconnectBaseDelay = 100 * time.Millisecond
	// maxTrackedUnknownIDs bounds the memory of unknown device IDs already
	// logged and counted.
	maxTrackedUnknownIDs = 1024
	// maxUnsyncedAnswers is how many answers in a row listing no pod at
	// all, after an outage, leave the mapping in use as it is (see
	// holdBack).
	maxUnsyncedAnswers = 10
)

// Options configure a Refresher.
type Options struct {
	// Socket is the path of the kubelet's pod-resources unix socket
	// (--pod-resources-socket).
	Socket string
	// Interval is the time between two refreshes (--pod-resources-interval).
	Interval time.Duration
	// Timeout bounds each call to the kubelet (--pod-resources-timeout).
	Timeout time.Duration
	// ExtraResourceNames are extended resources whose devices are GPUs,
	// besides nvidia.com/gpu, nvidia.com/gpu.shared and nvidia.com/mig-*
	// (--resource-names).
	ExtraResourceNames []string
	// Registerer receives the self-metrics (gpu_metrics_server_pod_resources_*);
	// nil registers none.
	Registerer prometheus.Registerer
}

// Refresher keeps a Mapping refreshed from the kubelet's pod-resources API
// over one long-lived gRPC connection. Current never blocks. During an
// outage the last mapping obtained stays in use.
type Refresher struct {
	opts      Options
	socket    string
	resources resourceSet
	conn      *grpc.ClientConn
	client    podresourcesv1.PodResourcesListerClient
	metrics   *refresherMetrics

	current atomic.Pointer[Mapping]
	running atomic.Bool

	// Owned by the Run goroutine.
	everUp   bool
	inOutage bool
	// awaitingPods is set by an outage and cleared by the first answer
	// listing a pod (or by maxUnsyncedAnswers answers listing none);
	// emptyAnswers counts the answers held back meanwhile.
	awaitingPods          bool
	emptyAnswers          int
	outageStart           time.Time
	allocatableGone       bool
	lastSkipped           int
	lastCut               int
	seenUnknown           map[string]struct{}
	unknownOverflowLogged bool

	// onTransition, when set before Run (tests), sees each change of the
	// kubelet's availability as it is logged, on the Run goroutine.
	onTransition func(transition)
}

// transition is a change of the kubelet's availability; each is logged
// once.
type transition int

const (
	// connected: the first successful List.
	connected transition = iota
	// outageBegan: a List failed after a success, or before any.
	outageBegan
	// outageEnded: a List succeeded after an outage.
	outageEnded
)

func (r *Refresher) transitioned(t transition) {
	if r.onTransition != nil {
		r.onTransition(t)
	}
}

// NewRefresher validates o, prepares the connection (it does not dial: a
// missing socket is not an error) and registers the self-metrics. Call Run
// to start refreshing.
func NewRefresher(o Options) (*Refresher, error) {
	if o.Socket == "" {
		return nil, errors.New("pod-resources socket path is empty")
	}
	if o.Interval <= 0 {
		return nil, fmt.Errorf("pod-resources interval %v: must be positive", o.Interval)
	}
	if o.Timeout <= 0 {
		return nil, fmt.Errorf("pod-resources timeout %v: must be positive", o.Timeout)
	}
	for _, name := range o.ExtraResourceNames {
		if err := ValidateResourceName(name); err != nil {
			return nil, err
		}
	}
	socket, err := filepath.Abs(o.Socket)
	if err != nil {
		return nil, fmt.Errorf("pod-resources socket %q: %w", o.Socket, err)
	}
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  reconnectBaseDelay,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   max(o.Interval, reconnectBaseDelay),
			},
			MinConnectTimeout: o.Timeout,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("pod-resources socket %q: %w", socket, err)
	}
	r := &Refresher{
		opts:        o,
		socket:      socket,
		resources:   newResourceSet(o.ExtraResourceNames),
		conn:        conn,
		client:      podresourcesv1.NewPodResourcesListerClient(conn),
		metrics:     newRefresherMetrics(),
		seenUnknown: make(map[string]struct{}),
	}
	if err := r.metrics.register(o.Registerer); err != nil {
		_ = conn.Close() // never used; nothing to report
		return nil, fmt.Errorf("registering pod-resources metrics: %w", err)
	}
	r.current.Store(&Mapping{})
	return r, nil
}

// Current returns the latest mapping: an empty one until the first
// successful refresh, then the last one obtained, kept through outages.
func (r *Refresher) Current() *Mapping {
	return r.current.Load()
}

// Run refreshes the mapping at once and then every Options.Interval (from
// the start of the last refresh) until ctx ends, then closes the
// connection. Call it once.
func (r *Refresher) Run(ctx context.Context) {
	if r.running.Swap(true) {
		klog.ErrorS(nil, "Pod-resources refresher already ran; ignoring a second Run", "socket", r.socket)
		return
	}
	defer func() {
		if err := r.conn.Close(); err != nil {
			klog.ErrorS(err, "Closing the pod-resources connection", "socket", r.socket)
		}
	}()
	wait.NonSlidingUntilWithContext(ctx, r.refresh, r.opts.Interval)
}

// refresh lists the pods, publishes the new mapping and updates the
// allocatable count. On failure the previous mapping stays in use, and
// after an outage also while the kubelet lists no pod (holdBack).
func (r *Refresher) refresh(ctx context.Context) {
	start := time.Now()
	m, pods, err := r.list(ctx)
	r.metrics.refreshDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil { // not shutting down
			r.setDown(err)
		}
		return
	}
	r.publish(m, pods)
	klog.V(4).InfoS("Refreshed pod mapping", "pods", pods, "mappedDevices", r.Current().Devices(), "duration", time.Since(start))
	r.refreshAllocatable(ctx)
}

// publish records a successful List answer listing pods pods, whose
// mapping is m: m replaces the mapping in use unless holdBack keeps the
// last one.
func (r *Refresher) publish(m *Mapping, pods int) {
	if r.holdBack(pods) {
		r.setUp(pods, r.Current())
		return
	}
	r.current.Store(m)
	r.metrics.mappedDevices.Set(float64(m.Devices()))
	r.noteUnknown(m.UnknownDeviceIDs())
	r.noteSkipped(m.Skipped())
	r.noteCut(m.Cut())
	r.setUp(pods, m)
}

func (r *Refresher) list(ctx context.Context) (m *Mapping, pods int, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	resp, err := r.client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		r.countError("List", err)
		return nil, 0, err
	}
	return buildMapping(resp.GetPodResources(), r.resources), len(resp.GetPodResources()), nil
}

// holdBack reports whether an answer listing pods pods must leave the
// mapping in use as it is. A kubelet that has just restarted answers before
// it has read its pods from the API server: it lists no pod at all, though
// its device allocations (restored from its checkpoint) are all in place,
// and lists them all a moment later. So after an outage an answer listing
// no pod does not replace a mapping with owners until the kubelet lists a
// pod, or until maxUnsyncedAnswers answers in a row have listed none (the
// pods did end meanwhile). The bound: once the kubelet answers again, a
// node whose pods all ended loses their owners at the
// (maxUnsyncedAnswers+1)-th answer listing no pod, i.e. about
// (maxUnsyncedAnswers+1) refresh intervals later; a new outage meanwhile
// starts the count again. Without an outage an answer listing no pod is
// believed at once (TestRefresherHoldIsBounded).
func (r *Refresher) holdBack(pods int) bool {
	if !r.awaitingPods {
		return false
	}
	if pods > 0 || r.Current().Devices() == 0 || r.emptyAnswers >= maxUnsyncedAnswers {
		if pods == 0 && r.emptyAnswers >= maxUnsyncedAnswers {
			klog.InfoS("Kubelet still lists no pod after its outage; dropping the last known pod mapping",
				"socket", r.socket, "answers", r.emptyAnswers+1)
		}
		r.awaitingPods, r.emptyAnswers = false, 0
		return false
	}
	if r.emptyAnswers == 0 {
		klog.InfoS("Kubelet lists no pod after its outage (restarted and not yet synced with the API server?); keeping the last known pod mapping until it lists one",
			"socket", r.socket, "mappedDevices", r.Current().Devices(), "maxAnswers", maxUnsyncedAnswers)
	}
	r.emptyAnswers++
	return true
}

// refreshAllocatable updates the allocatable-devices gauge, unless the
// kubelet said it does not implement the call.
func (r *Refresher) refreshAllocatable(ctx context.Context) {
	if r.allocatableGone {
		return
	}
	callCtx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	resp, err := r.client.GetAllocatableResources(callCtx, &podresourcesv1.AllocatableResourcesRequest{})
	switch {
	case err == nil:
	case status.Code(err) == codes.Unimplemented:
		r.countError("GetAllocatableResources", err)
		r.allocatableGone = true
		klog.InfoS("Kubelet does not implement GetAllocatableResources; not asking again", "socket", r.socket)
		return
	case ctx.Err() != nil: // shutting down
		return
	default:
		r.countError("GetAllocatableResources", err)
		klog.V(2).InfoS("GetAllocatableResources failed", "socket", r.socket, "err", err)
		return
	}
	n, unknown := countDevices(resp.GetDevices(), r.resources)
	r.metrics.allocatable.WithLabelValues().Set(float64(n))
	r.noteUnknown(unknown)
}

func (r *Refresher) countError(method string, err error) {
	r.metrics.errors.WithLabelValues(method, status.Code(err).String()).Inc()
}

// setDown records a failed List; it logs once per outage.
func (r *Refresher) setDown(err error) {
	r.metrics.up.Set(0)
	if r.inOutage {
		klog.V(4).InfoS("Kubelet pod-resources API still unavailable", "socket", r.socket, "err", err)
		return
	}
	r.inOutage = true
	r.awaitingPods = r.everUp
	r.emptyAnswers = 0
	r.outageStart = time.Now()
	r.transitioned(outageBegan)
	if r.everUp {
		klog.ErrorS(err, "Kubelet pod-resources API unavailable; keeping the last known pod mapping until it answers",
			"socket", r.socket, "mappedDevices", r.Current().Devices())
		return
	}
	klog.ErrorS(err, "Kubelet pod-resources API unavailable; GPU metrics carry no pod labels until it answers",
		"socket", r.socket)
}

// setUp records a successful List; it logs the first success and the end
// of each outage.
func (r *Refresher) setUp(pods int, m *Mapping) {
	r.metrics.up.Set(1)
	switch {
	case !r.everUp:
		r.transitioned(connected)
		klog.InfoS("Kubelet pod-resources API connected", "socket", r.socket, "pods", pods, "mappedDevices", m.Devices())
	case r.inOutage:
		r.transitioned(outageEnded)
		klog.InfoS("Kubelet pod-resources API available again", "socket", r.socket,
			"outage", time.Since(r.outageStart).Round(time.Millisecond), "pods", pods, "mappedDevices", m.Devices())
	}
	r.everUp = true
	r.inOutage = false
}

// noteUnknown counts and logs each unknown device ID the first time it is
// seen.
func (r *Refresher) noteUnknown(ids []string) {
	for _, id := range ids {
		if _, seen := r.seenUnknown[id]; seen {
			continue
		}
		if len(r.seenUnknown) >= maxTrackedUnknownIDs {
			if !r.unknownOverflowLogged {
				r.unknownOverflowLogged = true
				klog.ErrorS(nil, "Too many distinct unknown device IDs; no longer counting or logging new ones",
					"socket", r.socket, "limit", maxTrackedUnknownIDs)
			}
			return
		}
		r.seenUnknown[id] = struct{}{}
		r.metrics.unknownIDs.Inc()
		_, err := ParseDeviceID(id)
		klog.ErrorS(err, "Ignoring a GPU device ID in no known form; its holder gets no pod labels", "socket", r.socket)
	}
}

// noteCut publishes how many owners were left out beyond
// MaxOwnersPerDevice, and logs when that changes to a count above zero.
func (r *Refresher) noteCut(n int) {
	r.metrics.cut.Set(float64(n))
	if n != 0 && n != r.lastCut {
		klog.ErrorS(nil, "Kubelet listed more containers on one device than are attributed; leaving the rest out",
			"socket", r.socket, "maxPerDevice", MaxOwnersPerDevice, "containers", n)
	}
	r.lastCut = n
}

// noteSkipped publishes how many containers were left out for lack of a
// name, logging when that number changes to a non-zero value.
func (r *Refresher) noteSkipped(n int) {
	r.metrics.skipped.Set(float64(n))
	if n != 0 && n != r.lastSkipped {
		klog.ErrorS(nil, "Kubelet listed containers holding GPUs without a namespace, pod or container name; leaving them out",
			"socket", r.socket, "containers", n)
	}
	r.lastSkipped = n
}
