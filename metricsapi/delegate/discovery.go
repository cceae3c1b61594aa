package delegate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// state is what the delegate's discovery said at one refresh.
type state struct {
	// resources are the metrics the delegate lists, by the versions it
	// serves (a version it does not serve is absent).
	resources map[string][]metav1.APIResource
}

// versionFor returns the version to ask the delegate in for a request in
// version v: v itself unless the delegate is known to serve only the
// other one.
func (d *Delegator) versionFor(v string) string {
	st := d.state.Load()
	if st == nil {
		return v
	}
	if _, ok := st.resources[v]; ok {
		return v
	}
	for _, other := range versions {
		if _, ok := st.resources[other]; ok {
			return other
		}
	}
	return v
}

// serveDiscovery answers GET /apis/custom.metrics.k8s.io/<v>: our metrics,
// then those of the delegate's last known list that are not ours.
func (d *Delegator) serveDiscovery(w http.ResponseWriter, r *http.Request, v string, ours discovery.APIResourceLister) {
	resources := ours.ListAPIResources()
	if st := d.state.Load(); st != nil {
		resources = merge(resources, st.resources[d.versionFor(v)])
	}
	gv := schema.GroupVersion{Group: custom_metrics.GroupName, Version: v}
	discovery.NewAPIVersionHandler(apiserver.Codecs, gv, discovery.APIResourceListerFunc(func() []metav1.APIResource {
		return resources
	})).ServeHTTP(w, r)
}

// merge appends to ours the resources of theirs whose names ours does not
// list: where both serve a metric, ours win.
func merge(ours, theirs []metav1.APIResource) []metav1.APIResource {
	out := slices.Clip(ours)
	for _, t := range theirs {
		if !slices.ContainsFunc(ours, func(o metav1.APIResource) bool { return o.Name == t.Name }) {
			out = append(out, t)
		}
	}
	return out
}

// Run refreshes the delegate's discovery at once and then every
// Config.DiscoveryInterval until ctx ends.
func (d *Delegator) Run(ctx context.Context) {
	klog.InfoS("Forwarding the custom metrics this server does not serve", "delegate", d.cfg.Target,
		"timeout", d.cfg.Timeout, "discoveryInterval", d.cfg.DiscoveryInterval, "maxInFlight", cap(d.slots))
	wait.UntilWithContext(ctx, d.Refresh, d.cfg.DiscoveryInterval)
}

// Refresh fetches the delegate's discovery of each version once. On
// success it replaces the last known list; on failure the last known list
// stays, and the delegate counts as down. A change between up and down is
// logged.
func (d *Delegator) Refresh(ctx context.Context) {
	st, err := d.fetchDiscovery(ctx)
	if err != nil {
		d.metrics.refresh(false)
		if d.up.Swap(0) != 0 {
			known := -1
			if last := d.state.Load(); last != nil {
				known = countResources(last)
			}
			klog.ErrorS(err, "Custom metrics delegate is down: its metrics answer 503 until it is back; discovery keeps its last known list",
				"delegate", d.cfg.Target, "lastKnownMetrics", known)
		}
		return
	}
	d.metrics.refresh(true)
	d.state.Store(st)
	d.metrics.setDiscovered(st)
	d.checkShadowed(st)
	if d.up.Swap(1) != 1 {
		klog.InfoS("Custom metrics delegate is up", "delegate", d.cfg.Target, "versions", servedVersions(st), "metrics", countResources(st))
	}
}

// Up reports whether the last discovery refresh succeeded (false before
// the first).
func (d *Delegator) Up() bool { return d.up.Load() == 1 }

// fetchDiscovery reads the delegate's resource list of each version. A
// version answered 404 is one the delegate does not serve; any other
// failure fails the refresh (a partial answer would be mistaken for an
// older delegate).
func (d *Delegator) fetchDiscovery(ctx context.Context) (*state, error) {
	st := &state{resources: map[string][]metav1.APIResource{}}
	for _, v := range versions {
		list, found, err := d.fetchResourceList(ctx, v)
		if err != nil {
			return nil, err
		}
		if found {
			st.resources[v] = list.APIResources
		}
	}
	if len(st.resources) == 0 {
		return nil, fmt.Errorf("%s serves neither %s of %s: it is no custom metrics adapter",
			d.cfg.Target, strings.Join(versions, " nor "), custom_metrics.GroupName)
	}
	return st, nil
}

func (d *Delegator) fetchResourceList(ctx context.Context, v string) (*metav1.APIResourceList, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	u := d.cfg.Target.URL.Scheme + "://" + d.cfg.Target.URL.Host + groupPrefix + "/" + v
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Accept", runtime.ContentTypeJSON)
	req.Header.Set("User-Agent", userAgent)
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("GET %s: %w", u, err)
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, nil
	case resp.StatusCode != http.StatusOK:
		return nil, false, fmt.Errorf("GET %s: %s: %s", u, resp.Status, snippet(body))
	case len(body) > maxBodyBytes:
		return nil, false, fmt.Errorf("GET %s: more than %d bytes", u, maxBodyBytes)
	}
	list := &metav1.APIResourceList{}
	if err := runtime.DecodeInto(apiserver.Codecs.UniversalDecoder(), body, list); err != nil {
		return nil, false, fmt.Errorf("GET %s: not an APIResourceList: %w", u, err)
	}
	if want := custom_metrics.GroupName + "/" + v; list.GroupVersion != want {
		return nil, false, fmt.Errorf("GET %s: the list is of %q, want %q", u, list.GroupVersion, want)
	}
	return list, true, nil
}

// snippet is the start of a body, for an error message.
func snippet(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// checkShadowed logs, once per name, the delegate's metrics that ours
// serve too (ours win), and counts them.
func (d *Delegator) checkShadowed(st *state) {
	ref := d.ours.Load()
	if ref == nil {
		return
	}
	ours := cmprovider.NewCustomMetricResourceLister(ref.p).ListAPIResources()
	names := map[string]bool{}
	for _, list := range st.resources {
		for _, t := range list {
			if slices.ContainsFunc(ours, func(o metav1.APIResource) bool { return o.Name == t.Name }) {
				names[t.Name] = true
			}
		}
	}
	d.metrics.shadowed.Set(float64(len(names)))
	for name := range names {
		if _, logged := d.shadowed.LoadOrStore(name, true); !logged {
			klog.InfoS("The custom metrics delegate serves a metric this server serves too; this server's answers win",
				"delegate", d.cfg.Target, "metric", name)
		}
	}
}

func countResources(st *state) int {
	names := map[string]bool{}
	for _, list := range st.resources {
		for _, r := range list {
			names[r.Name] = true
		}
	}
	return len(names)
}

func servedVersions(st *state) []string {
	var out []string
	for _, v := range versions {
		if _, ok := st.resources[v]; ok {
			out = append(out, v)
		}
	}
	return out
}
