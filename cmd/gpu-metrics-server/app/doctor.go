package app

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/doctor"
	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// Exit statuses of doctor.
const (
	doctorFailed    = 1 // a check failed
	doctorCannotRun = 2 // it could not run
)

// NewDoctorCommand is doctor.
func NewDoctorCommand() *cobra.Command {
	o := options.NewDoctor()
	var cmd *cobra.Command
	cmd = newCommand(&cobra.Command{
		Use:   "doctor",
		Short: "Check the chain from the GPUs to the HPA and say what is wrong and the fix",
		Long: `Check the chain from the GPUs to the HorizontalPodAutoscaler, one line per
check (PASS, WARN, FAIL, SKIP), each failure with what was found and the fix:
the custom.metrics.k8s.io APIServices; the aggregator pods, their endpoints
and scrape status; an agent on every GPU node, its NVML, kubelet
pod-resources and sample freshness; with --pod or --hpa, why each pod has or
lacks each metric; the HPAs naming a GPU metric; the RBAC of the aggregator
and of the HPA controller. It reads only what your kubeconfig may read: a
check you may not make is skipped, naming the missing permission.
Exit status: 0 all passed (warnings and skips included), 1 a check failed,
2 doctor could not run.`,
	}, o, func(ctx context.Context) error { return runDoctor(ctx, cmd, o) })
	return cmd
}

func runDoctor(ctx context.Context, cmd *cobra.Command, o *options.Doctor) error {
	cannotRun := func(err error) error { return &exitError{code: doctorCannotRun, err: err} }
	rc, err := o.Kube.RESTConfig("gpu-metrics-server/doctor")
	if err != nil {
		return cannotRun(err)
	}
	clients, err := kubeapi.NewClients(rc)
	if err != nil {
		return cannotRun(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return cannotRun(err)
	}
	d := o.Doctor
	cfg := doctor.Config{ServerNamespace: d.ServerNamespace, StaleAfter: d.StaleAfter, Namespace: d.Namespace, Pod: d.Pod, HPA: d.HPA}
	cfg.AggregatorSelector, cfg.AgentSelector = d.Selectors()
	if cfg.Namespace == "" && (cfg.Pod != "" || cfg.HPA != "") {
		if cfg.Namespace, err = o.Kube.Namespace(); err != nil {
			return cannotRun(err)
		}
	}
	doc := &doctor.Doctor{Kube: clients.Kube, Dynamic: dyn, Metrics: clients.Metrics,
		SelfMetrics: doctor.ProxySelfMetrics(clients.Kube), Now: time.Now}
	checks, err := doc.Run(ctx, cfg)
	if err != nil {
		return cannotRun(err)
	}
	out := cmd.OutOrStdout()
	if d.Output == "json" {
		err = doctor.PrintJSON(out, checks)
	} else {
		err = doctor.Print(out, checks)
	}
	if err != nil {
		return cannotRun(err)
	}
	if doctor.ExitCode(checks) != 0 {
		return &exitError{code: doctorFailed}
	}
	return nil
}
