// Package options holds the command-line options of gpu-metrics-server,
// apart from the wiring in package app.
//
// An option group (KubeOptions, StoreOptions, ScrapeOptions,
// DelegateOptions, ServingOptions, AgentOptions, SimPodsOptions) is defined once, in its own
// file, and shared by every subcommand that needs it: AddFlags registers its
// flags in named help sections, Validate reports every invalid value as a
// *FlagError naming that value's own flag, and a method builds the
// configuration of the package it configures. A subcommand's options
// (Agent, Aggregator, Standalone) compose groups: Complete fills the
// defaults derived from other flags, Validate gathers the errors of all
// groups. Neither binds a port, dials, starts anything or changes state
// outside the options; that happens when the configuration is built.
package options

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	cliflag "k8s.io/component-base/cli/flag"
)

// group is an option group.
type group interface {
	AddFlags(fss *cliflag.NamedFlagSets)
	Validate() []error
}

// flagSets are the groups' flags, in sections in the order the groups first
// use them.
func flagSets(groups ...group) (fss cliflag.NamedFlagSets) {
	for _, g := range groups {
		g.AddFlags(&fss)
	}
	return fss
}

// validate gathers the errors of every group, in order.
func validate(groups ...group) []error {
	var errs []error
	for _, g := range groups {
		errs = append(errs, g.Validate()...)
	}
	return errs
}

// errorList collects a group's errors.
type errorList []error

// add appends err unless it is nil.
func (l *errorList) add(err error) {
	if err != nil {
		*l = append(*l, err)
	}
}

// FlagError is a validation failure of one flag. The root command prints it
// on one line and exits with its usage status.
type FlagError struct {
	Flag string
	Err  error
}

// Error is "invalid --flag: reason", on one line: the lines of a
// multi-line reason (a YAML error's) are joined with their indentation
// dropped.
func (e *FlagError) Error() string {
	return fmt.Sprintf("invalid --%s: %s", e.Flag, strings.Join(strings.Fields(e.Err.Error()), " "))
}

func (e *FlagError) Unwrap() error { return e.Err }

// flagErrorf builds a FlagError for flag with a formatted reason.
func flagErrorf(flag, format string, args ...any) *FlagError {
	return &FlagError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// Help sections, in the order a subcommand's help would list them. Groups
// that share a topic share its section (--sim-pods beside --sim-gpus).
const (
	sectionGPU          = "GPU sampling"
	sectionSimulation   = "simulation (--backend=sim)"
	sectionWeb          = "metrics endpoint"
	sectionPodResources = "pod resources"
	sectionAttribution  = "per-process attribution"
	sectionTargets      = "scrape targets"
	sectionScrape       = "scrape"
	sectionStore        = "metrics window"
	sectionDelegate     = "delegation"
	sectionKube         = "Kubernetes API"
	sectionServing      = "secure serving"
	sectionAuthn        = "authentication"
	sectionAuthz        = "authorization"
	sectionAudit        = "audit"
	sectionFeatures     = "features"
)

// minInterval is the shortest sampling, refresh or scrape interval accepted:
// below it a loop would only burn CPU (NVML's own utilization sample period
// is 1/6 s to 1 s).
const minInterval = 100 * time.Millisecond

// maxInterval is the longest sampling, refresh or scrape interval accepted:
// beyond it the values served would be too old to scale on, and the
// durations derived from an interval (ten times it, for liveness) could
// overflow.
const maxInterval = time.Hour

// checkInterval validates a loop interval.
func checkInterval(d time.Duration) error {
	if d < minInterval {
		return fmt.Errorf("%v is below the minimum of %v", d, minInterval)
	}
	if d > maxInterval {
		return fmt.Errorf("%v is above the maximum of %v", d, maxInterval)
	}
	return nil
}

// checkPort validates a port to connect to.
func checkPort(flag string, port int) error {
	if port < 1 || port > 65535 {
		return flagErrorf(flag, "%d out of range 1-65535", port)
	}
	return nil
}

// checkListenAddress validates a host:port to listen on (port 0: any free
// port; no host: every interface). The host is an IP address or a host
// name; one of digits and dots only is meant as an IPv4 address and must be
// one (999.1.1.1 is not). Whether a name resolves to a local address is
// known only when listening, which reports it as this flag's error too.
func checkListenAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if strings.Trim(host, "0123456789.") == "" {
		return fmt.Errorf("%q is not an IPv4 address", host)
	}
	if errs := validation.IsDNS1123Subdomain(strings.ToLower(host)); len(errs) > 0 {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

// checkReadableFile validates a file to read at start.
func checkReadableFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.IsDir() {
		return fmt.Errorf("%s is not a file", path)
	}
	return nil
}
