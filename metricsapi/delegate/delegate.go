// Package delegate shares custom.metrics.k8s.io with the adapter that
// served it before: the API server keeps answering its own metrics and
// forwards every other custom metrics request to that adapter (the
// delegate), whose answer, status code and body, it passes back unchanged.
//
// The handler runs inside the API server's handler chain, after
// authentication and authorization: a request reaches it only once the
// caller may read what it asks for. The forwarded request carries the
// server's own credentials and none of the caller's headers. The
// delegate's discovery document is fetched in the background and merged
// with ours; a delegate that serves only v1beta1 gets v1beta2 requests
// converted both ways. A slow or absent delegate costs only the requests
// it is asked for: they end after Config.Timeout with 503, and at most
// Config.MaxInFlight of them wait at once.
package delegate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/handlers/negotiation"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

const (
	// DefaultTimeout bounds one delegated request (and one discovery
	// fetch).
	DefaultTimeout = 10 * time.Second
	// DefaultDiscoveryInterval is how often the delegate's discovery is
	// refreshed.
	DefaultDiscoveryInterval = 30 * time.Second
	// DefaultMaxInFlight bounds the delegated requests waiting on the
	// delegate at once: a fourth of the API server's default limit of
	// read-only requests in flight (400), so that a hanging delegate
	// never takes the slots our own metrics are served from.
	DefaultMaxInFlight = 100
	// maxBodyBytes is the largest answer accepted from the delegate: a
	// MetricValueList of ~100,000 objects.
	maxBodyBytes = 32 << 20
	userAgent    = "gpu-metrics-server/delegate"
)

// versions are the custom metrics versions this server serves and
// converts between, newest first.
var versions = []string{"v1beta2", "v1beta1"}

// Config is a Delegator's configuration.
type Config struct {
	// Target is the delegate; it names it in logs and errors.
	Target Target
	// Transport carries requests to the delegate with its TLS settings
	// and our credentials (NewTransport).
	Transport http.RoundTripper
	// Timeout bounds each delegated request and each discovery fetch.
	Timeout time.Duration
	// DiscoveryInterval is the period of the discovery refresh (Run).
	DiscoveryInterval time.Duration
	// MaxInFlight bounds the delegated requests in flight; 0 means
	// DefaultMaxInFlight.
	MaxInFlight int
}

// Delegator forwards the custom metrics requests the local server does not
// serve to the delegate. It is safe for concurrent use.
type Delegator struct {
	cfg     Config
	client  *http.Client
	slots   chan struct{}
	metrics *metrics

	// state is the delegate's last known discovery; nil before the first
	// successful refresh.
	state atomic.Pointer[state]
	// up is the result of the last refresh: 1 up, 0 down, -1 unknown.
	up atomic.Int32
	// ours is the local provider, once Handler has been called: the
	// refresh compares the delegate's metrics with it.
	ours atomic.Pointer[oursRef]
	// shadowed holds the metric names both serve that were logged.
	shadowed sync.Map
}

type oursRef struct {
	p cmprovider.CustomMetricsProvider
}

// New validates cfg and returns a Delegator; nothing is dialled until a
// request or Run.
func New(cfg Config) (*Delegator, error) {
	if cfg.Target.URL == nil {
		return nil, errors.New("delegate: no target")
	}
	if cfg.Transport == nil {
		return nil, errors.New("delegate: no transport")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DiscoveryInterval <= 0 {
		cfg.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	d := &Delegator{
		cfg:     cfg,
		client:  &http.Client{Transport: cfg.Transport, CheckRedirect: noRedirects},
		slots:   make(chan struct{}, cfg.MaxInFlight),
		metrics: newMetrics(),
	}
	d.up.Store(-1)
	return d, nil
}

// noRedirects passes a redirect back as the delegate's answer: following
// it would send our credentials elsewhere.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Target is the delegate.
func (d *Delegator) Target() Target { return d.cfg.Target }

// Handler returns local wrapped: the discovery of each version lists
// ours' metrics and the delegate's; a request for a metric ours serves,
// and everything that is no metric request, goes to local; every other
// metric request goes to the delegate. It must be installed inside the
// API server's authentication and authorization filters.
func (d *Delegator) Handler(local http.Handler, ours cmprovider.CustomMetricsProvider) http.Handler {
	d.ours.Store(&oursRef{ours})
	lister := cmprovider.NewCustomMetricResourceLister(ours)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := classify(r)
		switch {
		case c.kind == discoveryRequest && served(c.version):
			d.serveDiscovery(w, r, c.version, lister)
		case c.kind == metric && served(c.version) && !isOurs(ours.ListAllMetrics(), c.info):
			d.forward(w, r, c)
		default:
			local.ServeHTTP(w, r)
		}
	})
}

// served reports whether v is a version the local server serves.
func served(v string) bool { return v == versions[0] || v == versions[1] }

// errTimeout is the cause of a delegated request's context when
// Config.Timeout ran out.
var errTimeout = errors.New("delegate timeout")

