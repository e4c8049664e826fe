// Command meridian is the Meridian gateway: it runs gateways from a topology
// file, validates files, shows a gateway's status, makes link certificates,
// runs the embedded demo and the chaos tools. The CLI is built with cobra
// (subcommands, flags, help) and holds no replication logic itself.
//
// Exit status: 0 success; 1 failure (bad input, a command that could not do
// its job); 2 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/redact"
)

// version is set at build time by make build (-ldflags "-X
// main.version=$(git describe ...)"); see version.go.
var version = "dev"

// exitError carries an exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type globals struct {
	logLevel  string
	logFormat string
	stdout    io.Writer // redacts secrets
	stderr    io.Writer // redacts secrets
	// secrets are the values of the loaded topology file that came from
	// ${ENV} (loadFile adds them): stdout and stderr replace them with
	// [redacted], and so does the admin API of a gateway run here.
	secrets *redact.Set
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "meridian",
		Short:         "Cross-cluster replication and geo-mirroring gateway",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		newValidateCmd(g),
		newRunCmd(g),
		newStatusCmd(g),
		newMembersCmd(g),
		newGossipCmd(g),
		newCertsCmd(g),
		newDemoCmd(g),
		newChaosCmd(g),
		newBenchCmd(g),
		newOffsetsCmd(g),
		newFailoverCmd(g),
		newFailbackCmd(g),
		newReloadCmd(g),
		newVersionCmd(g), newSchemaCmd(g),
	)
	return root
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal starts the drain, restore the default handling
	// so that a second one ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	secrets := redact.New()
	stdout, stderr = secrets.Writer(stdout), secrets.Writer(stderr)
	g := &globals{stdout: stdout, stderr: stderr, secrets: secrets}
	root := newRoot(g)
	root.SetArgs(args)
	err := execute(ctx, root, g)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "meridian:", err)
	if strings.Contains(err.Error(), "unknown command") || strings.Contains(err.Error(), "flag") || strings.Contains(err.Error(), "arg(s)") {
		return 2
	}
	return 1
}

// execute runs the command. A panic in the command's own goroutine is
// printed here, with its stack, through the redacting stderr (the runtime
// would print it raw) and exits 2 like the runtime does.
func execute(ctx context.Context, root *cobra.Command, g *globals) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(g.stderr, "panic: %v\n\n%s", r, debug.Stack())
			err = &exitError{2, nil}
		}
	}()
	return root.ExecuteContext(ctx)
}

// outputFlag adds --output text|json.
func outputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", "text", "output format: text or json")
}

// start is the preamble of a command with an --output flag and logs: it
// checks the output format and builds the logger; errors are usage errors.
func (g *globals) start(output string) (*slog.Logger, error) {
	if err := checkOutput(output); err != nil {
		return nil, err
	}
	log, err := g.logger()
	if err != nil {
		return nil, &exitError{2, err}
	}
	return log, nil
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return &exitError{2, fmt.Errorf("--output %q: want text or json", o)}
	}
	return nil
}
