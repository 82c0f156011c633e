package db

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

// UpsertEmbeddings stores one vector per id in space, replacing existing
// vectors, and returns the number of rows written. vectors holds the vectors
// back to back, so len(vectors) must be len(ids)*dim; ids must be non-empty
// and distinct. The call is all-or-nothing: one transaction that COPYs the
// rows into a temporary table, then upserts them. Rows are encoded one at a
// time while streaming, so memory use beyond the inputs stays small.
// A missing space yields an error wrapping alignet.ErrNotFound.
func (d *DB) UpsertEmbeddings(ctx context.Context, space string, ids []string, vectors []float32) (int64, error) {
	// Sorted order: concurrent upserts then lock rows in the same order and
	// cannot deadlock; it also detects duplicate ids.
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return ids[order[a]] < ids[order[b]] })
	for k, i := range order {
		if ids[i] == "" {
			return 0, fmt.Errorf("db: upsert embeddings in %q: empty id at index %d", space, i)
		}
		if k > 0 && ids[order[k-1]] == ids[i] {
			return 0, fmt.Errorf("db: upsert embeddings in %q: duplicate id %q", space, ids[i])
		}
	}
	var n int64
	err := d.inTx(ctx, "upsert_embeddings", func(tx pgx.Tx) error {
		sp, err := getSpace(ctx, tx, space)
		if err != nil {
			return fmt.Errorf("space %q: %w", space, err)
		}
		if len(vectors) != len(ids)*sp.Dim {
			return fmt.Errorf("%d floats for %d ids of dim %d: want %d", len(vectors), len(ids), sp.Dim, len(ids)*sp.Dim)
		}
		if len(ids) == 0 {
			return nil
		}
		// EXTERNAL: random floats do not compress, so skip trying.
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE alignet_embeddings_in (
				item text COLLATE "C" NOT NULL, vector bytea NOT NULL) ON COMMIT DROP;
			ALTER TABLE pg_temp.alignet_embeddings_in ALTER COLUMN vector SET STORAGE EXTERNAL`); err != nil {
			return fmt.Errorf("create temp table: %w", err)
		}
		src := &vectorSource{ids: ids, vecs: vectors, dim: sp.Dim, order: order, i: -1, buf: make([]byte, 4*sp.Dim)}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", "alignet_embeddings_in"}, []string{"item", "vector"}, src); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO embeddings (space, item, vector, updated_at)
			SELECT $1, item, vector, now() FROM pg_temp.alignet_embeddings_in
			ON CONFLICT (space, item) DO UPDATE SET vector = EXCLUDED.vector, updated_at = EXCLUDED.updated_at`, space)
		if err != nil {
			return fmt.Errorf("upsert: %w", err)
		}
		n = tag.RowsAffected()
		// Last, so the space's row is locked only until the commit.
		_, err = tx.Exec(ctx, `UPDATE spaces SET embeddings_rev = embeddings_rev + 1 WHERE name = $1`, space)
		return err
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("upsert embeddings in %q", space), err)
	}
	return n, nil
}

// vectorSource streams (item, vector) rows to COPY in the given order,
// encoding each vector into one reused buffer (pgx copies it at once).
type vectorSource struct {
	ids   []string
	vecs  []float32
	dim   int
	order []int
	i     int
	buf   []byte
}

func (s *vectorSource) Next() bool { s.i++; return s.i < len(s.order) }

func (s *vectorSource) Values() ([]any, error) {
	k := s.order[s.i]
	encodeVector(s.buf, s.vecs[k*s.dim:(k+1)*s.dim])
	return []any{s.ids[k], s.buf}, nil
}

func (s *vectorSource) Err() error { return nil }

// encodeVector writes v as little-endian float32s into dst (len 4*len(v)).
func encodeVector(dst []byte, v []float32) {
	for j, f := range v {
		binary.LittleEndian.PutUint32(dst[4*j:], math.Float32bits(f))
	}
}

// decodeVector reads little-endian float32s from src into dst.
func decodeVector(dst []float32, src []byte) error {
	if len(src) != 4*len(dst) {
		return fmt.Errorf("stored vector has %d bytes, want %d", len(src), 4*len(dst))
	}
	for j := range dst {
		dst[j] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*j:]))
	}
	return nil
}

// LoadEmbeddings returns the vectors of ids in space, back to back in the
// order of ids, and whether each was found; missing vectors are zeros.
// A missing space yields an error wrapping alignet.ErrNotFound.
func (d *DB) LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error) {
	defer d.observe("load_embeddings", time.Now())
	what := fmt.Sprintf("load embeddings from %q", space)
	sp, err := getSpace(ctx, d.pool, space)
	if err != nil {
		return nil, nil, wrapErr(what, err)
	}
	first := make(map[string]int, len(ids))
	for i, id := range ids {
		if _, ok := first[id]; !ok {
			first[id] = i
		}
	}
	vecs := make([]float32, len(ids)*sp.Dim)
	found := make([]bool, len(ids))
	if len(ids) == 0 {
		return vecs, found, nil
	}
	rows, err := d.pool.Query(ctx, `SELECT item, vector FROM embeddings WHERE space = $1 AND item = ANY($2::text[])`, space, ids)
	if err != nil {
		return nil, nil, wrapErr(what, err)
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		i, ok := first[string(raw[0])]
		if !ok {
			continue
		}
		if err := decodeVector(vecs[i*sp.Dim:(i+1)*sp.Dim], raw[1]); err != nil {
			return nil, nil, fmt.Errorf("db: %s: item %q: %w", what, raw[0], err)
		}
		found[i] = true
	}
	if err := rows.Err(); err != nil {
		return nil, nil, wrapErr(what, err)
	}
	for i, id := range ids { // repeated ids share the first one's vector
		if j := first[id]; j != i && found[j] {
			copy(vecs[i*sp.Dim:(i+1)*sp.Dim], vecs[j*sp.Dim:(j+1)*sp.Dim])
			found[i] = true
		}
	}
	return vecs, found, nil
}

// AllEmbeddings returns every vector in space, sorted by id, from one
// consistent snapshot. A missing space yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) AllEmbeddings(ctx context.Context, space string) (ids []string, vectors []float32, err error) {
	defer d.observe("all_embeddings", time.Now())
	what := fmt.Sprintf("all embeddings of %q", space)
	err = pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		sp, err := getSpace(ctx, tx, space)
		if err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM embeddings WHERE space = $1`, space).Scan(&n); err != nil {
			return err
		}
		ids = make([]string, 0, n)
		vectors = make([]float32, 0, n*int64(sp.Dim))
		rows, err := tx.Query(ctx, `SELECT item, vector FROM embeddings WHERE space = $1 ORDER BY item`, space)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			raw := rows.RawValues()
			ids = append(ids, string(raw[0]))
			off := len(vectors)
			vectors = slices.Grow(vectors, sp.Dim)[:off+sp.Dim]
			if err := decodeVector(vectors[off:], raw[1]); err != nil {
				return fmt.Errorf("item %q: %w", raw[0], err)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, wrapErr(what, err)
	}
	return ids, vectors, nil
}

// CountEmbeddings returns the number of vectors stored in space. A missing
// space yields an error wrapping alignet.ErrNotFound.
func (d *DB) CountEmbeddings(ctx context.Context, space string) (int64, error) {
	defer d.observe("count_embeddings", time.Now())
	var n int64
	err := d.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM embeddings e WHERE e.space = s.name)
		FROM spaces s WHERE s.name = $1`, space).Scan(&n)
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("count embeddings in %q", space), err)
	}
	return n, nil
}
