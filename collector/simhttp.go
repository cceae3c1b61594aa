package collector

import (
	"fmt"
	"net/http"
	"strconv"
)

// SimHandler serves POST /sim/set?gpu=<index|all>&utilization=<0-100>&memory_used_mib=<n>
// to drive a simulated backend from tests and demos. It exists only in sim
// mode.
func SimHandler(s *Sim) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		index := -1
		switch g := q.Get("gpu"); g {
		case "":
			http.Error(w, "missing gpu=<index|all>", http.StatusBadRequest)
			return
		case "all":
		default:
			i, err := strconv.Atoi(g)
			if err != nil {
				http.Error(w, fmt.Sprintf("gpu=%q: want an index or all", g), http.StatusBadRequest)
				return
			}
			index = i
		}
		var u SimUpdate
		if v := q.Get("utilization"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				http.Error(w, fmt.Sprintf("utilization=%q: %v", v, err), http.StatusBadRequest)
				return
			}
			u.Utilization = &f
		}
		if v := q.Get("memory_used_mib"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n > 1<<40 {
				http.Error(w, fmt.Sprintf("memory_used_mib=%q: want a whole number of MiB", v), http.StatusBadRequest)
				return
			}
			b := n * mib
			u.MemoryUsedBytes = &b
		}
		if u.Utilization == nil && u.MemoryUsedBytes == nil {
			http.Error(w, "nothing to set: give utilization and/or memory_used_mib", http.StatusBadRequest)
			return
		}
		if err := s.Set(index, u); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
