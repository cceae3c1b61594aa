// Package app holds the gpu-metrics-server subcommands: one file per
// subcommand, each turning flags into a validated configuration and wiring
// the packages that do the work.
package app

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// ExitUsage is the exit code for invalid flags or configuration.
const ExitUsage = 2

// FlagError is a validation failure of one flag. The root command prints it
// on one line and exits with ExitUsage.
type FlagError struct {
	Flag string
	Err  error
}

func (e *FlagError) Error() string { return fmt.Sprintf("invalid --%s: %v", e.Flag, e.Err) }

func (e *FlagError) Unwrap() error { return e.Err }

// flagErrorf builds a FlagError for flag with a formatted reason.
func flagErrorf(flag, format string, args ...any) *FlagError {
	return &FlagError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// minInterval is the shortest sampling, refresh or scrape interval accepted:
// below it a loop would only burn CPU (NVML's own utilization sample period
// is 1/6 s to 1 s).
const minInterval = 100 * time.Millisecond

// checkInterval validates a loop interval.
func checkInterval(d time.Duration) error {
	if d < minInterval {
		return fmt.Errorf("%v is below the minimum of %v", d, minInterval)
	}
	return nil
}

// checkListenAddress validates a host:port to listen on (port 0: any free
// port).
func checkListenAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	} else if n > 65535 {
		return fmt.Errorf("port %d out of range", n)
	}
	return nil
}
