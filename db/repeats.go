package db

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// RepeatSet returns the study's repeat triplets in order (empty before
// one is stored). A missing study yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) RepeatSet(ctx context.Context, study string) ([][3]string, error) {
	defer d.observe("repeat_set", time.Now())
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, study).Scan(&one); err != nil {
		return nil, wrapErr(fmt.Sprintf("repeat set of study %q", study), err)
	}
	return d.repeatSet(ctx, d.pool, study)
}

func (d *DB) repeatSet(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, study string) ([][3]string, error) {
	rows, err := q.Query(ctx, `SELECT item_a, item_b, item_c FROM repeat_triplets WHERE study = $1 ORDER BY seq`, study)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("repeat set of study %q", study), err)
	}
	out := [][3]string{}
	var t [3]string
	if _, err := pgx.ForEachRow(rows, []any{&t[0], &t[1], &t[2]}, func() error {
		out = append(out, t)
		return nil
	}); err != nil {
		return nil, wrapErr(fmt.Sprintf("repeat set of study %q", study), err)
	}
	return out, nil
}

// EnsureRepeatSet stores ts as the study's repeat set unless it has one,
// and returns the stored set: the first caller's set wins, so every API
// replica serves the same repeats. A missing study yields an error
// wrapping alignet.ErrNotFound.
func (d *DB) EnsureRepeatSet(ctx context.Context, study string, ts [][3]string) ([][3]string, error) {
	var out [][3]string
	err := d.inTx(ctx, "ensure_repeat_set", func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1 FOR UPDATE`, study).Scan(&one); err != nil {
			return fmt.Errorf("study %q: %w", study, err)
		}
		var err error
		if out, err = d.repeatSet(ctx, tx, study); err != nil || len(out) > 0 {
			return err
		}
		seq := make([]int32, len(ts))
		a, b, c := make([]string, len(ts)), make([]string, len(ts)), make([]string, len(ts))
		for i, t := range ts {
			seq[i], a[i], b[i], c[i] = int32(i), t[0], t[1], t[2]
		}
		if _, err := tx.Exec(ctx, `INSERT INTO repeat_triplets (study, seq, item_a, item_b, item_c)
			SELECT $1, s, a, b, c FROM unnest($2::int4[], $3::text[], $4::text[], $5::text[]) AS u(s, a, b, c)`,
			study, seq, a, b, c); err != nil {
			return err
		}
		out = slices.Clone(ts)
		return nil
	})
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("ensure repeat set of study %q", study), err)
	}
	if out == nil {
		out = [][3]string{}
	}
	return out, nil
}
