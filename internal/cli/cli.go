// Package cli implements the subcommands of the alignet binary. Each
// subcommand parses its own flags and calls into the packages that do the
// work, so cmd/alignet stays a thin entry point.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/alignet/alignet/offline"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":    {"run the API and/or persister against external Kafka and Postgres", runServe},
		"dev":      {"run everything in one process with a local Postgres and an in-process broker", runDev},
		"migrate":  {"apply database migrations and exit", runMigrate},
		"import":   {"load embeddings and judgments through the ingestion API", runImport},
		"loadgen":  {"drive a running server with simulated workers and verify persistence", runLoadgen},
		"fit":      {"fit a surrogate teacher on embeddings and triplets (offline)", offline.RunFit},
		"eval":     {"score a teacher, student or raw embeddings on triplets (offline)", offline.RunEval},
		"generate": {"generate an AligNet triplet dataset from a teacher (offline)", offline.RunGenerate},
		"distill":  {"distil a student head from an AligNet dataset (offline)", offline.RunDistill},
	}
}

// Main runs the subcommand named by args[0] and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "alignet: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "alignet %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: alignet <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'alignet <command> -h' for a command's flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("alignet "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func getenv(k string) string { return os.Getenv(k) }
