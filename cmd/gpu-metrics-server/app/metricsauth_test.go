package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// fakeAuthn knows the token "good" (user "reader") and "nobody" (user
// "nobody"); "broken" fails as an unreachable API server would.
var fakeAuthn = authenticator.RequestFunc(func(r *http.Request) (*authenticator.Response, bool, error) {
	tok, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !found:
		return nil, false, nil
	case tok == "good":
		return &authenticator.Response{User: &user.DefaultInfo{Name: "reader"}}, true, nil
	case tok == "nobody":
		return &authenticator.Response{User: &user.DefaultInfo{Name: "nobody"}}, true, nil
	case tok == "broken":
		return nil, false, errors.New("tokenreviews: connection refused")
	}
	return nil, false, nil
})

// fakeAuthz lets "reader" get /metrics; "nobody" has no permission; the
// user "error" makes the review fail.
var fakeAuthz = authorizer.AuthorizerFunc(func(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	switch {
	case a.IsResourceRequest():
		return authorizer.DecisionDeny, "resource request", nil
	case a.GetUser().GetName() == "reader" && a.GetVerb() == "get" && a.GetPath() == "/metrics":
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "no rule", nil
})

// guarded is the guard around a handler that answers "metrics" and
// reports whether the token reached it.
func guarded(a *metricsAuth) http.Handler {
	return a.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "token leaked to the handler", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("metrics"))
	}))
}

func TestMetricsAuth(t *testing.T) {
	for _, tc := range []struct {
		name, method, header string
		want                 int
		reason               string // the refusal counted; "" none
	}{
		{"no token", http.MethodGet, "", http.StatusUnauthorized, refusedUnauthenticated},
		{"basic auth", http.MethodGet, "Basic YTpi", http.StatusUnauthorized, refusedUnauthenticated},
		{"unknown token", http.MethodGet, "Bearer forged", http.StatusUnauthorized, refusedUnauthenticated},
		{"review fails", http.MethodGet, "Bearer broken", http.StatusUnauthorized, refusedAuthnError},
		{"no permission", http.MethodGet, "Bearer nobody", http.StatusForbidden, refusedForbidden},
		{"allowed", http.MethodGet, "Bearer good", http.StatusOK, ""},
		{"allowed HEAD", http.MethodHead, "Bearer good", http.StatusOK, ""},
		{"POST is another verb", http.MethodPost, "Bearer good", http.StatusForbidden, refusedForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newMetricsGuard(fakeAuthn, fakeAuthz)
			a.register(prometheus.NewRegistry())
			req := httptest.NewRequest(tc.method, "/metrics", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			guarded(a).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
			if tc.want == http.StatusOK && tc.method == http.MethodGet && rec.Body.String() != "metrics" {
				t.Errorf("body %q, want the handler's", rec.Body)
			}
			for _, r := range []string{refusedUnauthenticated, refusedAuthnError, refusedForbidden, refusedAuthzError} {
				want := 0.0
				if r == tc.reason {
					want = 1
				}
				if got := testutil.ToFloat64(a.refused.WithLabelValues(r)); got != want {
					t.Errorf("refused{reason=%q} = %v, want %v", r, got, want)
				}
			}
		})
	}
}

// TestMetricsAuthFailedAuthorization: a failed SubjectAccessReview is a
// 403, counted apart from a denial.
func TestMetricsAuthFailedAuthorization(t *testing.T) {
	failing := authorizer.AuthorizerFunc(func(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
		return authorizer.DecisionNoOpinion, "", errors.New("subjectaccessreviews: timeout")
	})
	a := newMetricsGuard(fakeAuthn, failing)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Authorization", "Bearer good")
	rec := httptest.NewRecorder()
	guarded(a).ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("status %d, want 403", rec.Code)
	}
	if got := testutil.ToFloat64(a.refused.WithLabelValues(refusedAuthzError)); got != 1 {
		t.Errorf("authz_error refusals %v, want 1", got)
	}
}

// reviewServer is a fake API server's TokenReview and SubjectAccessReview:
// the token "good" is user "reader", who may get /metrics; it counts the
// reviews, and fails every review while broken is set.
type reviewServer struct {
	tokenReviews, accessReviews atomic.Int32
	broken                      atomic.Bool
}

