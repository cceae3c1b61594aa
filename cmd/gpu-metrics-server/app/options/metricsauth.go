package options

import (
	"time"

	cliflag "k8s.io/component-base/cli/flag"
)

// Modes of --authn-authz.
const (
	// AuthnAuthzNone leaves /metrics open to anything that reaches the port.
	AuthnAuthzNone = "none"
	// AuthnAuthzKubernetes checks a bearer token with a TokenReview and the
	// access with a SubjectAccessReview of the non-resource URL.
	AuthnAuthzKubernetes = "kubernetes"
)

// MetricsAuthOptions say who may read the agent's /metrics: anyone (none),
// or the holders of a Kubernetes bearer token allowed to get the
// non-resource URL /metrics (kubernetes), as kube-rbac-proxy does. /healthz,
// /readyz and the landing page stay open.
type MetricsAuthOptions struct {
	Mode string
	// CacheTTL is how long a token's review and an access decision
	// (allowed or denied) are cached.
	CacheTTL time.Duration
	// ReviewTimeout bounds one TokenReview or SubjectAccessReview call.
	ReviewTimeout time.Duration
}

// NewMetricsAuthOptions returns the defaults: /metrics open, as
// dcgm-exporter's.
func NewMetricsAuthOptions() *MetricsAuthOptions {
	return &MetricsAuthOptions{Mode: AuthnAuthzNone, CacheTTL: 10 * time.Second, ReviewTimeout: 10 * time.Second}
}

// AddFlags registers the flags in the metrics endpoint's section.
func (o *MetricsAuthOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionWeb)
	fs.StringVar(&o.Mode, "authn-authz", o.Mode, "Who may read /metrics: none (anyone who reaches the port) or kubernetes "+
		"(a bearer token checked with a TokenReview, allowed by a SubjectAccessReview of verb get on the non-resource URL /metrics). "+
		"/healthz, /readyz and / stay open.")
	fs.DurationVar(&o.CacheTTL, "authn-authz-cache-ttl", o.CacheTTL, "How long a token review and an access decision (allowed or denied) are cached (--authn-authz=kubernetes).")
	fs.DurationVar(&o.ReviewTimeout, "authn-authz-timeout", o.ReviewTimeout, "Timeout of one TokenReview or SubjectAccessReview call (--authn-authz=kubernetes).")
}

// Enabled reports whether /metrics is checked.
func (o *MetricsAuthOptions) Enabled() bool { return o.Mode == AuthnAuthzKubernetes }

// Validate reports an unknown mode and non-positive durations.
func (o *MetricsAuthOptions) Validate() []error {
	var errs errorList
	if o.Mode != AuthnAuthzNone && o.Mode != AuthnAuthzKubernetes {
		errs.add(flagErrorf("authn-authz", "%q: use %s or %s", o.Mode, AuthnAuthzNone, AuthnAuthzKubernetes))
	}
	if o.CacheTTL <= 0 {
		errs.add(flagErrorf("authn-authz-cache-ttl", "must be positive, got %v", o.CacheTTL))
	}
	if o.ReviewTimeout <= 0 {
		errs.add(flagErrorf("authn-authz-timeout", "must be positive, got %v", o.ReviewTimeout))
	}
	return errs
}
