package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// PutItemDisplays stores the label and image URL of each display, all or
// nothing, replacing what the items had (an empty field clears it), and
// returns how many rows were written. Uploaded images are kept; Image and
// UpdatedAt of the inputs are ignored. An item given twice is written
// once, with its last display.
func (d *DB) PutItemDisplays(ctx context.Context, ds []alignet.ItemDisplay) (int64, error) {
	last := make(map[string]int, len(ds))
	for i, x := range ds {
		if x.Item == "" {
			return 0, fmt.Errorf("db: put item displays: empty item at index %d", i)
		}
		last[x.Item] = i
	}
	items := make([]string, 0, len(last))
	labels := make([]string, 0, len(last))
	urls := make([]string, 0, len(last))
	for i, x := range ds {
		if last[x.Item] == i {
			items, labels, urls = append(items, x.Item), append(labels, x.Label), append(urls, x.ImageURL)
		}
	}
	var n int64
	err := d.inTx(ctx, "put_item_displays", func(tx pgx.Tx) error {
		// Sorted input: concurrent callers lock rows in the same order.
		tag, err := tx.Exec(ctx, `INSERT INTO item_display (item, label, image_url)
			SELECT item, label, url FROM unnest($1::text[], $2::text[], $3::text[]) AS u(item, label, url)
			ORDER BY item COLLATE "C"
			ON CONFLICT (item) DO UPDATE SET label = excluded.label, image_url = excluded.image_url, updated_at = now()`,
			items, labels, urls)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, wrapErr("put item displays", err)
	}
	return n, nil
}

// ItemDisplays returns the display data of those of items that have a
// label, an image URL or an uploaded image, in ascending item order;
// items without any are left out. Image holds the uploaded image's
// metadata, never its bytes.
func (d *DB) ItemDisplays(ctx context.Context, items []string) ([]alignet.ItemDisplay, error) {
	defer d.observe("item_displays", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT coalesce(d.item, i.item), coalesce(d.label, ''), coalesce(d.image_url, ''),
			coalesce(d.updated_at, i.updated_at), i.content_type, length(i.data), i.sha256, i.updated_at
		FROM (SELECT DISTINCT unnest($1::text[]) COLLATE "C" AS item) AS u
		LEFT JOIN item_display d ON d.item = u.item
		LEFT JOIN item_images i ON i.item = u.item
		WHERE d.item IS NOT NULL OR i.item IS NOT NULL
		ORDER BY 1`, items)
	if err != nil {
		return nil, wrapErr("item displays", err)
	}
	out := []alignet.ItemDisplay{}
	var x alignet.ItemDisplay
	var ct, sum *string
	var size *int64
	var imgAt *time.Time
	_, err = pgx.ForEachRow(rows, []any{&x.Item, &x.Label, &x.ImageURL, &x.UpdatedAt, &ct, &size, &sum, &imgAt}, func() error {
		y := x
		if ct != nil {
			y.Image = &alignet.ItemImage{ContentType: *ct, Size: *size, SHA256: *sum, UpdatedAt: *imgAt}
		}
		out = append(out, y)
		return nil
	})
	if err != nil {
		return nil, wrapErr("item displays", err)
	}
	return out, nil
}

// PutItemImage stores data as the image of item, replacing any previous
// one, and returns its metadata. contentType must be one that
// alignet.ValidImageType accepts; the checksum and time are computed here.
func (d *DB) PutItemImage(ctx context.Context, item, contentType string, data []byte) (alignet.ItemImage, error) {
	defer d.observe("put_item_image", time.Now())
	if item == "" || !alignet.ValidImageType(contentType) || len(data) == 0 {
		return alignet.ItemImage{}, fmt.Errorf("db: put image of item %q: %w: need an item, an image type and bytes", item, alignet.ErrInvalid)
	}
	sum := sha256.Sum256(data)
	img := alignet.ItemImage{ContentType: contentType, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	err := d.pool.QueryRow(ctx, `INSERT INTO item_images (item, content_type, sha256, data) VALUES ($1, $2, $3, $4)
		ON CONFLICT (item) DO UPDATE SET content_type = excluded.content_type, sha256 = excluded.sha256,
			data = excluded.data, updated_at = now()
		RETURNING updated_at`, item, contentType, img.SHA256, data).Scan(&img.UpdatedAt)
	if err != nil {
		return alignet.ItemImage{}, wrapErr(fmt.Sprintf("put image of item %q", item), err)
	}
	return img, nil
}

// ItemImage returns the uploaded image of item and its bytes. An item
// without one yields an error wrapping alignet.ErrNotFound.
func (d *DB) ItemImage(ctx context.Context, item string) (alignet.ItemImage, []byte, error) {
	defer d.observe("item_image", time.Now())
	var img alignet.ItemImage
	var data []byte
	err := d.pool.QueryRow(ctx, `SELECT content_type, sha256, updated_at, data FROM item_images WHERE item = $1`, item).
		Scan(&img.ContentType, &img.SHA256, &img.UpdatedAt, &data)
	if err != nil {
		return alignet.ItemImage{}, nil, wrapErr(fmt.Sprintf("image of item %q", item), err)
	}
	img.Size = int64(len(data))
	return img, data, nil
}
