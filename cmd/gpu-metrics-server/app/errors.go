// Package app holds the gpu-metrics-server subcommands: one file per
// subcommand, each turning flags into a validated configuration and wiring
// the packages that do the work.
package app

import "fmt"

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
