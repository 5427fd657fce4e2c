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
	"syscall"
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
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintln(os.Stderr, "beacon:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "beacon:", err)
		os.Exit(1)
	}
}

// usageError marks errors in the command line itself (exit status 2).
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func run(ctx context.Context, args []string, s stdio) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(s.errOut)
		if len(args) == 0 {
			return usagef("no command given")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], s)
		}
	}
	printUsage(s.errOut)
	return usagef("unknown command %q", args[0])
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: beacon COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'beacon COMMAND --help' for a command's flags.")
}

// newFlags returns a flag set that prints a usage line and the flags' help,
// and reports errors instead of exiting.
func newFlags(name, usage string, s stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(s.errOut)
	fs.Usage = func() {
		fmt.Fprintf(s.errOut, "Usage: beacon %s\n\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
