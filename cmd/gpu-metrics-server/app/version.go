package app

import (
	"fmt"

	"github.com/prometheus/common/version"
	"github.com/spf13/cobra"
)

// NewVersionCommand prints build information.
func NewVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version and build information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Print("gpu-metrics-server"))
			return err
		},
	}
}
