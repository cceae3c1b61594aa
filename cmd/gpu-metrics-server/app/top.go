package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
	"github.com/gpu-metrics-server/gpu-metrics-server/cli/top"
	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// NewTopCommand groups `top pods` and `top nodes`.
func NewTopCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the GPU use of pods and nodes, read from the custom metrics API",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewTopPodsCommand(), NewTopNodesCommand())
	return cmd
}

// NewTopNodesCommand is `top nodes`.
func NewTopNodesCommand() *cobra.Command {
	o := options.NewTop(false)
	var cmd *cobra.Command
	cmd = newCommand(&cobra.Command{
		Use:   "nodes",
		Short: "Show the GPU nodes: utilization (mean and busiest GPU), memory, power, GPUs, pods holding GPUs",
		Long: `Show the nodes offering GPUs with the values the custom metrics API serves
for them, over all of each node's GPUs, held by a pod or idle: GPU
utilization (the mean of the GPUs' window means) and that of the busiest GPU,
GPU memory used and its percent, power, the GPUs reporting, the pods holding
GPUs on the node (from the Kubernetes API) and the age of the newest sample.
<unknown>: the API serves no value for the node (no agent on it, or, for
utilization, a GPU in MIG mode); the doctor subcommand tells why.`,
	}, o, func(ctx context.Context) error { return runTopNodes(ctx, cmd, o) })
	return cmd
}

// NewTopPodsCommand is `top pods`.
func NewTopPodsCommand() *cobra.Command {
	o := options.NewTop(true)
	var cmd *cobra.Command
	cmd = newCommand(&cobra.Command{
		Use:   "pods",
		Short: "Show the pods holding GPUs: utilization, memory, power, GPUs, sample age",
		Long: `Show the pods holding GPUs with the values the custom metrics API serves
for them (what the HorizontalPodAutoscaler sees): GPU utilization (the window
mean), GPU memory used and its percent of the pod's GPUs, power, the number
of GPUs (shared: nvidia.com/gpu.shared, mig: a MIG instance) and the age of
the newest sample. <unknown>: the API serves no value for the pod; the
doctor subcommand tells why.`,
	}, o, func(ctx context.Context) error { return runTopPods(ctx, cmd, o) })
	return cmd
}

func runTopPods(ctx context.Context, cmd *cobra.Command, o *options.Top) error {
	q := top.PodQuery{AllNamespaces: o.Top.AllNamespaces, Namespace: o.Top.Namespace, Selector: o.Top.ParsedSelector()}
	if q.Namespace == "" && !q.AllNamespaces {
		var err error
		if q.Namespace, err = o.Kube.Namespace(); err != nil {
			return userError(err)
		}
	}
	p := top.Printer{Namespaces: q.AllNamespaces}
	return runTop(ctx, cmd, o, p, func(ctx context.Context, c *kubeapi.Clients) ([]top.PodRow, error) {
		rows, err := top.Pods(ctx, c, q)
		top.SortPods(rows, o.Top.SortBy)
		return rows, err
	}, top.Watch, top.Printer.PrintPods)
}

// runTop runs a top command: list (with the user's clients) once and
// print, or --watch.
func runTop[R any](ctx context.Context, cmd *cobra.Command, o *options.Top, p top.Printer,
	list func(context.Context, *kubeapi.Clients) ([]R, error),
	watch func(context.Context, time.Duration, bool, string, func(context.Context) ([]R, error), top.Printer, io.Writer, func() time.Time) error,
	print func(top.Printer, []R, time.Time) error) error {
	rc, err := o.Kube.RESTConfig("gpu-metrics-server/top")
	if err != nil {
		return userError(err)
	}
	clients, err := kubeapi.NewClients(rc)
	if err != nil {
		return userError(err)
	}
	fetch := func(ctx context.Context) ([]R, error) {
		rows, err := list(ctx, clients)
		if err != nil {
			return nil, withDoctorHint(cmd, err)
		}
		return rows, nil
	}
	out := cmd.OutOrStdout()
	p.Out, p.Output, p.NoHeaders = out, o.Top.Output, o.Top.NoHeaders
	if o.Top.Watch {
		terminal := isTerminal(out)
		p.Bars = terminal && o.Top.Output != top.OutputJSON
		title := fmt.Sprintf("Every %v: %s", o.Top.Interval, cmd.CommandPath())
		return userError(watch(ctx, o.Top.Interval, terminal, title, fetch, p, cmd.ErrOrStderr(), time.Now))
	}
	rows, err := fetch(ctx)
	if err != nil {
		return userError(err)
	}
	return userError(print(p, rows, time.Now()))
}

func runTopNodes(ctx context.Context, cmd *cobra.Command, o *options.Top) error {
	q := top.NodeQuery{Selector: o.Top.ParsedSelector()}
	var p top.Printer
	return runTop(ctx, cmd, o, p, func(ctx context.Context, c *kubeapi.Clients) ([]top.NodeRow, error) {
		rows, err := top.Nodes(ctx, c, q)
		top.SortNodes(rows, o.Top.SortBy)
		return rows, err
	}, top.WatchNodes, top.Printer.PrintNodes)
}

// withDoctorHint points at doctor when the custom metrics API is missing or
// does not answer.
func withDoctorHint(cmd *cobra.Command, err error) error {
	var unavailable *kubeapi.Unavailable
	if errors.Is(err, kubeapi.ErrNoCustomMetricsAPI) || errors.As(err, &unavailable) {
		return fmt.Errorf("%w; run %q to find out why", err, displayName(cmd.Root())+" doctor")
	}
	return err
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
