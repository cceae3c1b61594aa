package options

import (
	"math"
	"time"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// StoreOptions are the window of the served values and how long a pod
// stays served without a fresh sample. The store is fed once per round of
// another flag's interval (the aggregator's --scrape-interval, standalone's
// --sample-interval), which bounds both.
type StoreOptions struct {
	Window     time.Duration
	StaleAfter time.Duration
	// StepUp restarts a GPU's window when its load steps up by more than
	// this many percentage points (store.Config.StepUp); 0: never.
	StepUp float64

	feed          *time.Duration // the feed interval, owned by another group
	feedFlag      string         // its flag
	staleAfterSet bool           // --stale-after given, not derived
}

// NewStoreOptions returns the defaults for a store fed every *feed, the
// value of --feedFlag.
func NewStoreOptions(feed *time.Duration, feedFlag string) *StoreOptions {
	return &StoreOptions{Window: 15 * time.Second, StepUp: 10, feed: feed, feedFlag: feedFlag}
}

// AddFlags registers --window, --step-up-threshold and --stale-after.
func (o *StoreOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionStore)
	fs.DurationVar(&o.Window, "window", o.Window, "Window of the gpu_utilization mean.")
	fs.Float64Var(&o.StepUp, "step-up-threshold", o.StepUp,
		"When a GPU's utilization steps up by more than this many percentage points (and by more than three times the window's own range) in two rounds in a row, its window restarts at the step, so the value reaches the new level at once instead of over --window. 0 keeps the plain mean.")
	fs.DurationVar(&o.StaleAfter, "stale-after", o.StaleAfter,
		"A pod whose newest sample was received longer ago is not served (default: 3 × --"+o.feedFlag+").")
}

// Complete derives --stale-after from the feed interval unless given.
func (o *StoreOptions) Complete(fs *pflag.FlagSet) {
	o.staleAfterSet = fs.Changed("stale-after")
	if !o.staleAfterSet {
		o.StaleAfter = times(3, *o.feed)
	}
}

// Validate reports --window, --step-up-threshold and --stale-after, each
// on its own. The checks
// against the feed interval are left out while that interval is itself
// invalid (its group reports it), and so is a --stale-after derived from
// it.
func (o *StoreOptions) Validate() []error {
	feed := *o.feed
	feedOK := checkInterval(feed) == nil
	var errs []error
	switch {
	case o.Window <= 0:
		errs = append(errs, flagErrorf("window", "must be positive, got %v", o.Window))
	case !feedOK:
	case o.Window < feed:
		errs = append(errs, flagErrorf("window", "%v is shorter than --%s (%v): it would hold no sample at times", o.Window, o.feedFlag, feed))
	case o.Window > times(store.MaxWindowFeeds, feed):
		errs = append(errs, flagErrorf("window", "%v spans more than %d rounds of --%s (%v), more than the store holds: use a window of at most %v or a longer interval",
			o.Window, store.MaxWindowFeeds, o.feedFlag, feed, times(store.MaxWindowFeeds, feed)))
	}
	if !(o.StepUp >= 0 && o.StepUp <= 100) {
		errs = append(errs, flagErrorf("step-up-threshold", "must be 0-100 percentage points, got %v", o.StepUp))
	}
	switch {
	case !o.staleAfterSet && !feedOK:
	case o.StaleAfter <= 0:
		errs = append(errs, flagErrorf("stale-after", "must be positive, got %v", o.StaleAfter))
	case !feedOK:
	case o.StaleAfter < times(2, feed):
		errs = append(errs, flagErrorf("stale-after", "%v is shorter than twice --%s (%v): pods would flap off the API between rounds", o.StaleAfter, o.feedFlag, feed))
	}
	return errs
}

// Config is the store's configuration.
func (o *StoreOptions) Config() store.Config {
	return store.Config{Window: o.Window, StaleAfter: o.StaleAfter, FeedInterval: *o.feed, StepUp: o.StepUp}
}

// times is n×d, saturating instead of overflowing (n > 0, d >= 0).
func times(n int64, d time.Duration) time.Duration {
	if d > math.MaxInt64/time.Duration(n) {
		return math.MaxInt64
	}
	return time.Duration(n) * d
}
