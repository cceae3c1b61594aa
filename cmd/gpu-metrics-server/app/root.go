// Package app holds the gpu-metrics-server subcommands: one file per
// subcommand, each building the command over its options (package options)
// and wiring the packages that do the work; the helpers they share have
// files of their own.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// ExitUsage is the exit code for invalid flags or configuration.
const ExitUsage = 2

// Main runs the command line args and returns the process exit code: 0 on
// success, ExitUsage for invalid flags, 1 for any other failure.
func Main(args []string) int {
	logs.InitLogs()
	defer logs.FlushLogs()
	quietGRPC()

	root := NewRootCommand()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exit *exitError
	if errors.As(err, &exit) {
		// A command a person runs: kubectl's "error: ..." line, no log.
		if exit.err != nil {
			fmt.Fprintf(os.Stderr, "error: %s\n", exit.err)
		}
		return exit.code
	}
	var fe *options.FlagError
	if errors.As(err, &fe) || isCobraUsageError(err) {
		// One line per invalid flag.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(os.Stderr, "gpu-metrics-server: %s\n", line)
		}
		return ExitUsage
	}
	klog.ErrorS(err, "Exiting")
	logs.FlushLogs()
	return 1
}

// usageError marks cobra's own flag-parsing failures (unknown flag, bad
// value syntax) so they exit with ExitUsage like our validation does.
type usageError struct{ error }

func isCobraUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// exitError ends a command a person runs (top, doctor) with exit status
// code, printing err as kubectl prints errors; a nil err prints nothing (the
// command has printed its report).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// userError is err as a command a person runs reports it: one "error:" line
// and exit status 1; nil stays nil.
func userError(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: 1, err: err}
}

// pluginPrefix starts the name of a kubectl plugin's binary.
const pluginPrefix = "kubectl-"

// displayName is how the binary named argv0 is invoked: "kubectl gpu" when
// it is installed as the kubectl plugin kubectl-gpu, else its own name.
func displayName(root *cobra.Command) string {
	if n, ok := root.Annotations[cobra.CommandDisplayNameAnnotation]; ok {
		return n
	}
	return root.Name()
}

// nameFor is the command's display name when the binary is called argv0.
func nameFor(argv0 string) string {
	base := filepath.Base(argv0)
	if rest, ok := strings.CutPrefix(base, pluginPrefix); ok && rest != "" {
		// kubectl maps "kubectl foo bar" to kubectl-foo-bar.
		return "kubectl " + strings.ReplaceAll(rest, "-", " ")
	}
	return "gpu-metrics-server"
}

// NewRootCommand builds the command tree, named after the running binary
// (os.Args[0]): as the kubectl plugin kubectl-gpu, help and messages say
// "kubectl gpu".
func NewRootCommand() *cobra.Command { return newRootCommand(nameFor(os.Args[0])) }

func newRootCommand(name string) *cobra.Command {
	logConfig := logsapi.NewLoggingConfiguration()
	root := &cobra.Command{
		Use: "gpu-metrics-server",
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: name,
		},
		Short: "GPU utilization for the Kubernetes HorizontalPodAutoscaler, without Prometheus",
		Long: `gpu-metrics-server reads NVIDIA GPUs on every node (agent), attributes them
to pods through the kubelet, and serves per-pod GPU utilization on the
custom.metrics.k8s.io API (aggregator) for the HorizontalPodAutoscaler.
The agent's /metrics is dcgm-exporter compatible, so Prometheus can scrape it too.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := logsapi.ValidateAndApply(logConfig, nil); err != nil {
				return &options.FlagError{Flag: "logging-format", Err: err}
			}
			return nil
		},
	}
	// Without a subcommand: help; with an unknown one, a usage error (exit
	// 2, one line), not cobra's own error.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q: use one of agent, aggregator, standalone, version", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	fs := root.PersistentFlags()
	logsapi.AddFlags(logConfig, fs) // -v, --vmodule, --logging-format
	root.AddCommand(NewAgentCommand(), NewAggregatorCommand(), NewStandaloneCommand(), NewVersionCommand(),
		NewTopCommand(), NewDoctorCommand())
	usageErrors(root)
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

// usageErrors makes flag-parsing failures and stray arguments of every
// subcommand of c usage errors (exit 2, one line).
func usageErrors(c *cobra.Command) {
	for _, c := range c.Commands() {
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
		usageErrors(c)
	}
}
