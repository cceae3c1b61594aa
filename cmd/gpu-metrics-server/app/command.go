package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// commandOptions are a subcommand's options, composed of option groups
// (package options).
type commandOptions interface {
	// Flags are the options' flags in named help sections.
	Flags() cliflag.NamedFlagSets
	// Complete fills the defaults derived from the flags fs holds.
	Complete(fs *pflag.FlagSet)
	// Validate reports every invalid flag as an *options.FlagError.
	Validate() []error
}

// newCommand makes cmd run with options o: their flags, help that lists
// them in sections, and before run, Complete and Validate, every invalid
// flag reported at once (one line each; exit status ExitUsage).
func newCommand(cmd *cobra.Command, o commandOptions, run func(ctx context.Context) error) *cobra.Command {
	fss := o.Flags()
	for _, name := range fss.Order {
		cmd.Flags().AddFlagSet(fss.FlagSets[name])
	}
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		o.Complete(c.Flags())
		if errs := o.Validate(); len(errs) > 0 {
			return errors.Join(errs...)
		}
		return run(c.Context())
	}
	cmd.SetHelpFunc(func(c *cobra.Command, _ []string) {
		desc := c.Long
		if desc == "" {
			desc = c.Short
		}
		fmt.Fprintf(c.OutOrStdout(), "%s\n\nUsage:\n  %s\n", desc, c.UseLine())
		printSections(c.OutOrStdout(), c, fss)
	})
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		fmt.Fprintf(c.OutOrStderr(), "Usage:\n  %s\n", c.UseLine())
		printSections(c.OutOrStderr(), c, fss)
		return nil
	})
	return cmd
}

// printSections prints the command's flag sections, then the flags every
// subcommand takes (logging).
func printSections(w io.Writer, c *cobra.Command, fss cliflag.NamedFlagSets) {
	var all cliflag.NamedFlagSets
	for _, name := range fss.Order {
		all.FlagSet(name).AddFlagSet(fss.FlagSets[name])
	}
	all.FlagSet("global").AddFlagSet(c.InheritedFlags())
	cliflag.PrintSections(w, all, 0)
}
