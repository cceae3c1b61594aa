package nvml

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// XID errors reach the agent as NVML events. A goroutine waits on an event
// set that every GPU registered its XID events in, and records each GPU's
// last XID; a sampling round only reads what it recorded. No scrape and no
// sampling round ever waits for an event.

// xidWaitTimeout bounds one wait, so that Close is answered within it.
const xidWaitTimeout = 500 * time.Millisecond

// xidRetryDelay is the pause after a failed wait before the next; a
// variable for tests.
var xidRetryDelay = time.Second

// xidState is a GPU's last XID, written by the watcher and read by the
// sampling round.
type xidState struct {
	// watched: the GPU's XID events are registered; without it the field
	// is absent.
	watched bool
	last    atomic.Uint64
}

// xidWatcher waits on the event set in the background.
type xidWatcher struct {
	lib     nvml.Interface
	set     nvml.EventSet
	devices []*device
	stop    chan struct{}
	done    chan struct{}
	// stopOnce makes close safe to call twice.
	stopOnce sync.Once

	events     prometheus.Counter
	waitErrors prometheus.Counter
}

// xidMetrics are the watcher's self-metrics, registered once per backend.
type xidMetrics struct {
	events, waitErrors prometheus.Counter
}

func newXIDMetrics(reg prometheus.Registerer) xidMetrics {
	m := xidMetrics{
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gpu_metrics_server_xid_events_total",
			Help: "XID error events NVML reported (DCGM_FI_DEV_XID_ERRORS holds each GPU's last).",
		}),
		waitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gpu_metrics_server_xid_event_wait_errors_total",
			Help: "Waits on NVML's XID event set that failed (other than by timing out); the agent waits again after a pause.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.events, m.waitErrors)
	}
	return m
}

// watchXIDs registers the XID events of every GPU in gpus in one event set
// and starts waiting on it. A GPU that cannot register them (NVML
// NOT_SUPPORTED: some vGPU guests and containers) has no XID field; that is
// logged once per GPU. Nil when no GPU could register.
func watchXIDs(lib nvml.Interface, gpus []*device, m xidMetrics) *xidWatcher {
	set, ret := lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		klog.ErrorS(errors.New(nvmlError(ret)), "Cannot create an NVML event set: DCGM_FI_DEV_XID_ERRORS is absent")
		return nil
	}
	w := &xidWatcher{lib: lib, set: set, stop: make(chan struct{}), done: make(chan struct{}), events: m.events, waitErrors: m.waitErrors}
	for _, d := range gpus {
		if ret := d.handle.RegisterEvents(nvml.EventTypeXidCriticalError, set); ret != nvml.SUCCESS {
			klog.InfoS("GPU cannot report XID events to the agent: its DCGM_FI_DEV_XID_ERRORS is absent", "uuid", d.info.UUID, "reason", nvmlError(ret))
			continue
		}
		d.xid.watched = true
		w.devices = append(w.devices, d)
	}
	if len(w.devices) == 0 {
		set.Free()
		return nil
	}
	go w.run()
	return w
}

func (w *xidWatcher) run() {
	defer close(w.done)
	logged := false
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		data, ret := w.set.Wait(uint32(xidWaitTimeout / time.Millisecond))
		switch ret {
		case nvml.SUCCESS:
			w.record(data)
		case nvml.ERROR_TIMEOUT:
		default:
			w.waitErrors.Inc()
			if !logged {
				logged = true
				klog.ErrorS(errors.New(nvmlError(ret)), "Waiting for XID events failed; the agent keeps waiting (failures are counted in gpu_metrics_server_xid_event_wait_errors_total)")
			}
			select {
			case <-w.stop:
				return
			case <-time.After(xidRetryDelay):
			}
		}
	}
}

// record stores an event's XID on the GPU it names.
func (w *xidWatcher) record(data nvml.EventData) {
	if data.EventType&nvml.EventTypeXidCriticalError == 0 {
		return
	}
	for _, d := range w.devices {
		if d.handle == data.Device {
			d.xid.last.Store(data.EventData)
			w.events.Inc()
			klog.InfoS("XID error", "uuid", d.info.UUID, "xid", data.EventData, "gpuInstance", data.GpuInstanceId, "computeInstance", data.ComputeInstanceId)
			return
		}
	}
	klog.V(2).InfoS("XID event for a GPU the agent does not read", "xid", data.EventData)
}

// close stops the watcher, waits for its goroutine and frees the event set:
// after it returns, NVML may shut down.
func (w *xidWatcher) close() {
	w.stopOnce.Do(func() {
		close(w.stop)
		<-w.done
		if ret := w.set.Free(); ret != nvml.SUCCESS {
			klog.ErrorS(errors.New(nvmlError(ret)), "Freeing the XID event set")
		}
	})
}
