package db

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AddStudyItems adds items to study and returns how many were new; items
// already in the study (or repeated in the call) are ignored. Items must be
// non-empty. A missing study yields an error wrapping alignet.ErrNotFound.
func (d *DB) AddStudyItems(ctx context.Context, study string, items []string) (int64, error) {
	for i, it := range items {
		if it == "" {
			return 0, fmt.Errorf("db: add items to study %q: empty item at index %d", study, i)
		}
	}
	var n int64
	err := d.inTx(ctx, "add_study_items", func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1 FOR KEY SHARE`, study).Scan(&one); err != nil {
			return fmt.Errorf("study %q: %w", study, err)
		}
		if len(items) == 0 {
			return nil
		}
		// Sorted distinct input: concurrent callers lock in the same order.
		tag, err := tx.Exec(ctx, `INSERT INTO study_items (study, item)
			SELECT $1, item FROM (SELECT DISTINCT unnest($2::text[]) COLLATE "C" AS item) AS u ORDER BY item
			ON CONFLICT DO NOTHING`, study, items)
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		// FOR NO KEY UPDATE, which the FOR KEY SHARE locks of concurrent
		// adds and judgment inserts do not conflict with.
		_, err = tx.Exec(ctx, `UPDATE studies SET items_rev = items_rev + 1 WHERE id = $1`, study)
		return err
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("add items to study %q", study), err)
	}
	return n, nil
}

// StudyItems returns the items of study in ascending (bytewise) order. A
// missing study yields an error wrapping alignet.ErrNotFound.
func (d *DB) StudyItems(ctx context.Context, study string) ([]string, error) {
	defer d.observe("study_items", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT s.id, i.item FROM studies s
		LEFT JOIN study_items i ON i.study = s.id WHERE s.id = $1 ORDER BY i.item`, study)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("items of study %q", study), err)
	}
	items := []string{}
	seen := false
	var id string
	var item *string
	_, err = pgx.ForEachRow(rows, []any{&id, &item}, func() error {
		seen = true
		if item != nil {
			items = append(items, *item)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("items of study %q", study), err)
	}
	if !seen {
		return nil, wrapErr(fmt.Sprintf("items of study %q", study), pgx.ErrNoRows)
	}
	return items, nil
}
