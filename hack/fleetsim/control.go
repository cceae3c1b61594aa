package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protojson"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
)

// maxPodsBody bounds a PUT of a node's pods.
const maxPodsBody = 4 << 20

// target is one node as GET /targets lists it.
type target struct {
	Name string `json:"name"`
	// URL is the node's /metrics on its own port.
	URL string `json:"url"`
}

// targetList is the answer of GET /targets (and the --targets-file).
type targetList struct {
	Nodes []target `json:"nodes"`
}

// listing is the node list, published once every node listens.
type listing struct {
	list  targetList // written before ready is set, then never
	ready atomic.Bool
}

// publish sets the list and marks the fleet ready.
func (l *listing) publish(list targetList) {
	l.list = list
	l.ready.Store(true)
}

// controlHandler serves the fleet's control API:
//
//	GET  /targets                    the nodes and their /metrics URLs (JSON)
//	GET  /nodes/{node}/metrics       node {node}'s exposition (one-port mode)
//	POST /sim/set?node=<index|all>&gpu=<index|all>&utilization=<0-100>
//	                                 the agent's /sim/set (sim.ParseRequest's
//	                                 parameters) on node <index|all>
//	PUT  /nodes/{node}/pods          the pods node {node}'s kubelet reports: a
//	                                 ListPodResourcesResponse in protobuf JSON
//	GET  /readyz                     200 once every node listens
//
// /targets and /readyz answer 503 until l is published.
func controlHandler(f *fleet, l *listing) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /targets", func(w http.ResponseWriter, _ *http.Request) {
		if !l.ready.Load() {
			http.Error(w, "the nodes are not listening yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(l.list)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !l.ready.Load() {
			http.Error(w, "the nodes are not listening yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/nodes/{node}/metrics", func(w http.ResponseWriter, r *http.Request) {
		n, err := nodeOf(f, r.PathValue("node"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		n.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /sim/set", func(w http.ResponseWriter, r *http.Request) {
		if err := simSet(f, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /nodes/{node}/pods", func(w http.ResponseWriter, r *http.Request) {
		n, err := nodeOf(f, r.PathValue("node"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		pods, err := readPods(w, r)
		if err != nil {
			status := http.StatusBadRequest
			if errors.As(err, new(*http.MaxBytesError)) {
				status = http.StatusRequestEntityTooLarge
			}
			http.Error(w, err.Error(), status)
			return
		}
		n.setPods(pods)
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// nodeOf returns the node a path segment names by index.
func nodeOf(f *fleet, s string) (*node, error) {
	i, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("node %q: want an index", s)
	}
	return f.node(i)
}

// readPods decodes a ListPodResourcesResponse in protobuf JSON.
func readPods(w http.ResponseWriter, r *http.Request) ([]*podresourcesv1.PodResources, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPodsBody))
	if err != nil {
		return nil, fmt.Errorf("reading the pods: %w", err)
	}
	var resp podresourcesv1.ListPodResourcesResponse
	if err := protojson.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("pods: want a ListPodResourcesResponse in protobuf JSON: %w", err)
	}
	return resp.GetPodResources(), nil
}

// simSet applies POST /sim/set. Every node it names is checked before any
// is changed.
func simSet(f *fleet, r *http.Request) error {
	q := r.URL.Query()
	nodes, err := indexes(q.Get("node"), "node", len(f.nodes))
	if err != nil {
		return err
	}
	req, err := sim.ParseRequest(q, f.cfg.GPUsPerNode)
	if err != nil {
		return err
	}
	for _, i := range nodes {
		if err := f.nodes[i].sim.Check(req); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	for _, i := range nodes {
		if err := f.nodes[i].sim.Apply(req); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	return nil
}

// indexes parses "<index>" or "all" for a collection of n.
func indexes(s, what string, n int) ([]int, error) {
	switch s {
	case "":
		return nil, fmt.Errorf("missing %s=<index|all>", what)
	case "all":
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= n {
		return nil, fmt.Errorf("%s=%q: want an index below %d or all", what, s, n)
	}
	return []int{i}, nil
}
