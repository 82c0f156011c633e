package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/ttlcache"
	"github.com/labstack/echo/v4"
)

// Items carry display data, global per item id (see alignet.ItemDisplay):
// a label, an external image URL and an uploaded image. Pages receive it
// with each query as a displayBody per item; uploaded images are served
// publicly (browsers load them with <img>, which sends no key) under a
// URL versioned by the image's checksum, so they can be cached for good.

// displayBody is how a page shows one item: its label and the URL of its
// picture, uploaded (relative to the API's base URL) or external.
type displayBody struct {
	Label string `json:"label,omitempty"`
	Image string `json:"image,omitempty"`
}

// imageMaxAge is the cache lifetime of an image fetched by its versioned
// URL (?v= its checksum), and unversionedMaxAge that of the bare URL.
const (
	imageMaxAge       = 365 * 24 * time.Hour
	unversionedMaxAge = 5 * time.Minute
)

// imageVersionLen is the length of the checksum prefix in image URLs.
const imageVersionLen = 16

// imagePath is the versioned URL path of an uploaded image.
func imagePath(item string, img *alignet.ItemImage) string {
	return "/v1/items/" + url.PathEscape(item) + "/image?v=" + img.SHA256[:imageVersionLen]
}

// toDisplayBody picks what a page shows: the uploaded image before an
// external one, and the label.
func toDisplayBody(d alignet.ItemDisplay) displayBody {
	b := displayBody{Label: d.Label, Image: d.ImageURL}
	if d.Image != nil {
		b.Image = imagePath(d.Item, d.Image)
	}
	return b
}

// displayEntry is the display data of a study's pool, by item.
type displayEntry struct {
	byItem map[string]displayBody
}

// newDisplayCache returns the cache of the display data of each study's
// pool, which next-query responses read from memory. Writes through this
// server invalidate it at once; writes through other servers are seen
// within DisplayCacheTTL.
func (s *Server) newDisplayCache() (*ttlcache.Cache[string, *displayEntry], error) {
	return ttlcache.New(ttlcache.Config[string, *displayEntry]{
		Load:          s.loadDisplays,
		TTL:           s.cfg.DisplayCacheTTL,
		RetryInterval: reloadInterval,
		MaxEntries:    studyCacheMax,
		Background:    func(*displayEntry) bool { return true },
		Now:           s.cfg.Now,
	})
}

// loadDisplays reads the display data of a study's pool.
func (s *Server) loadDisplays(ctx context.Context, study string) (*displayEntry, error) {
	st, err := s.studies.Get(ctx, study)
	if err != nil {
		return nil, fmt.Errorf("load study %q: %w", study, err)
	}
	e := &displayEntry{byItem: map[string]displayBody{}}
	if !st.found || len(st.items) == 0 {
		return e, nil
	}
	items := make([]string, 0, len(st.items))
	for it := range st.items {
		items = append(items, it)
	}
	ds, err := s.deps.Items.ItemDisplays(ctx, items)
	if err != nil {
		return nil, fmt.Errorf("load display data of study %q: %w", study, err)
	}
	for _, d := range ds {
		e.byItem[d.Item] = toDisplayBody(d)
	}
	return e, nil
}

// displayFor returns the display data of items of a study, from memory,
// for the "display" object of a next-query response: one displayBody per
// item that has display data (a page shows an item without any by its
// id). It fails only when the study's display data were never loaded and
// the store is unreachable (503).
func (s *Server) displayFor(ctx context.Context, study string, items []string) (map[string]displayBody, error) {
	e, err := s.displays.Get(ctx, study)
	if err != nil {
		return nil, unavailable(err)
	}
	out := make(map[string]displayBody, len(items))
	for _, it := range items {
		if b, ok := e.byItem[it]; ok {
			out[it] = b
		}
	}
	return out, nil
}

// itemParam returns the item of the route, unescaped. The router matches
// the escaped path only when it differs from the default encoding of the
// path (RawPath is set); otherwise the parameter is already unescaped.
func itemParam(c echo.Context) (string, error) {
	raw := c.Param("item")
	it, err := raw, error(nil)
	if c.Request().URL.RawPath != "" {
		it, err = url.PathUnescape(raw)
	}
	if err != nil || !alignet.ValidItemID(it) {
		return "", notFound("", "item %q not found", truncate(raw, alignet.MaxItemIDLen))
	}
	return it, nil
}

// itemDisplayIn is one item's display data as posted.
type itemDisplayIn struct {
	ID       *string `json:"id"`
	Label    string  `json:"label"`
	ImageURL string  `json:"image_url"`
}

