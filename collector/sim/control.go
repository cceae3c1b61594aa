package sim

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Handler serves POST /sim/set (ParseRequest's parameters) to drive s from
// tests and demos. It exists only in sim mode. Values set on a GPU and on
// its pods' processes add up, as on a real GPU.
func Handler(s *Sim) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		req, err := ParseRequest(r.URL.Query(), len(s.gpus))
		if err == nil {
			err = s.Apply(req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// maxMemoryMiB bounds memory_used_mib (a MiB count whose bytes fit a
// uint64 with room to spare).
const maxMemoryMiB = 1 << 40

// maxXID and maxRows bound xid and the remapped-row counts: far above any
// XID NVIDIA defines and any row count a GPU has.
const (
	maxXID  = 1 << 16
	maxRows = 1 << 32
)

// ParseRequest parses the query of POST /sim/set for a simulation of gpus
// GPUs (hack/fleetsim's control API takes the same parameters):
//
//	gpu=<index|all>                   required: the GPU (all: every GPU)
//	utilization=<0-100>               percent (a MIG instance's activity × 100)
//	memory_used_mib=<n>               MiB
//	xid=<n>                           the GPU's last XID error (DCGM_FI_DEV_XID_ERRORS)
//	correctable_remapped_rows=<n>     the GPU's remapped-row counters (they
//	uncorrectable_remapped_rows=<n>   do not go back)
//	row_remap_failure=<true|false>    whether a row failed to be remapped
//	lost=true                         the GPU falls off the bus (NVML's GPU-is-lost):
//	                                  its series go, for good (until the agent restarts)
//	gpu_i_id=<id>                     a MIG instance of GPU <index> instead of the GPU
//	pod=<namespace>/<name>            a process of that pod on GPU <index> instead of
//	pod_uid=<uid>                     the GPU itself (either or both)
//
// At least one value to set is required; xid, the remapped rows and lost
// belong to the whole GPU (not with gpu_i_id or pod). Other parameters are
// ignored.
func ParseRequest(q url.Values, gpus int) (Request, error) {
	r := Request{GPU: AllGPUs}
	switch g := q.Get("gpu"); g {
	case "":
		return Request{}, errors.New("missing gpu=<index|all>")
	case "all":
	default:
		i, err := strconv.Atoi(g)
		if err != nil || i < 0 || i >= gpus {
			return Request{}, fmt.Errorf("gpu=%q: want an index below %d or all", g, gpus)
		}
		r.GPU = i
	}
	if v := q.Get("utilization"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f >= 0 && f <= 100) {
			return Request{}, fmt.Errorf("utilization=%q: want a percentage 0-100", v)
		}
		r.Update.Utilization = &f
	}
	if v := q.Get("memory_used_mib"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > maxMemoryMiB {
			return Request{}, fmt.Errorf("memory_used_mib=%q: want a whole number of MiB", v)
		}
		b := n * mib
		r.Update.MemoryUsedBytes = &b
	}
	for _, c := range []struct {
		name string
		max  uint64
		dst  **uint64
	}{
		{"xid", maxXID, &r.Update.XID},
		{"correctable_remapped_rows", maxRows, &r.Update.CorrectableRemappedRows},
		{"uncorrectable_remapped_rows", maxRows, &r.Update.UncorrectableRemappedRows},
	} {
		if v := q.Get(c.name); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n > c.max {
				return Request{}, fmt.Errorf("%s=%q: want a whole number up to %d", c.name, v, c.max)
			}
			*c.dst = &n
		}
	}
	if v := q.Get("row_remap_failure"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Request{}, fmt.Errorf("row_remap_failure=%q: want true or false", v)
		}
		r.Update.RowRemapFailure = &b
	}
	if v := q.Get("lost"); v != "" {
		if b, err := strconv.ParseBool(v); err != nil || !b {
			return Request{}, fmt.Errorf("lost=%q: want true (a lost GPU does not come back until the agent restarts)", v)
		}
		lost := true
		r.Update.Lost = &lost
	}
	if r.Update.Utilization == nil && r.Update.MemoryUsedBytes == nil && !r.Update.gpuLevel() {
		return Request{}, errors.New("missing utilization=<0-100>, memory_used_mib=<MiB>, xid=<n>, remapped rows or lost=true: nothing to set")
	}
	r.Pod.UID = q.Get("pod_uid")
	if v := q.Get("pod"); v != "" {
		ns, name, ok := strings.Cut(v, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return Request{}, fmt.Errorf("pod=%q: want <namespace>/<name>", v)
		}
		r.Pod.Namespace, r.Pod.Name = ns, name
	}
	pod := r.Pod.UID != "" || r.Pod.Name != ""
	if gi := q.Get("gpu_i_id"); gi != "" {
		id, err := strconv.Atoi(gi)
		if err != nil || id < 0 || r.GPU == AllGPUs {
			return Request{}, fmt.Errorf("gpu_i_id=%q: want a GPU instance id, with a GPU index", gi)
		}
		if pod {
			return Request{}, errors.New("gpu_i_id and pod do not go together: MIG instances are attributed whole")
		}
		if r.Update.gpuLevel() {
			return Request{}, errors.New("gpu_i_id with xid, remapped rows or lost: those belong to the whole GPU")
		}
		r.GPUInstance = &id
	}
	if pod && r.GPU == AllGPUs {
		return Request{}, errors.New("pod needs one GPU index, not gpu=all")
	}
	if pod && r.Update.gpuLevel() {
		return Request{}, errors.New("pod with xid, remapped rows or lost: those belong to the whole GPU")
	}
	return r, nil
}
