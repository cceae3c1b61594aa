// Package doctor walks the chain from the GPUs to the HorizontalPodAutoscaler
// (APIService, aggregator, agents, a pod's metrics, HPAs, RBAC) and says,
// check by check, what works, what does not, why, and the fix.
//
// It reads only what the user's credentials may read: a check it is not
// allowed to make is skipped, naming the missing permission, never reported
// as a failure of the system.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/metrics/pkg/client/custom_metrics"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// Status is a check's outcome.
type Status string

// The outcomes, from good to bad.
const (
	Pass Status = "PASS"
	Skip Status = "SKIP"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Check is one line of the report.
type Check struct {
	// Name is the check's topic: apiservice, aggregator, agent, pod, hpa,
	// rbac.
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Fix says what to do about a WARN or FAIL.
	Fix string `json:"fix,omitempty"`
	// MissingPermission is why a check was skipped: the permission the
	// user lacks, as `kubectl auth can-i` takes it.
	MissingPermission string `json:"missingPermission,omitempty"`
}

// Config says where gpu-metrics-server runs and what to look at.
type Config struct {
	// ServerNamespace is where the aggregator and the agents run.
	ServerNamespace string
	// AggregatorSelector, AgentSelector select their pods there.
	AggregatorSelector, AgentSelector labels.Selector
	// StaleAfter is the age past which a sample is stale.
	StaleAfter time.Duration

	// Namespace holds Pod or HPA, and the HPAs checked ("" : every
	// namespace's HPAs).
	Namespace string
	// Pod, HPA: the pod, or every pod of the HPA's target, to explain.
	Pod, HPA string
}

// Doctor runs the checks with the user's clients.
type Doctor struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Metrics custom_metrics.CustomMetricsClient
	// SelfMetrics reads a pod's /metrics (the aggregator's, an agent's).
	SelfMetrics SelfMetricsFunc
	// Now is the time samples are aged against.
	Now func() time.Time
}

// ErrCannotRun means the doctor could not run at all (no API server).
var ErrCannotRun = errors.New("cannot run")

// report collects checks.
type report struct{ checks []Check }

func (r *report) add(c Check) { r.checks = append(r.checks, c) }

func (r *report) pass(name, format string, args ...any) {
	r.add(Check{Name: name, Status: Pass, Message: fmt.Sprintf(format, args...)})
}

func (r *report) warn(name, fix, format string, args ...any) {
	r.add(Check{Name: name, Status: Warn, Message: fmt.Sprintf(format, args...), Fix: fix})
}

func (r *report) fail(name, fix, format string, args ...any) {
	r.add(Check{Name: name, Status: Fail, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// denied records a check skipped because err is a refusal (true), else
// returns false.
func (r *report) denied(name string, err error, what string) bool {
	var f *kubeapi.Forbidden
	if !errors.As(err, &f) {
		return false
	}
	r.add(Check{Name: name, Status: Skip, Message: "not allowed to check " + what, MissingPermission: f.Permission()})
	return true
}

// refused records a check skipped because the pod refused the API server's
// pod proxy (err is a *PodRefused; true), else returns false: the proxy
// reads anonymously, so it is a permission of system:anonymous that is
// missing, not a failure of the system.
func (r *report) refused(name string, err error, what string) bool {
	var p *PodRefused
	if !errors.As(err, &p) {
		return false
	}
	r.add(Check{Name: name, Status: Skip, Message: fmt.Sprintf("not allowed to check %s: %v", what, p),
		MissingPermission: "get /metrics --as=system:anonymous"})
	return true
}

// failed records err (a refusal as a skip, anything else as a failure to
// read) for check name about what.
func (r *report) failed(name string, err error, what string) {
	if r.denied(name, err, what) {
		return
	}
	r.add(Check{Name: name, Status: Fail, Message: fmt.Sprintf("reading %s: %v", what, err)})
}

// Run makes every check and returns the report. The error is ErrCannotRun
// (wrapped) when kube-apiserver cannot be reached at all.
func (d *Doctor) Run(ctx context.Context, cfg Config) ([]Check, error) {
	if _, err := d.Kube.Discovery().ServerVersion(); err != nil {
		return nil, fmt.Errorf("%w: kube-apiserver: %v", ErrCannotRun, err)
	}
	r := &report{}
	st := &state{}
	d.checkAPIServices(ctx, cfg, r, st)
	d.checkAggregator(ctx, cfg, r, st)
	d.checkAgents(ctx, cfg, r, st)
	if cfg.Pod != "" || cfg.HPA != "" {
		d.checkPods(ctx, cfg, r, st)
	}
	d.checkHPAs(ctx, cfg, r, st)
	d.checkRBAC(ctx, cfg, r, st)
	return r.checks, nil
}

// ExitCode is the doctor's exit status for checks: 1 when one failed, else
// 0 (WARN and SKIP pass).
func ExitCode(checks []Check) int {
	for _, c := range checks {
		if c.Status == Fail {
			return 1
		}
	}
	return 0
}

// Print writes one line per check (status, topic, message) and, under a
// WARN or FAIL, the fix; under a SKIP, the missing permission.
func Print(w io.Writer, checks []Check) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Message)
		if c.MissingPermission != "" {
			fmt.Fprintf(tw, "\t\tmissing permission: %s\n", c.MissingPermission)
		}
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[Status]int{}
	for _, c := range checks {
		counts[c.Status]++
	}
	var parts []string
	for _, s := range []Status{Pass, Warn, Fail, Skip} {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], strings.ToLower(string(s))))
	}
	_, err := fmt.Fprintf(w, "\n%s\n", strings.Join(parts, ", "))
	return err
}

// PrintJSON writes the checks as {"checks":[...],"exitCode":n}.
func PrintJSON(w io.Writer, checks []Check) error {
	if checks == nil {
		checks = []Check{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Checks   []Check `json:"checks"`
		ExitCode int     `json:"exitCode"`
	}{checks, ExitCode(checks)})
}
