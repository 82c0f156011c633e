package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/alignet/alignet"
)

// fakeImage is an uploaded image in the fake store.
type fakeImage struct {
	meta alignet.ItemImage
	data []byte
}

func (f *fakeStore) PutItemDisplays(ctx context.Context, ds []alignet.ItemDisplay) (int64, error) {
	done, err := f.enter(ctx, "PutItemDisplays")
	if err != nil {
		return 0, err
	}
	defer done()
	next := map[string]alignet.ItemDisplay{}
	for i, d := range ds {
		if d.Item == "" {
			return 0, fmt.Errorf("fake: put item displays: empty item at index %d", i)
		}
		if err := pgText(d.Item, d.Label, d.ImageURL); err != nil {
			return 0, err
		}
		next[d.Item] = alignet.ItemDisplay{Item: d.Item, Label: d.Label, ImageURL: d.ImageURL, UpdatedAt: time.Now().UTC()}
	}
	if f.displays == nil {
		f.displays = map[string]alignet.ItemDisplay{}
	}
	for k, v := range next {
		f.displays[k] = v
	}
	return int64(len(next)), nil
}

func (f *fakeStore) ItemDisplays(ctx context.Context, items []string) ([]alignet.ItemDisplay, error) {
	done, err := f.enter(ctx, "ItemDisplays")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(items...); err != nil {
		return nil, err
	}
	out := []alignet.ItemDisplay{}
	seen := map[string]bool{}
	for _, it := range items {
		if seen[it] {
			continue
		}
		seen[it] = true
		d, ok := f.displays[it]
		img, hasImg := f.images[it]
		if !ok && !hasImg {
			continue
		}
		d.Item = it
		if hasImg {
			m := img.meta
			d.Image = &m
			if !ok {
				d.UpdatedAt = m.UpdatedAt
			}
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b alignet.ItemDisplay) int {
		switch {
		case a.Item < b.Item:
			return -1
		case a.Item > b.Item:
			return 1
		}
		return 0
	})
	return out, nil
}

func (f *fakeStore) PutItemImage(ctx context.Context, item, contentType string, data []byte) (alignet.ItemImage, error) {
	done, err := f.enter(ctx, "PutItemImage")
	if err != nil {
		return alignet.ItemImage{}, err
	}
	defer done()
	if item == "" || !alignet.ValidImageType(contentType) || len(data) == 0 {
		return alignet.ItemImage{}, fmt.Errorf("fake: put image of item %q: %w", item, alignet.ErrInvalid)
	}
	if err := pgText(item); err != nil {
		return alignet.ItemImage{}, err
	}
	sum := sha256.Sum256(data)
	m := alignet.ItemImage{ContentType: contentType, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), UpdatedAt: time.Now().UTC()}
	if f.images == nil {
		f.images = map[string]fakeImage{}
	}
	f.images[item] = fakeImage{meta: m, data: slices.Clone(data)}
	return m, nil
}

func (f *fakeStore) ItemImage(ctx context.Context, item string) (alignet.ItemImage, []byte, error) {
	done, err := f.enter(ctx, "ItemImage")
	if err != nil {
		return alignet.ItemImage{}, nil, err
	}
	defer done()
	if err := pgText(item); err != nil {
		return alignet.ItemImage{}, nil, err
	}
	img, ok := f.images[item]
	if !ok {
		return alignet.ItemImage{}, nil, fmt.Errorf("image of item %q: %w", item, alignet.ErrNotFound)
	}
	return img.meta, slices.Clone(img.data), nil
}
