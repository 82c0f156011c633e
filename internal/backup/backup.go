// Package backup takes and restores consistent snapshots of a deployment's
// Postgres state: every table of the database (judgments, studies, keys,
// teacher states and versions, students, artifacts, query logs, the
// migration record), with pg_dump and pg_restore underneath.
//
// pg_dump reads the whole database in one repeatable-read transaction, so
// the snapshot is consistent even while the server keeps storing. What it
// cannot contain is what only Kafka holds: judgments accepted (202) but not
// yet persisted when the dump started. Dumps use pg_dump's custom format,
// restorable with pg_restore by hand as well.
package backup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/alignet/alignet/internal/progress"
)

// Stats describes a finished dump or restore.
type Stats struct {
	// Tables is the number of tables whose data was dumped or restored.
	Tables int
	// Bytes is the size of the dump file.
	Bytes int64
}

// Dump writes a snapshot of the database at dbURL to the file out,
// reporting progress (one step per table, weighted by its size) on
// progressW when it is not nil. The file appears only once the dump is
// complete.
func Dump(ctx context.Context, dbURL, out string, progressW io.Writer) (Stats, error) {
	bin, err := tool("pg_dump")
	if err != nil {
		return Stats{}, err
	}
	conn, connURL, err := connect(ctx, dbURL)
	if err != nil {
		return Stats{}, err
	}
	sizes, err := tableSizes(ctx, conn)
	conn.Close(ctx)
	if err != nil {
		return Stats{}, err
	}
	var total int64
	for _, s := range sizes {
		total += max(s, 1)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return Stats{}, fmt.Errorf("create %s: %w", out, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // no-op once renamed

	bar := progress.New(progressW, "backup", total)
	tables := 0
	dumping := regexp.MustCompile(`dumping contents of table "([^"]+)"`)
	err = run(ctx, bin, []string{"--format=custom", "--no-owner", "--no-privileges", "--verbose",
		"--file=" + tmpName, "--dbname=" + connURL}, func(line string) {
		if m := dumping.FindStringSubmatch(line); m != nil {
			tables++
			bar.Add(max(sizes[m[1]], 1))
		}
	})
	if err != nil {
		return Stats{}, fmt.Errorf("pg_dump: %w", err)
	}
	bar.Finish()
	if err := syncFile(tmpName); err != nil {
		return Stats{}, err
	}
	if err := os.Rename(tmpName, out); err != nil {
		return Stats{}, fmt.Errorf("write %s: %w", out, err)
	}
	st, err := os.Stat(out)
	if err != nil {
		return Stats{}, fmt.Errorf("write %s: %w", out, err)
	}
	return Stats{Tables: tables, Bytes: st.Size()}, nil
}

// Restore rebuilds the snapshot in the file in into the database at dbURL,
// which must hold no tables yet, in one transaction: it either restores
// everything or leaves the database as it was. Progress (one step per
// table) goes to progressW when it is not nil.
func Restore(ctx context.Context, dbURL, in string, progressW io.Writer) (Stats, error) {
	bin, err := tool("pg_restore")
	if err != nil {
		return Stats{}, err
	}
	st, err := os.Stat(in)
	if err != nil {
		return Stats{}, fmt.Errorf("open backup: %w", err)
	}
	toc, err := exec.CommandContext(ctx, bin, "--list", in).Output()
	if err != nil {
		return Stats{}, fmt.Errorf("read backup %s: %w", in, exitDetail(err))
	}
	var total int64
	for _, l := range strings.Split(string(toc), "\n") {
		if strings.Contains(l, " TABLE DATA ") {
			total++
		}
	}
	conn, connURL, err := connect(ctx, dbURL)
	if err != nil {
		return Stats{}, err
	}
	existing, err := tableSizes(ctx, conn)
	conn.Close(ctx)
	if err != nil {
		return Stats{}, err
	}
	if len(existing) > 0 {
		names := make([]string, 0, len(existing))
		for n := range existing {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) > 5 {
			names = append(names[:5], "...")
		}
		return Stats{}, fmt.Errorf("restore needs an empty database, but it has %d tables (%s); create a new one with createdb",
			len(existing), strings.Join(names, ", "))
	}
	bar := progress.New(progressW, "restore", total)
	tables := 0
	restoring := regexp.MustCompile(`processing data for table "([^"]+)"`)
	err = run(ctx, bin, []string{"--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
		"--verbose", "--dbname=" + connURL, in}, func(line string) {
		if restoring.MatchString(line) {
			tables++
			bar.Add(1)
		}
	})
	if err != nil {
		return Stats{}, fmt.Errorf("pg_restore: %w", err)
	}
	bar.Finish()
	return Stats{Tables: tables, Bytes: st.Size()}, nil
}

// connect opens dbURL with pgx and returns it with the URL rewritten for
// libpq tools: pgx-only parameters are dropped, except search_path, which
// becomes libpq's options.
func connect(ctx context.Context, dbURL string) (*pgx.Conn, string, error) {
	if dbURL == "" {
		return nil, "", errors.New("no database URL: give --database-url or set DATABASE_URL")
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, "", fmt.Errorf("connect to the database: %w", err)
	}
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// A key=value connection string goes to libpq unchanged.
		return conn, dbURL, nil
	}
	q := u.Query()
	if sp := q.Get("search_path"); sp != "" {
		q.Del("search_path")
		q.Set("options", "-csearch_path="+sp)
	}
	for k := range q {
		switch k {
		case "sslmode", "sslcert", "sslkey", "sslrootcert", "connect_timeout", "application_name", "options", "target_session_attrs", "host", "port", "user", "password", "dbname", "passfile", "service":
		default:
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return conn, u.String(), nil
}

// tableSizes returns the total size in bytes of every ordinary table
// outside the system schemas, by "schema.table".
func tableSizes(ctx context.Context, conn *pgx.Conn) (map[string]int64, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	out := map[string]int64{}
	var name string
	var size int64
	_, err = pgx.ForEachRow(rows, []any{&name, &size}, func() error {
		out[name] = size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return out, nil
}

// tool finds a PostgreSQL client program: the newest
// /usr/lib/postgresql/N/bin/name (a client must not be older than the
// server), else name on PATH.
func tool(name string) (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in /usr/lib/postgresql/*/bin or PATH (apt-get install postgresql-client): %w", name, err)
	}
	return p, nil
}

func major(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// run runs bin with args, calling onLine for every line it writes to
// stderr, and returns an error carrying the last lines when it fails.
func run(ctx context.Context, bin string, args []string, onLine func(string)) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	var tail []string
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		onLine(line)
		tail = append(tail, line)
		if len(tail) > 8 {
			tail = tail[1:]
		}
	}
	if err := cmd.Wait(); err != nil {
		var errs []string
		for _, l := range tail {
			if strings.Contains(l, "error") || strings.Contains(l, "ERROR") || strings.Contains(l, "FATAL") {
				errs = append(errs, l)
			}
		}
		if len(errs) == 0 {
			errs = tail
		}
		return fmt.Errorf("%w: %s", err, strings.Join(errs, "; "))
	}
	return nil
}

// exitDetail adds the standard error of a failed command to its error.
func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
