package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/internal/testenv"
)

// newDatabase creates an empty database on the test server and returns its
// URL; it is dropped when the test ends.
func newDatabase(t *testing.T) string {
	t.Helper()
	base := testenv.DatabaseURL(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "backup_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// fill migrates the database at u and stores a little of everything.
func fill(t *testing.T, u string) {
	t.Helper()
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: u, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.PutSpace(ctx, "clip", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := d.UpsertEmbeddings(ctx, "clip", []string{"a", "b", "c"}, []float32{1, 0, 0, 1, 0.5, -0.5}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskOddOneOut, Space: "clip"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddStudyItems(ctx, "s1", []string{"a", "b", "c"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	js := make([]alignet.Judgment, 500)
	for i := range js {
		js[i] = alignet.Judgment{ID: fmt.Sprintf("j%04d", i), Study: "s1", Task: alignet.TaskOddOneOut,
			Worker: "w" + fmt.Sprint(i%7), Items: [3]string{"a", "b", "c"}, Odd: "c", RTMillis: int32(i),
			QueryID: "q", ReceivedAt: now.Add(time.Duration(i) * time.Millisecond)}
	}
	if _, err := d.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateAPIKey(ctx, alignet.APIKey{Name: "pages", Scopes: []string{alignet.ScopeCollect}, Prefix: "alg_x"},
		make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	params := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: 2, P: 2, W: []float32{1, 0, 0, 1}, B: []float32{0, 0}, Std: 1, Tau: 1}
	if err := d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", Offsets: map[int32]int64{0: 500},
		States: []alignet.TeacherState{{Study: "s1", Status: alignet.TeacherOnline, UpdatedAt: now, JudgmentsSeen: 500, Params: params}},
		Seen:   map[string][]uint64{"s1": {1, 2, 3}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "s1", Kind: alignet.VersionOnline, Params: params}, 10); err != nil {
		t.Fatal(err)
	}
	// Query selection: a session, its queries (one answered), flags and a
	// repeat set.
	if _, _, err := d.OpenSession(ctx, alignet.Session{ID: "sess", Study: "s1", Worker: "w0", Platform: alignet.PlatformGeneric,
		Params: map[string]string{"k": "v"}, Trials: 50, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	qs := []alignet.Query{
		{ID: "q1", Study: "s1", Session: "sess", Worker: "w0", Kind: alignet.QueryActive, Items: [3]string{"a", "b", "c"},
			Score: 0.9, ServedAt: now, ExpiresAt: now.Add(time.Hour)},
		{ID: "q2", Study: "s1", Session: "sess", Worker: "w0", Kind: alignet.QueryCheck, Items: [3]string{"c", "b", "a"},
			Expected: "a", ServedAt: now, ExpiresAt: now.Add(time.Hour)},
	}
	if _, err := d.LogQueries(ctx, qs); err != nil {
		t.Fatal(err)
	}
	passed := true
	if _, err := d.AnswerQueries(ctx, "s1", []alignet.Answer{{Query: qs[1], JudgmentID: "j0000", At: now, RTMillis: 900, CheckPassed: &passed}},
		alignet.DefaultQuerySettings().Flags); err != nil {
		t.Fatal(err)
	}
	if _, err := d.EnsureRepeatSet(ctx, "s1", [][3]string{{"a", "b", "c"}}); err != nil {
		t.Fatal(err)
	}
}

// snapshot returns, for every user table of the database at u, its row
// count and a digest of its rows in a canonical order.
func snapshot(t *testing.T, u string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tb := range tables {
		var n int64
		var digest *string
		q := `SELECT count(*), md5(string_agg(r::text, E'\n' ORDER BY r::text)) FROM ` + tb + ` r`
		if err := conn.QueryRow(ctx, q).Scan(&n, &digest); err != nil {
			t.Fatalf("%s: %v", tb, err)
		}
		d := ""
		if digest != nil {
			d = *digest
		}
		out[tb] = fmt.Sprintf("%d rows %s", n, d)
	}
	return out
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	src := newDatabase(t)
	fill(t, src)
	want := snapshot(t, src)
	for _, tb := range []string{"public.judgments", "public.teacher_versions", "public.api_keys", "public.schema_migrations",
		"public.sessions", "public.queries", "public.query_answers", "public.worker_flags", "public.repeat_triplets"} {
		if want[tb] == "" || strings.HasPrefix(want[tb], "0 rows") {
			t.Fatalf("source table %s is empty or missing: %q", tb, want[tb])
		}
	}
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "alignet.backup")
	var progress strings.Builder
	st, err := Dump(ctx, src, file, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tables < len(want) || st.Bytes == 0 {
		t.Fatalf("dump stats %+v for %d tables", st, len(want))
	}
	if !strings.Contains(progress.String(), "backup") {
		t.Fatalf("no progress reported: %q", progress.String())
	}

	dst := newDatabase(t)
	rst, err := Restore(ctx, dst, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rst.Tables != st.Tables {
		t.Fatalf("restored %d tables, dumped %d", rst.Tables, st.Tables)
	}
	got := snapshot(t, dst)
	if len(got) != len(want) {
		t.Fatalf("restored tables %v, want %v", got, want)
	}
	for tb, w := range want {
		if got[tb] != w {
			t.Errorf("table %s: restored %q, want %q", tb, got[tb], w)
		}
	}

	// The restored database works with the code: it is migrated and serves
	// the teacher.
	d, err := db.Open(ctx, db.Config{URL: dst, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Ready(ctx); err != nil {
		t.Fatalf("restored database not ready: %v", err)
	}
	if s, err := d.TeacherState(ctx, "s1"); err != nil || s.JudgmentsSeen != 500 {
		t.Fatalf("restored teacher state = %+v, %v", s, err)
	}

	// A second restore into the now non-empty database is refused and
	// changes nothing.
	if _, err := Restore(ctx, dst, file, nil); err == nil || !strings.Contains(err.Error(), "empty database") {
		t.Fatalf("restore into a non-empty database = %v, want a refusal", err)
	}
}

func TestDumpFailureLeavesNoFile(t *testing.T) {
	t.Parallel()
	testenv.DatabaseURL(t) // the tools need the test environment
	file := filepath.Join(t.TempDir(), "x.backup")
	_, err := Dump(context.Background(), "postgres://nobody@127.0.0.1:1/none?sslmode=disable", file, nil)
	if err == nil {
		t.Fatal("dump of an unreachable database succeeded")
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "*")); len(matches) != 0 {
		t.Fatalf("a failed dump left files: %v", matches)
	}
}
