// Package cli implements the subcommands of the alignet binary. Each
// subcommand parses its own flags (package cmdline gives them one help
// format) and calls into the packages that do the work, so cmd/alignet
// stays a thin entry point.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/offline"
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
		"soak":     {"push judgments through every role for long and watch every process's memory", runSoak},
		"fit":      {"fit a surrogate teacher on embeddings and judgments (offline)", offline.RunFit},
		"eval":     {"score a teacher, student or raw embeddings on judgments (offline)", offline.RunEval},
		"generate": {"generate an AligNet triplet dataset from a teacher (offline)", offline.RunGenerate},
		"distill":  {"distil a student head from an AligNet dataset (offline)", offline.RunDistill},
		"simulate": {"simulate a study against a crowd model: learning curves of random and active queries", runSimulate},
		"version":  {"print the version, VCS revision and Go version", runVersion},
		"backup":   {"snapshot a deployment's Postgres state to a file (pg_dump)", runBackup},
		"restore":  {"rebuild a backup into an empty database (pg_restore)", runRestore},
	}
}

// Main runs the subcommand named by args[0] and returns the exit code: 0
// on success and for help, 1 when the command failed, 2 for a command line
// that cannot be run.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && name == "help" {
			// "alignet help fit" is "alignet fit --help".
			return Main(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout, cmds)
		return 0
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "alignet: unknown command %q\n\n", name)
		usage(stderr, cmds)
		return 2
	}
	if _, ok := importKinds[arg(args, 1)]; ok && name == "import" {
		name += " " + args[1] // errors name the kind: "alignet import things: ..."
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	var ue *cmdline.UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "alignet %s: %v\nRun 'alignet %s --help' for usage.\n", ue.Command, ue.Err, ue.Command)
		return 2
	default:
		fmt.Fprintf(stderr, "alignet %s: %v\n", name, err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprint(w, `Usage: alignet <command> [flags]

alignet collects human similarity judgments through an HTTP API and turns
them into human-aligned models (AligNet).

Commands:
`)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprint(w, `
Example:
  alignet dev

Run 'alignet <command> --help' for a command's flags and an example.
`)
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("version", "Print alignet's module version, the VCS revision it was built from and the Go version.", stdout)
	fs.Example("alignet version")
	if err := fs.Parse(args); err != nil {
		return err
	}
	info, _ := debug.ReadBuildInfo() // nil without build information
	_, err := io.WriteString(stdout, versionText(info))
	return err
}

// versionText describes the build from its build information (nil when
// the binary has none).
func versionText(info *debug.BuildInfo) string {
	if info == nil {
		return fmt.Sprintf("alignet (no build information)\n%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	path := info.Main.Path
	if path == "" {
		path = info.Path
	}
	fmt.Fprintf(&b, "alignet %s (%s)\n", version, path)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, "revision %s", rev)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
		if settings["vcs.modified"] == "true" {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteString("\n")
	} else {
		b.WriteString("revision unknown (built without VCS information; go build in a git checkout with -buildvcs=true stamps it)\n")
	}
	goVersion := info.GoVersion
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	fmt.Fprintf(&b, "%s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}

func getenv(k string) string { return os.Getenv(k) }

// arg returns args[i], or "" when there are fewer arguments.
func arg(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}
