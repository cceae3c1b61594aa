package app

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// Reasons a request to a guarded path is refused, the label of the refusal
// counter.
const (
	refusedUnauthenticated = "unauthenticated" // no token, or a token the API server rejects
	refusedAuthnError      = "authn_error"     // the TokenReview failed
	refusedForbidden       = "forbidden"       // the SubjectAccessReview denied (or had no opinion)
	refusedAuthzError      = "authz_error"     // the SubjectAccessReview failed
)

// metricsAuth guards the agent's /metrics as kube-rbac-proxy does: the
// request's bearer token is reviewed (TokenReview), then the user's access
// to the non-resource URL (SubjectAccessReview, verb from the method). Both
// answers are cached by k8s.io/apiserver's delegating factories.
type metricsAuth struct {
	authn   authenticator.Request
	authz   authorizer.Authorizer
	refused *prometheus.CounterVec
}

// newMetricsAuth returns nil when --authn-authz is none, else the guard
// reviewing tokens and access with the API server of kube.
func newMetricsAuth(o *options.MetricsAuthOptions, kube *options.KubeOptions) (*metricsAuth, error) {
	if !o.Enabled() {
		return nil, nil
	}
	cfg, err := kube.RESTConfig("gpu-metrics-server-agent-auth")
	if err != nil {
		return nil, fmt.Errorf("--authn-authz=%s: %w", o.Mode, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("--authn-authz=%s: %w", o.Mode, err)
	}
	return newMetricsAuthFrom(cs, o, genericoptions.DefaultAuthWebhookRetryBackoff())
}

// newMetricsAuthFrom builds the guard on a client: the delegating
// authenticator (bearer tokens only, no anonymous user) and authorizer,
// retrying a failed review with retry.
func newMetricsAuthFrom(cs kubernetes.Interface, o *options.MetricsAuthOptions, retry *wait.Backoff) (*metricsAuth, error) {
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		TokenAccessReviewClient:  cs.AuthenticationV1(),
		TokenAccessReviewTimeout: o.ReviewTimeout,
		WebhookRetryBackoff:      retry,
		CacheTTL:                 o.CacheTTL,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: cs.AuthorizationV1(),
		AllowCacheTTL:             o.CacheTTL,
		DenyCacheTTL:              o.CacheTTL,
		WebhookRetryBackoff:       retry,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("subject access review: %w", err)
	}
	return newMetricsGuard(authn, authz), nil
}

// newMetricsGuard is the guard of authn and authz, with its refusal
// counter.
func newMetricsGuard(authn authenticator.Request, authz authorizer.Authorizer) *metricsAuth {
	return &metricsAuth{
		authn: authn,
		authz: authz,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpu_metrics_server_http_auth_refused_total",
			Help: "Requests to /metrics refused by --authn-authz=kubernetes, by reason: unauthenticated (401), authn_error (TokenReview failed, 401), forbidden (403), authz_error (SubjectAccessReview failed, 403).",
		}, []string{"reason"}),
	}
}

// register adds the refusal counter to reg, each reason at zero.
func (a *metricsAuth) register(reg prometheus.Registerer) {
	for _, r := range []string{refusedUnauthenticated, refusedAuthnError, refusedForbidden, refusedAuthzError} {
		a.refused.WithLabelValues(r)
	}
	reg.MustRegister(a.refused)
}

// rejectedToken is the message of k8s.io/apiserver's bearer token
// authenticator for a token the TokenReview did not authenticate (its error
// is unexported); TestMetricsAuthDelegating checks it.
const rejectedToken = "invalid bearer token"

// tokenRejected reports whether the authenticator's err only says that the
// token is not valid, as opposed to a review that failed.
func tokenRejected(err error) bool {
	var agg utilerrors.Aggregate
	if errors.As(err, &agg) {
		for _, e := range agg.Errors() {
			if !tokenRejected(e) {
				return false
			}
		}
		return len(agg.Errors()) > 0
	}
	return err.Error() == rejectedToken
}

// verbOf is the authorization verb of an HTTP method on a non-resource
// URL, as kube-apiserver names them.
func verbOf(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return strings.ToLower(method)
}

// wrap serves next only to an authenticated user allowed to get the
// request's path. A refusal is 401 (no valid token, or the review failed:
// the client may retry; the agent has no server fault to report) or 403,
// counted by reason; a failed review is logged.
func (a *metricsAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, ok, err := a.authn.AuthenticateRequest(r)
		switch {
		case err != nil && !tokenRejected(err):
			a.refused.WithLabelValues(refusedAuthnError).Inc()
			klog.ErrorS(err, "Reviewing a /metrics token failed; refusing the request", "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="gpu-metrics-server"`)
			http.Error(w, "Unauthorized: the token could not be reviewed", http.StatusUnauthorized)
			return
		case err != nil || !ok:
			a.refused.WithLabelValues(refusedUnauthenticated).Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="gpu-metrics-server"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		// The token has served its purpose: it goes no further.
		r.Header.Del("Authorization")
		attrs := authorizer.AttributesRecord{
			User:            resp.User,
			Verb:            verbOf(r.Method),
			Path:            r.URL.Path,
			ResourceRequest: false,
		}
		decision, reason, err := a.authz.Authorize(r.Context(), attrs)
		switch {
		case decision == authorizer.DecisionAllow:
			next.ServeHTTP(w, r)
			return
		case err != nil:
			a.refused.WithLabelValues(refusedAuthzError).Inc()
			klog.ErrorS(err, "Reviewing /metrics access failed; refusing the request", "user", resp.User.GetName(), "verb", attrs.Verb, "path", attrs.Path)
		default:
			a.refused.WithLabelValues(refusedForbidden).Inc()
			klog.V(2).InfoS("Refused /metrics", "user", resp.User.GetName(), "verb", attrs.Verb, "path", attrs.Path, "reason", reason)
		}
		http.Error(w, fmt.Sprintf("Forbidden: user %q may not %s the non-resource URL %q", resp.User.GetName(), attrs.Verb, attrs.Path), http.StatusForbidden)
	})
}
