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

	root := NewRootCommand()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
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

// NewRootCommand builds the command tree.
func NewRootCommand() *cobra.Command {
	logConfig := logsapi.NewLoggingConfiguration()
	root := &cobra.Command{
		Use:   "gpu-metrics-server",
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
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	fs := root.PersistentFlags()
	logsapi.AddFlags(logConfig, fs) // -v, --vmodule, --logging-format
	root.AddCommand(NewAgentCommand(), NewAggregatorCommand(), NewStandaloneCommand(), NewVersionCommand())
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
		if args := c.Args; args != nil {
			// Stray arguments are a usage error too (exit 2, one line).
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
	}
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}
