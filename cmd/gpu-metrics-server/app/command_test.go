package app

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// TestCommandsRejectFlagsBeforeRunning: each subcommand reports every
// invalid flag and runs nothing.
func TestCommandsRejectFlagsBeforeRunning(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	tests := []struct {
		newCommand func() *cobra.Command
		args       []string
		wantFlags  []string
	}{
		{NewAggregatorCommand, []string{"--agent-urls=http://10.0.0.1:9400/metrics", "--window=500ms"}, []string{"window"}},
		{NewAggregatorCommand, []string{"--agent-urls=http://10.0.0.1:9400/metrics", "--window=0s", "--stale-after=-1s"}, []string{"window", "stale-after"}},
		{NewAggregatorCommand, []string{"--agent-urls=http://10.0.0.1:9400/metrics", "--delegate-to=monitoring/", "--delegate-timeout=0s"}, []string{"delegate-to", "delegate-timeout"}},
		{NewAgentCommand, []string{"--backend=sim", "--sample-interval=0s", "--web.listen-address=x"}, []string{"sample-interval", "web.listen-address"}},
		{NewStandaloneCommand, []string{"--backend=sim", "--sim-pods=x", "--secure-port=70000"}, []string{"sim-pods", "secure-port"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// The subcommand alone: the root applies the logging flags,
			// once per process.
			cmd := tc.newCommand()
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			if err == nil {
				t.Fatal("Execute succeeded")
			}
			var got []string
			for _, line := range strings.Split(err.Error(), "\n") {
				flag, _, _ := strings.Cut(strings.TrimPrefix(line, "invalid --"), ":")
				got = append(got, flag)
			}
			var fe *options.FlagError
			if !errors.As(err, &fe) || strings.Join(got, " ") != strings.Join(tc.wantFlags, " ") {
				t.Errorf("Execute = %v, want a FlagError for each of %q", err, tc.wantFlags)
			}
		})
	}
}

// TestHelp: our flags come first, custom-metrics-apiserver's audit and
// feature flags in sections after ours, and every flag is listed.
func TestHelp(t *testing.T) {
	for _, name := range []string{"agent", "aggregator", "standalone"} {
		t.Run(name, func(t *testing.T) {
			root := NewRootCommand()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs([]string{name, "--help"})
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			help := out.String()
			cmd, _, err := root.Find([]string{name})
			if err != nil {
				t.Fatal(err)
			}
			cmd.Flags().VisitAll(func(f *pflag.Flag) {
				if f.Name != "help" && !f.Hidden && !strings.Contains(help, "--"+f.Name+" ") && !strings.Contains(help, "--"+f.Name+"[") {
					t.Errorf("--%s is not in the help", f.Name)
				}
			})
			if !strings.Contains(help, "\nGlobal flags:\n") || !strings.Contains(help, "--logging-format") {
				t.Error("no global (logging) flags section")
			}
			first := strings.Index(help, " flags:\n")
			if name == "agent" {
				return
			}
			audit, features := strings.Index(help, "\nAudit flags:\n"), strings.Index(help, "\nFeatures flags:\n")
			if audit < 0 || features < audit || first > audit {
				t.Errorf("sections out of order (first at %d, audit at %d, features at %d):\n%s", first, audit, features, help)
			}
			ours := []string{"--window ", "--stale-after ", "--kubeconfig "}
			if name == "aggregator" {
				ours = append(ours, "--delegate-to ")
			}
			for _, ours := range ours {
				if i := strings.Index(help, ours); i < 0 || i > audit {
					t.Errorf("%s is not listed before the audit flags", ours)
				}
			}
		})
	}
}
