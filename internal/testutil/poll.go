// Package testutil holds helpers shared by the project's tests. It is
// imported only from _test.go files and the e2e suite.
package testutil

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// DefaultTimeout bounds a wait that should end within moments. It guards
// against hangs on a loaded CI machine; it is never a speed assertion.
const DefaultTimeout = 60 * time.Second

// PollInterval is how often a condition is re-evaluated.
const PollInterval = 20 * time.Millisecond

// Eventually polls cond until it holds, failing the test after
// DefaultTimeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, DefaultTimeout, what, func(context.Context) (bool, string, error) { return cond(), "", nil })
}

// WaitFor polls cond every PollInterval until it reports done, returns an
// error, or timeout passes; the last state cond described is in the failure
// message. It returns the time at which cond first held.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) time.Time {
	t.Helper()
	return WaitForEvery(t, PollInterval, timeout, what, cond)
}

// WaitForEvery is WaitFor polling every interval: for conditions that cost
// a request to a server (the e2e suite's API calls), so that polling does
// not load the machine it waits on.
func WaitForEvery(t testing.TB, interval, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) time.Time {
	t.Helper()
	at, err := Poll(t.Context(), interval, timeout, what, cond)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// Poll is WaitForEvery for code that has no test to fail (a suite's
// set-up, a cleanup after the test's context ended): it returns the time
// at which cond first held, or an error naming what it waited for and the
// last state cond described.
func Poll(ctx context.Context, interval, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) (time.Time, error) {
	state := "(not evaluated)"
	var at time.Time
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		done, s, err := cond(ctx)
		if s != "" {
			state = s
		}
		if done {
			at = time.Now()
		}
		return done, err
	})
	switch {
	case err == nil:
		return at, nil
	case wait.Interrupted(err):
		return at, fmt.Errorf("timed out after %v waiting for %s; last state: %s", timeout, what, state)
	default:
		return at, fmt.Errorf("waiting for %s: %w", what, err)
	}
}
