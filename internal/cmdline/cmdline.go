// Package cmdline gives every alignet subcommand the same flag handling and
// help: "alignet <cmd> --help" prints a usage header, a one-line
// description, examples and the flags (required ones marked) to stdout,
// and a bad command line is a *UsageError that the caller reports with a
// pointer to --help.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// FlagSet is a flag.FlagSet with alignet's help format, required flags and
// examples.
type FlagSet struct {
	*flag.FlagSet
	command      string
	summary      string
	args         []string // names of the positional arguments
	examples     []string
	notes        []string
	required     []string
	placeholders map[string]string
	env          map[string][]string
	hidden       map[string]bool
	getenv       func(string) string
	stdout       io.Writer
}

// New returns an empty flag set for "alignet <command>" (command may have
// several words, as in "import things") described by summary, a one-line
// sentence. Help goes to stdout.
func New(command, summary string, stdout io.Writer) *FlagSet {
	fs := &FlagSet{
		FlagSet:      flag.NewFlagSet("alignet "+command, flag.ContinueOnError),
		command:      command,
		summary:      summary,
		placeholders: map[string]string{},
		env:          map[string][]string{},
		hidden:       map[string]bool{},
		stdout:       stdout,
	}
	// Parse reports errors itself; the flag package must not print them.
	fs.FlagSet.SetOutput(io.Discard)
	fs.FlagSet.Usage = func() {}
	return fs
}

// Args declares the command's positional arguments, by placeholder name
// (such as "FILE"); Parse then requires exactly that many and the help
// synopsis shows them. Without Args a positional argument is an error.
func (fs *FlagSet) Args(names ...string) { fs.args = names }

// Example adds an example command line to the help.
func (fs *FlagSet) Example(lines ...string) { fs.examples = append(fs.examples, lines...) }

// Note adds a paragraph after the flags in the help.
func (fs *FlagSet) Note(text string) { fs.notes = append(fs.notes, text) }

// Require marks flags as required: Parse fails unless each is set to a
// non-empty value on the command line or through its Env variables, and
// the help marks them.
func (fs *FlagSet) Require(names ...string) {
	for _, n := range names {
		if fs.Lookup(n) == nil {
			panic("cmdline: Require of undefined flag --" + n)
		}
	}
	fs.required = append(fs.required, names...)
}

// Placeholder sets the word that stands for a flag's value in the help,
// for flags whose usage text has no `BACKQUOTED` word.
func (fs *FlagSet) Placeholder(name, word string) { fs.placeholders[name] = word }

// Env makes the first of the environment variables vars that is set the
// value of flag name when the command line does not set it; getenv reads
// them. The help names the variables but never shows their values, so
// secrets stay out of it.
func (fs *FlagSet) Env(name string, getenv func(string) string, vars ...string) {
	if fs.Lookup(name) == nil {
		panic("cmdline: Env of undefined flag --" + name)
	}
	fs.getenv = getenv
	fs.env[name] = vars
}

// HideDefault keeps the default values of the named flags out of the help,
// for defaults that may hold a secret (such as a database URL read from
// the environment).
func (fs *FlagSet) HideDefault(names ...string) {
	for _, n := range names {
		fs.hidden[n] = true
	}
}

// UsageError is a command line that cannot be run: an unknown flag, a
// missing required flag or a stray argument.
type UsageError struct {
	// Command is the subcommand, such as "fit" or "import things".
	Command string
	// Err says what is wrong.
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError for command.
func Usagef(command, format string, args ...any) error {
	return &UsageError{Command: command, Err: fmt.Errorf(format, args...)}
}

// Parse parses args. On -h or --help it prints the help to stdout and
// returns flag.ErrHelp. It returns a *UsageError for an unknown or
// malformed flag, a missing required flag or a positional argument.
func (fs *FlagSet) Parse(args []string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.PrintHelp(fs.stdout)
			return flag.ErrHelp
		}
		return &UsageError{Command: fs.command, Err: err}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, vars := range fs.env {
		if set[name] {
			continue
		}
		for _, v := range vars {
			if val := fs.getenv(v); val != "" {
				if err := fs.Set(name, val); err != nil {
					return Usagef(fs.command, "%s=%q: %v", v, val, err)
				}
				set[name] = true
				break
			}
		}
	}
	switch {
	case fs.NArg() > len(fs.args):
		return Usagef(fs.command, "unexpected argument %q (flags start with --)", fs.Arg(len(fs.args)))
	case fs.NArg() < len(fs.args):
		return Usagef(fs.command, "%s is required", strings.Join(fs.args[fs.NArg():], " and "))
	}
	var missing []string
	for _, n := range fs.required {
		if !set[n] || fs.Lookup(n).Value.String() == "" {
			m := "--" + n
			if vars := fs.env[n]; len(vars) > 0 {
				m += " (or $" + strings.Join(vars, ", $") + ")"
			}
			missing = append(missing, m)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return Usagef(fs.command, "%s is required", missing[0])
	default:
		return Usagef(fs.command, "%s and %s are required", strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1])
	}
}

// PrintHelp writes the help text to w.
func (fs *FlagSet) PrintHelp(w io.Writer) {
	var b strings.Builder
	synopsis := strings.Join(append([]string{"[flags]"}, fs.args...), " ")
	fmt.Fprintf(&b, "Usage: alignet %s %s\n\n%s\n", fs.command, synopsis, fs.summary)
	if len(fs.examples) > 0 {
		b.WriteString("\nExample:\n")
		for _, e := range fs.examples {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	if fs.hasFlags() {
		b.WriteString("\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := fs.placeholder(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			if slices.Contains(fs.required, f.Name) {
				line += "  (required)"
			}
			fmt.Fprintf(&b, "%s\n        %s", line, usage)
			if vars := fs.env[f.Name]; len(vars) > 0 {
				fmt.Fprintf(&b, " (or $%s)", strings.Join(vars, ", $"))
			}
			if !isZero(f.DefValue) && !fs.hidden[f.Name] {
				fmt.Fprintf(&b, " (default %s)", f.DefValue)
			}
			b.WriteString("\n")
		})
	}
	for _, n := range fs.notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	_, _ = io.WriteString(w, b.String())
}

func (fs *FlagSet) hasFlags() bool {
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	return has
}

// placeholder returns the value word of f ("" for booleans) and its usage
// text without backquotes.
func (fs *FlagSet) placeholder(f *flag.Flag) (string, string) {
	name, usage := flag.UnquoteUsage(f)
	if p, ok := fs.placeholders[f.Name]; ok {
		return p, usage
	}
	if strings.Contains(f.Usage, "`") {
		return name, usage
	}
	switch name {
	case "":
		return "", usage
	case "int", "uint":
		return "N", usage
	case "float":
		return "X", usage
	case "duration":
		return "DURATION", usage
	}
	return "VALUE", usage
}

// isZero reports whether a flag's default needs no mention.
func isZero(def string) bool {
	switch def {
	case "", "0", "false", "0s":
		return true
	}
	return false
}
