package collector

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// SimHandler serves POST /sim/set to drive a simulated backend from tests
// and demos. It exists only in sim mode. Query parameters:
//
//	gpu=<index|all>            required: the GPU (all: every GPU)
//	utilization=<0-100>        percent (a MIG instance's activity × 100)
//	memory_used_mib=<n>        MiB
//	gpu_i_id=<id>              a MIG instance of GPU <index> instead of the GPU
//	pod=<namespace>/<name>     a process of that pod on GPU <index> instead of
//	pod_uid=<uid>              the GPU itself (either or both)
//
// Values set on a GPU and on its pods' processes add up, as on a real GPU.
func SimHandler(s *Sim) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		if err := simSet(s, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func simSet(s *Sim, r *http.Request) error {
	q := r.URL.Query()
	index := -1
	switch g := q.Get("gpu"); g {
	case "":
		return fmt.Errorf("missing gpu=<index|all>")
	case "all":
	default:
		i, err := strconv.Atoi(g)
		if err != nil {
			return fmt.Errorf("gpu=%q: want an index or all", g)
		}
		index = i
	}
	var u SimUpdate
	if v := q.Get("utilization"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("utilization=%q: %v", v, err)
		}
		u.Utilization = &f
	}
	if v := q.Get("memory_used_mib"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > 1<<40 {
			return fmt.Errorf("memory_used_mib=%q: want a whole number of MiB", v)
		}
		b := n * mib
		u.MemoryUsedBytes = &b
	}
	if u.Utilization == nil && u.MemoryUsedBytes == nil {
		return fmt.Errorf("nothing to set: give utilization and/or memory_used_mib")
	}
	pod := PodRef{UID: q.Get("pod_uid")}
	if v := q.Get("pod"); v != "" {
		ns, name, ok := strings.Cut(v, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("pod=%q: want <namespace>/<name>", v)
		}
		pod.Namespace, pod.Name = ns, name
	}
	gi := q.Get("gpu_i_id")
	switch {
	case gi != "" && pod != (PodRef{}):
		return fmt.Errorf("gpu_i_id and pod do not go together: MIG instances are attributed whole")
	case gi != "":
		id, err := strconv.Atoi(gi)
		if err != nil || index < 0 {
			return fmt.Errorf("gpu_i_id=%q: want a number, with a GPU index", gi)
		}
		return s.SetMIG(index, id, u)
	case pod != (PodRef{}):
		if index < 0 {
			return fmt.Errorf("pod needs one GPU index, not gpu=all")
		}
		return s.SetPod(index, pod, u)
	}
	return s.Set(index, u)
}
