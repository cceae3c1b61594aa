package testutil

import (
	"testing"
	"time"
)

// Receive waits for a value from ch, or for ch to be closed (the zero value
// then), failing the test after DefaultTimeout: a wait for a goroutine's
// result or its end that never hangs the test. Unlike WaitFor it also
// works in Cleanup functions, after the test's context has ended.
func Receive[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(DefaultTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", DefaultTimeout, what)
	}
	var zero T
	return zero
}
