package app

import (
	"context"
	"sync"
)

// runInBackground runs each function in its own goroutine until ctx ends;
// wait blocks until all have returned.
func runInBackground(ctx context.Context, fns []func(context.Context)) (wait func()) {
	var wg sync.WaitGroup
	for _, f := range fns {
		wg.Go(func() { f(ctx) })
	}
	return wg.Wait
}
