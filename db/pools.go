package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// PutPool sets the generation pool of p.Study to the items p.Items of
// p.Space (nil: every item of the space) and returns it as stored. The
// space must have the dimension of the study's space, and every listed
// item an embedding in it; otherwise the error is an *alignet.FieldError
// naming "space" or "items[i]". A missing study or space yields an error
// wrapping alignet.ErrNotFound that names it.
func (d *DB) PutPool(ctx context.Context, p alignet.Pool) (alignet.Pool, error) {
	var fieldErr error
	err := d.inTx(ctx, "put_pool", func(tx pgx.Tx) error {
		var studyDim int
		if err := tx.QueryRow(ctx, `SELECT sp.dim FROM studies s JOIN spaces sp ON sp.name = s.space WHERE s.id = $1 FOR KEY SHARE OF s`,
			p.Study).Scan(&studyDim); err != nil {
			return fmt.Errorf("study %q: %w", p.Study, err)
		}
		sp, err := getSpace(ctx, tx, p.Space)
		if err != nil {
			return fmt.Errorf("space %q: %w", p.Space, err)
		}
		if sp.Dim != studyDim {
			fieldErr = alignet.Invalid("space", "space %q has dim %d, the study's space %d: the pool must be in the teacher's base space", p.Space, sp.Dim, studyDim)
			return fieldErr
		}
		if p.Items != nil {
			var missing *string
			var at int
			if err := tx.QueryRow(ctx, `SELECT u.item, u.ord::int - 1 FROM unnest($2::text[]) WITH ORDINALITY AS u(item, ord)
				LEFT JOIN embeddings e ON e.space = $1 AND e.item = u.item COLLATE "C"
				WHERE e.item IS NULL ORDER BY u.ord LIMIT 1`, p.Space, p.Items).Scan(&missing, &at); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if missing != nil {
				fieldErr = alignet.Invalid(fmt.Sprintf("items[%d]", at), "item %q has no embedding in space %q", *missing, p.Space)
				return fieldErr
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO generation_pools (study, space, items, updated_at) VALUES ($1, $2, $3, now())
			ON CONFLICT (study) DO UPDATE SET space = excluded.space, items = excluded.items, updated_at = excluded.updated_at
			RETURNING updated_at`, p.Study, p.Space, p.Items).Scan(&p.UpdatedAt)
	})
	if fieldErr != nil {
		return alignet.Pool{}, fieldErr
	}
	if err != nil {
		return alignet.Pool{}, wrapErr(fmt.Sprintf("put pool of study %q", p.Study), err)
	}
	return p, nil
}

// GetPool returns the generation pool of study. A missing study, or one
// without a pool, yields an error wrapping alignet.ErrNotFound.
func (d *DB) GetPool(ctx context.Context, study string) (alignet.Pool, error) {
	defer d.observe("get_pool", time.Now())
	p := alignet.Pool{Study: study}
	err := d.pool.QueryRow(ctx, `SELECT space, items, updated_at FROM generation_pools WHERE study = $1`, study).
		Scan(&p.Space, &p.Items, &p.UpdatedAt)
	if err != nil {
		return alignet.Pool{}, wrapErr(fmt.Sprintf("pool of study %q", study), err)
	}
	return p, nil
}

// ListPools returns every generation pool, by study, without the item
// lists (Items is nil whatever is stored; GetPool reads them).
func (d *DB) ListPools(ctx context.Context) ([]alignet.Pool, error) {
	defer d.observe("list_pools", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT study, space, updated_at FROM generation_pools ORDER BY study`)
	if err != nil {
		return nil, wrapErr("list pools", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.Pool, error) {
		var p alignet.Pool
		err := r.Scan(&p.Study, &p.Space, &p.UpdatedAt)
		return p, err
	})
	if err != nil {
		return nil, wrapErr("list pools", err)
	}
	if out == nil {
		out = []alignet.Pool{}
	}
	return out, nil
}

// PutItemLabels stores the labels of items of space, replacing their
// earlier labels, and returns the number of items written. Items need not
// have embeddings yet. A missing space yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) PutItemLabels(ctx context.Context, space string, labels []alignet.ItemLabels) (int64, error) {
	items := make([]string, len(labels))
	enc := make([]string, len(labels))
	for i, l := range labels {
		if l.Item == "" {
			return 0, fmt.Errorf("db: put labels in %q: empty item at index %d", space, i)
		}
		items[i] = l.Item
		// One text[] per item travels as a text literal of the array.
		enc[i] = encodeTextArray(l.Labels)
	}
	var n int64
	err := d.inTx(ctx, "put_item_labels", func(tx pgx.Tx) error {
		if _, err := getSpace(ctx, tx, space); err != nil {
			return fmt.Errorf("space %q: %w", space, err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO item_labels (space, item, labels, updated_at)
			SELECT $1, u.item, u.labels::text[], now() FROM unnest($2::text[], $3::text[]) AS u(item, labels)
			ORDER BY u.item COLLATE "C"
			ON CONFLICT (space, item) DO UPDATE SET labels = excluded.labels, updated_at = excluded.updated_at`, space, items, enc)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("put labels in %q", space), err)
	}
	return n, nil
}

// encodeTextArray renders ss as a Postgres text[] literal.
func encodeTextArray(ss []string) string {
	b := []byte{'{'}
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, s[j])
		}
		b = append(b, '"')
	}
	return string(append(b, '}'))
}

// ItemLabels returns the labels of every labelled item of space. A missing
// space yields an error wrapping alignet.ErrNotFound.
func (d *DB) ItemLabels(ctx context.Context, space string) (map[string][]string, error) {
	defer d.observe("item_labels", time.Now())
	what := fmt.Sprintf("labels of %q", space)
	if _, err := getSpace(ctx, d.pool, space); err != nil {
		return nil, wrapErr(what, err)
	}
	rows, err := d.pool.Query(ctx, `SELECT item, labels FROM item_labels WHERE space = $1`, space)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out := map[string][]string{}
	var item string
	var labels []string
	_, err = pgx.ForEachRow(rows, []any{&item, &labels}, func() error {
		out[item] = append([]string(nil), labels...)
		return nil
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return out, nil
}

// PoolEmbeddings returns every vector of space sorted by id, as
// AllEmbeddings does, but read by parts concurrent queries over disjoint
// id ranges of one exported snapshot, so that several Postgres backends
// decode them: the trainer reads generation pools of millions of vectors
// this way. A missing space yields an error wrapping alignet.ErrNotFound.
func (d *DB) PoolEmbeddings(ctx context.Context, space string, parts int) ([]string, []float32, error) {
	defer d.observe("pool_embeddings", time.Now())
	what := fmt.Sprintf("pool embeddings of %q", space)
	parts = max(parts, 1)
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, wrapErr(what, err)
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, wrapErr(what, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	sp, err := getSpace(ctx, tx, space)
	if err != nil {
		return nil, nil, wrapErr(what, err)
	}
	var snapshot string
	var n int
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot(), (SELECT count(*) FROM embeddings WHERE space = $1)`, space).Scan(&snapshot, &n); err != nil {
		return nil, nil, wrapErr(what, err)
	}
	parts = min(parts, max(n/10000, 1))
	// Part k holds rows [start[k], start[k+1]); bound[k] is its first id.
	start := make([]int, parts+1)
	bound := make([]string, parts)
	for k := 1; k <= parts; k++ {
		start[k] = k * n / parts
	}
	for k := 1; k < parts; k++ {
		if err := tx.QueryRow(ctx, `SELECT item FROM embeddings WHERE space = $1 ORDER BY item OFFSET $2 LIMIT 1`, space, start[k]).Scan(&bound[k]); err != nil {
			return nil, nil, wrapErr(what, err)
		}
	}
	ids := make([]string, n)
	vectors := make([]float32, n*sp.Dim)
	g, gctx := errgroup.WithContext(ctx)
	for k := 0; k < parts; k++ {
		g.Go(func() error {
			return pgx.BeginTxFunc(gctx, d.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(ptx pgx.Tx) error {
				if _, err := ptx.Exec(gctx, `SET TRANSACTION SNAPSHOT '`+snapshot+`'`); err != nil {
					return err
				}
				q := `SELECT item, vector FROM embeddings WHERE space = $1 AND ($2 = '' OR item >= $2) AND ($3 = '' OR item < $3) ORDER BY item`
				hi := ""
				if k+1 < parts {
					hi = bound[k+1]
				}
				rows, err := ptx.Query(gctx, q, space, bound[k], hi)
				if err != nil {
					return err
				}
				defer rows.Close()
				i := start[k]
				for rows.Next() {
					if i >= start[k+1] {
						return fmt.Errorf("part %d has more rows than the snapshot counted", k)
					}
					raw := rows.RawValues()
					ids[i] = string(raw[0])
					if err := decodeVector(vectors[i*sp.Dim:(i+1)*sp.Dim], raw[1]); err != nil {
						return fmt.Errorf("item %q: %w", raw[0], err)
					}
					i++
				}
				if err := rows.Err(); err != nil {
					return err
				}
				if i != start[k+1] {
					return fmt.Errorf("part %d has %d rows, the snapshot counted %d", k, i-start[k], start[k+1]-start[k])
				}
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, wrapErr(what, err)
	}
	return ids, vectors, nil
}
