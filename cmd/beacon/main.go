// Command beacon finds processes that call home on a timer — the signature of
// a C2 implant — in Microsoft Defender DeviceNetworkEvents, from a file
// (hunt) or continuously from Kafka (run).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/beaconhunt/beacon/internal/version"
)

// stdio is what a subcommand may read and write; tests pass buffers.
type stdio struct {
	in          io.Reader
	out, errOut io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, s stdio) error
}

func commands() []command {
	return []command{
		{"demo", "embedded Kafka, a simulated fleet with hidden beacons, and the detector: the first thing to run", runDemo},
		{"run", "the streaming detector: Kafka in, beacon alerts out", runRun},
		{"hunt", "the seed query over exported DeviceNetworkEvents files (JSON, Streaming API envelope, CSV)", runHunt},
		{"replay", "backtest a topic's history through the streaming path", runReplay},
		{"simulate", "labelled synthetic DeviceNetworkEvents to a file or a topic", runSimulate},
		{"health", "ask a running detector whether it is ready (exit 0) or not (1): a container healthcheck", runHealth},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on w — the error first, then a one-line hint for
// command-line mistakes — and returns the exit status: 0 for success and
// --help, 2 for a usage error, 1 for anything else.
func exitCode(err error, w io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(w, "beacon:", err)
	var u usageError
	if errors.As(err, &u) {
		if u.cmd != "" {
			fmt.Fprintf(w, "run 'beacon %s --help' for usage\n", u.cmd)
		} else {
			fmt.Fprintln(w, "run 'beacon help' for the commands")
		}
		return 2
	}
	return 1
}

// usageError marks errors in the command line itself (exit status 2); cmd
// names the command whose help the hint points to.
type usageError struct {
	error
	cmd string
}

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, a ...any) error { return usageError{error: fmt.Errorf(format, a...)} }

func run(ctx context.Context, args []string, s stdio) error {
	if len(args) == 0 {
		printUsage(s.errOut)
		return usagef("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printUsage(s.out)
		return nil
	case "help":
		if len(args) == 1 {
			printUsage(s.out)
			return nil
		}
		if args[1] == "version" {
			return runVersion(ctx, nil, s)
		}
		args = []string{args[1], "--help"}
	case "version", "-version", "--version":
		return runVersion(ctx, args[1:], s)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], s)
			var u usageError
			if errors.As(err, &u) && u.cmd == "" {
				u.cmd = c.name
				return u
			}
			return err
		}
	}
	return usagef("unknown command %q (have %s)", args[0], commandNames())
}

func commandNames() string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// runVersion prints the module version and VCS revision the binary was
// built from (runtime/debug build info).
func runVersion(_ context.Context, args []string, s stdio) error {
	if len(args) > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintln(s.out, version.Read())
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: beacon COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-9s %s\n", "version", "the version this binary was built from (also --version)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'beacon help COMMAND' or 'beacon COMMAND --help' for a command's flags.")
}

// newFlags returns a flag set that prints a usage line and the flags' help
// to stdout on --help, and reports errors instead of exiting.
func newFlags(name, usage string, s stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are returned, then reported once
	fs.Usage = func() {
		fmt.Fprintf(s.out, "Usage: beacon %s\n\n", usage)
		fs.SetOutput(s.out)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args, printing the help on --help and turning flag
// errors into usage errors that say what a good value looks like.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package calls it on every error too
	err := fs.Parse(args)
	fs.Usage = usage
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return err
	}
	return usageError{error: explainFlagError(fs, err)}
}

// explainFlagError rewrites the flag package's "invalid value "5" for flag
// -lookback: parse error" into what a good value looks like.
func explainFlagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	const pre = "invalid value "
	if !strings.HasPrefix(msg, pre) {
		return err
	}
	i := strings.Index(msg, " for flag -")
	if i < 0 {
		return err
	}
	val := msg[len(pre):i]
	rest := msg[i+len(" for flag -"):]
	name, why, _ := strings.Cut(rest, ": ")
	f := fs.Lookup(name)
	if f == nil {
		return err
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case time.Duration:
			why = "want a duration such as 24h or 90m"
		case int, int64, uint, uint64:
			why = "want a whole number"
		case float64:
			why = "want a number"
		case bool:
			why = "want true or false"
		}
	}
	return fmt.Errorf("--%s %s: %s", name, val, why)
}
