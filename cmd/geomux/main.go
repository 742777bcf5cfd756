// Command geomux runs one Zoom Team Chat chatbot app for customers whose data
// must stay in one geography: ingress, region router and regional workers in
// one binary, the role chosen at start.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/geomux/geomux/pkg/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // wrong arguments or an invalid config: nothing was done
	exitShared  = 3 // geomux audit locality: regions share one NATS system
)

// sharedSystemError is what `geomux audit locality` says when the regions
// share one NATS system: nothing is misplaced, but nothing separates them.
type sharedSystemError struct{ err error }

func (e sharedSystemError) Error() string { return e.err.Error() }

// usageError is an error the user fixes by changing the command or config.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code. Ending ctx stops
// a running geomux as SIGTERM does.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ce *config.Error
	var ue usageError
	var se sharedSystemError
	switch {
	case errors.As(err, &se):
		fmt.Fprintf(stderr, "geomux: %s\n", oneLine(err.Error()))
		return exitShared
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "geomux: invalid config %s (fix these and run again):\n", ce.Source)
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
		return exitUsage
	case errors.As(err, &ue), isCobraUsage(err):
		fmt.Fprintf(stderr, "geomux: %s\n", oneLine(err.Error()))
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", commandPath(root, args))
		return exitUsage
	default:
		fmt.Fprintf(stderr, "geomux: %s\n", oneLine(err.Error()))
		return exitFailure
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "geomux",
		Short: "One Zoom chatbot app, every customer's data in its own region",
		Long: `geomux is the Bot Endpoint URL of a Zoom Team Chat chatbot app whose customers'
data must stay in one geography. It verifies each Zoom webhook, persists it to
NATS JetStream before answering, routes it to the region its account belongs
to, and runs the bot logic and Zoom replies inside that region.

Start everything on one machine:   geomux run --config deploy/local/geomux.yaml
Send a test message:               geomux send --config deploy/local/geomux.yaml --account ACCOUNT --text hi`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(), newSendCmd(), newAccountsCmd(), newDLQCmd(), newSetupCmd(), newAuditCmd(), newVersionCmd())
	return root
}

// isCobraUsage recognises cobra's own argument errors (unknown command,
// wrong number of arguments), which it does not type.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "requires at most", "unknown flag", "unknown shorthand", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// commandPath is the command the user ran, for "--help" hints.
func commandPath(root *cobra.Command, args []string) string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil {
		return "geomux"
	}
	return cmd.CommandPath()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// configFlag adds --config, defaulting to $GEOMUX_CONFIG.
func configFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVarP(path, "config", "c", os.Getenv(config.EnvConfigFile),
		"path to the YAML config file (default $"+config.EnvConfigFile+"); every key can be overridden by a GEOMUX_* variable, e.g. GEOMUX_ZOOM_CLIENT_SECRET")
}

func loadConfig(path string, roles ...config.Role) (config.Config, error) {
	if path == "" {
		return config.Config{}, usagef("--config is required (or set %s)", config.EnvConfigFile)
	}
	if _, err := os.Stat(path); err != nil {
		return config.Config{}, usagef("config file %s: %v", path, errors.Unwrap(err))
	}
	return config.Load(path, os.Environ(), roles...)
}

var version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print geomux's version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "geomux", version) },
	}
}
