// Command alignet is the single binary of the alignet server: it serves the
// API and consumers, runs a one-process dev stack, migrates, imports data,
// generates load, and runs the offline AligNet pipeline (fit, eval,
// generate, distill). Run "alignet help" for the subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/alignet/alignet/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