func (s *reviewServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var out any
	switch r.URL.Path {
	case "/apis/authentication.k8s.io/v1/tokenreviews":
		s.tokenReviews.Add(1)
		var tr authenticationv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if name, ok := map[string]string{"good": "reader", "nobody": "nobody"}[tr.Spec.Token]; ok {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: name}}
		}
		out = &tr
	case "/apis/authorization.k8s.io/v1/subjectaccessreviews":
		s.accessReviews.Add(1)
		var sar authorizationv1.SubjectAccessReview
		if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		nr := sar.Spec.NonResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "reader" && nr != nil && nr.Verb == "get" && nr.Path == "/metrics"
		out = &sar
	default:
		http.NotFound(w, r)
		return
	}
	if s.broken.Load() {
		http.Error(w, "etcd is down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// TestMetricsAuthDelegating runs the guard on k8s.io/apiserver's
// delegating authenticator and authorizer over a fake API server: the
// reviews it asks for, their answers, and their cache.
func TestMetricsAuthDelegating(t *testing.T) {
	srv := &reviewServer{}
	o := options.NewMetricsAuthOptions()
	o.Mode, o.CacheTTL = options.AuthnAuthzKubernetes, time.Hour // no entry expires during the test
	api := httptest.NewServer(srv)
	defer api.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newMetricsAuthFrom(cs, o, &wait.Backoff{Steps: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := guarded(a)
	get := func(token string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, step := range []struct {
		name                    string
		token                   string
		broken                  bool
		want                    int
		tokenReviews, sarReview int32 // totals after the step
	}{
		{"no token: no review", "", false, http.StatusUnauthorized, 0, 0},
		{"allowed", "good", false, http.StatusOK, 1, 1},
		{"allowed again: both cached", "good", false, http.StatusOK, 1, 1},
		{"forbidden", "nobody", false, http.StatusForbidden, 2, 2},
		{"forbidden again: denial cached", "nobody", false, http.StatusForbidden, 2, 2},
		{"unknown token", "forged", false, http.StatusUnauthorized, 3, 2},
		{"API down: a cached token still served", "good", true, http.StatusOK, 3, 2},
		{"API down: a new token refused with 401", "other", true, http.StatusUnauthorized, 4, 2},
	} {
		srv.broken.Store(step.broken)
		if got := get(step.token); got != step.want {
			t.Errorf("%s: status %d, want %d", step.name, got, step.want)
		}
		if tr, sar := srv.tokenReviews.Load(), srv.accessReviews.Load(); tr != step.tokenReviews || sar != step.sarReview {
			t.Errorf("%s: %d token reviews and %d access reviews, want %d and %d", step.name, tr, sar, step.tokenReviews, step.sarReview)
		}
	}
	if got := testutil.ToFloat64(a.refused.WithLabelValues(refusedAuthnError)); got != 1 {
		t.Errorf("authn_error refusals %v, want 1", got)
	}
}

// TestNodeAgentGuardsOnlyMetrics: with the guard, the agent's /metrics
// asks for a token while its probes and landing page stay open.
func TestNodeAgentGuardsOnlyMetrics(t *testing.T) {
	o := options.NewAgentOptions()
	o.Backend, o.PodResourcesSocket, o.ProcessAttribution = "sim", "", false
	routes, _, err := newNodeAgent(o, options.NewKubeOptions(""), agentHooks{auth: newMetricsGuard(fakeAuthn, fakeAuthz)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, token  string
		unauthorized bool
	}{
		{"/metrics", "", true},
		{"/metrics", "good", false},
		{"/healthz", "", false},
		{"/readyz", "", false}, // 503 before the first sample: open, not ready
		{"/", "", false},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		rec := httptest.NewRecorder()
		routes.ServeHTTP(rec, req)
		if got := rec.Code == http.StatusUnauthorized; got != tc.unauthorized {
			t.Errorf("GET %s (token %q): status %d, want 401: %v", tc.path, tc.token, rec.Code, tc.unauthorized)
		}
	}
}