// postItemDisplays sets the label and image URL of many items.
func (s *Server) postItemDisplays(c echo.Context) error {
	s.extendDeadlines(c)
	var req struct {
		Items []itemDisplayIn `json:"items"`
	}
	if err := bindJSON(c, s.cfg.MaxEmbeddingJSONBody, &req); err != nil {
		return err
	}
	if req.Items == nil {
		return missing("items")
	}
	if len(req.Items) == 0 {
		return invalid("items", "items must not be empty")
	}
	ds := make([]alignet.ItemDisplay, len(req.Items))
	seen := make(map[string]int, len(req.Items))
	for i, in := range req.Items {
		field := "items[" + itoa(i) + "]"
		if in.ID == nil {
			return missing(field + ".id")
		}
		ds[i] = alignet.ItemDisplay{Item: *in.ID, Label: in.Label, ImageURL: in.ImageURL}
		if err := ds[i].Validate(); err != nil {
			var fe *alignet.FieldError
			if errors.As(err, &fe) {
				return fieldErr(fe.Prefix(field))
			}
			return invalid(field, "%v", err)
		}
		if k, dup := seen[*in.ID]; dup {
			return invalid(field+".id", "item %q is also element %d", *in.ID, k)
		}
		seen[*in.ID] = i
	}
	n, err := s.deps.Items.PutItemDisplays(c.Request().Context(), ds)
	if err != nil {
		return storeErr(err, "item", "")
	}
	s.displays.InvalidateFunc(func(string, *displayEntry) bool { return true })
	return c.JSON(http.StatusOK, map[string]int64{"written": n})
}

// imageBody is the JSON form of an uploaded image's metadata.
type imageBody struct {
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	UpdatedAt   time.Time `json:"updated_at"`
	URL         string    `json:"url"`
}

func toImageBody(item string, img *alignet.ItemImage) *imageBody {
	if img == nil {
		return nil
	}
	return &imageBody{ContentType: img.ContentType, Size: img.Size, SHA256: img.SHA256, UpdatedAt: img.UpdatedAt, URL: imagePath(item, img)}
}

// getItem returns an item's display data.
func (s *Server) getItem(c echo.Context) error {
	it, err := itemParam(c)
	if err != nil {
		return err
	}
	ds, err := s.deps.Items.ItemDisplays(c.Request().Context(), []string{it})
	if err != nil {
		return storeErr(err, "item", "")
	}
	if len(ds) == 0 {
		return notFound("", "item %q has no display data", it)
	}
	d := ds[0]
	return c.JSON(http.StatusOK, map[string]any{
		"id": d.Item, "label": d.Label, "image_url": d.ImageURL, "image": toImageBody(d.Item, d.Image),
		"updated_at": d.UpdatedAt, "display": toDisplayBody(d),
	})
}

// sniffImage returns the image type of data, checked against the type the
// client declared (none, application/octet-stream or the same type).
func sniffImage(declared string, data []byte) (string, *Error) {
	got, _, _ := mime.ParseMediaType(http.DetectContentType(data))
	if !alignet.ValidImageType(got) {
		return "", newErr(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
			"the body is not a JPEG, PNG, WebP or GIF image (it looks like %s)", got)
	}
	if declared != "" {
		mt, _, err := mime.ParseMediaType(declared)
		if err == nil && mt != got && mt != echo.MIMEOctetStream {
			return "", newErr(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
				"Content-Type says %s but the body is %s", mt, got)
		}
	}
	return got, nil
}

// putItemImage stores the request body as an item's image.
func (s *Server) putItemImage(c echo.Context) error {
	it, err := itemParam(c)
	if err != nil {
		return err
	}
	buf := s.bufs.get()
	defer s.bufs.put(buf)
	if err := readBody(c, s.cfg.MaxImageBody, buf); err != nil {
		return err
	}
	if buf.Len() == 0 {
		return badBody("", "the body is empty; send the image bytes")
	}
	data := bytes.Clone(buf.Bytes())
	ct, aerr := sniffImage(c.Request().Header.Get(echo.HeaderContentType), data)
	if aerr != nil {
		return aerr
	}
	img, err := s.deps.Items.PutItemImage(c.Request().Context(), it, ct, data)
	if err != nil {
		return storeErr(err, "item", "")
	}
	s.displays.InvalidateFunc(func(string, *displayEntry) bool { return true })
	return c.JSON(http.StatusOK, toImageBody(it, &img))
}

// getItemImage serves an item's uploaded image to anyone, with an ETag
// (its checksum) and Last-Modified, answering conditional requests with
// 304. Fetched by its versioned URL it may be cached for a year.
func (s *Server) getItemImage(c echo.Context) error {
	it, err := itemParam(c)
	if err != nil {
		return err
	}
	img, data, err := s.deps.Items.ItemImage(c.Request().Context(), it)
	if err != nil {
		if errors.Is(err, alignet.ErrNotFound) {
			return notFound("", "item %q has no image", it)
		}
		return storeErr(err, "item", "")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, img.ContentType)
	h.Set("ETag", `"`+img.SHA256+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	maxAge := unversionedMaxAge
	if v := c.QueryParam("v"); v != "" && v == img.SHA256[:imageVersionLen] {
		maxAge = imageMaxAge
	}
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(maxAge.Seconds())))
	http.ServeContent(c.Response(), c.Request(), "", img.UpdatedAt, bytes.NewReader(data))
	return nil
}