// Outcomes of a delegated request (the outcome label).
const (
	outcomeSuccess     = "success"      // 2xx
	outcomeClientError = "client_error" // 4xx from the delegate
	outcomeServerError = "server_error" // any other status from the delegate
	outcomeTimeout     = "timeout"      // no full answer within the timeout
	outcomeUnreachable = "unreachable"  // no connection, or it broke
	outcomeBadResponse = "bad_response" // too large, or not convertible
	outcomeOverloaded  = "overloaded"   // MaxInFlight requests already waiting
	outcomeCanceled    = "canceled"     // the caller went away
)

// forward sends the request to the delegate and writes its answer.
func (d *Delegator) forward(w http.ResponseWriter, r *http.Request, c classified) {
	start := time.Now()
	outcome := outcomeUnreachable
	defer func() { d.metrics.request(outcome, time.Since(start)) }()

	select {
	case d.slots <- struct{}{}:
		defer func() { <-d.slots }()
	default:
		outcome = outcomeOverloaded
		d.fail(w, r, c, fmt.Sprintf("%d requests are already waiting on the custom metrics delegate %s", cap(d.slots), d.cfg.Target))
		return
	}
	d.metrics.inFlight.Inc()
	defer d.metrics.inFlight.Dec()

	// The delegate's version for this request: the caller's, unless the
	// delegate is known to serve only the other one.
	theirs := d.versionFor(c.version)
	convert := theirs != c.version
	path := r.URL.EscapedPath()
	if convert {
		path = groupPrefix + "/" + theirs + strings.TrimPrefix(path, groupPrefix+"/"+c.version)
	}
	u := d.cfg.Target.URL.Scheme + "://" + d.cfg.Target.URL.Host + path
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}

	ctx, cancel := context.WithTimeoutCause(r.Context(), d.cfg.Timeout, errTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		outcome = outcomeBadResponse
		d.fail(w, r, c, fmt.Sprintf("cannot forward to the custom metrics delegate %s: %v", d.cfg.Target, err))
		return
	}
	// Only what the delegate needs to answer: never the caller's
	// identity (Authorization, Impersonate-*, X-Remote-*) or anything
	// else it sent. The transport adds our credentials.
	accept := r.Header.Get("Accept")
	if convert || accept == "" {
		accept = runtime.ContentTypeJSON
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", userAgent)

	resp, err := d.client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
		_ = resp.Body.Close()
	}
	if err != nil {
		switch {
		case errors.Is(context.Cause(ctx), errTimeout):
			outcome = outcomeTimeout
			d.fail(w, r, c, fmt.Sprintf("the custom metrics delegate %s did not answer within %v", d.cfg.Target, d.cfg.Timeout))
		case r.Context().Err() != nil:
			outcome = outcomeCanceled
		default:
			outcome = outcomeUnreachable
			klog.V(2).InfoS("Custom metrics delegate unreachable", "delegate", d.cfg.Target, "path", r.URL.Path, "err", err)
			d.fail(w, r, c, fmt.Sprintf("the custom metrics delegate %s is unreachable: %v", d.cfg.Target, err))
		}
		return
	}
	if len(body) > maxBodyBytes {
		outcome = outcomeBadResponse
		d.fail(w, r, c, fmt.Sprintf("the custom metrics delegate %s answered more than %d bytes", d.cfg.Target, maxBodyBytes))
		return
	}
	switch resp.StatusCode / 100 {
	case 2:
		outcome = outcomeSuccess
	case 4:
		outcome = outcomeClientError
	default:
		outcome = outcomeServerError
	}
	if convert && resp.StatusCode == http.StatusOK {
		obj, err := runtime.Decode(apiserver.Codecs.UniversalDecoder(), body)
		if _, ok := obj.(*custom_metrics.MetricValueList); err != nil || !ok {
			outcome = outcomeBadResponse
			if err == nil {
				err = fmt.Errorf("got %T, want a MetricValueList", obj)
			}
			d.fail(w, r, c, fmt.Sprintf("the custom metrics delegate %s answered %s with something that is not a %s MetricValueList: %v", d.cfg.Target, theirs, theirs, err))
			return
		}
		responsewriters.WriteObjectNegotiated(apiserver.Codecs, negotiation.DefaultEndpointRestrictions,
			schema.GroupVersion{Group: custom_metrics.GroupName, Version: c.version}, w, r, http.StatusOK, obj, false)
		return
	}
	// Unchanged: status code, body, and the headers that describe it.
	for _, h := range []string{"Content-Type", "Cache-Control", "Warning"} {
		for _, v := range resp.Header.Values(h) {
			w.Header().Add(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, bytes.NewReader(body))
}

// fail answers 503 with msg, in the caller's version.
func (d *Delegator) fail(w http.ResponseWriter, r *http.Request, c classified, msg string) {
	responsewriters.ErrorNegotiated(apierrors.NewServiceUnavailable(msg), apiserver.Codecs,
		schema.GroupVersion{Group: custom_metrics.GroupName, Version: c.version}, w, r)
}
