package api

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/alignet/alignet"
	"github.com/labstack/echo/v4"
)

// The built-in participant page runs a session end to end in any browser,
// phones included, with no build step: GET /run/{study}?k=KEY&<platform
// parameters> serves one static HTML shell, the same for every study, whose
// script reads the study from its path, the key from k, and everything
// else from the API (GET /v1/studies/{study}/page, then sessions, next
// queries and judgments).
//
// Threat model: the link, key included, is public: participants see it,
// and it may reach logs and other people. The key must therefore be a
// study-bound collect key (POST /v1/keys with "study"): with it, anyone
// can do only what a participant does, in that one study (open sessions,
// read their queries, post judgments), at the rates of SessionLimit and
// AddressLimit, and can read nothing. The pages send no Referer (Referrer-
// Policy: no-referrer), so the key does not leak to the hosts of external
// stimuli or to the completion site. Revoke a leaked key with
// DELETE /v1/keys/{id} and publish a new link; judgments already stored
// stay. Attention checks and worker flags deal with people who answer
// carelessly or in bulk.

//go:embed run
var runFS embed.FS

// runAssets are the files under /run/assets/, with their content types.
var runAssets = map[string]string{
	"run.js":  "text/javascript; charset=utf-8",
	"run.css": "text/css; charset=utf-8",
}

// runPageCSP allows the page its own script, style and API, and pictures
// from anywhere (external stimuli). Framing is allowed: MTurk shows
// external questions in an iframe.
const runPageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src http: https: data: blob:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'"

// staticPage is a built-in page: one HTML shell and its assets, each
// with its ETag.
type staticPage struct {
	html   []byte
	types  map[string]string
	assets map[string][]byte
	etags  map[string]string
}

// newStaticPage loads dir/index.html and the assets named in types (by
// their path under dir) from fsys; the HTML links its assets by checksum
// ("assets/NAME?v="), so browsers may cache them for good.
func newStaticPage(fsys embed.FS, dir string, types map[string]string) (*staticPage, error) {
	p := &staticPage{types: types, assets: map[string][]byte{}, etags: map[string]string{}}
	html, err := fsys.ReadFile(dir + "/index.html")
	if err != nil {
		return nil, fmt.Errorf("api: %s page: %w", dir, err)
	}
	page := string(html)
	for name := range types {
		b, err := fsys.ReadFile(path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("api: %s page: %w", dir, err)
		}
		sum := sha256.Sum256(b)
		v := hex.EncodeToString(sum[:8])
		base := path.Base(name)
		p.assets[base], p.etags[base] = b, `"`+v+`"`
		page = strings.ReplaceAll(page, "assets/"+base+"?v=", "assets/"+base+"?v="+v)
	}
	p.html = []byte(page)
	return p, nil
}

// serveAsset serves the asset named by the file parameter.
func (p *staticPage) serveAsset(c echo.Context) error {
	name := c.Param("file")
	var ct string
	for n, t := range p.types {
		if path.Base(n) == name {
			ct = t
		}
	}
	if ct == "" {
		return notFound("", "no asset %q", truncate(name, 64))
	}
	h := c.Response().Header()
	setPageHeaders(h)
	h.Set("ETag", p.etags[name])
	if c.QueryParam("v") == strings.Trim(p.etags[name], `"`) {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if match := c.Request().Header.Get("If-None-Match"); match == p.etags[name] {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, ct, p.assets[name])
}

// setPageHeaders sets the security headers of the page and its assets.
func setPageHeaders(h http.Header) {
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
}

// runPageHTML serves the participant page of any study; a study that does
// not exist is reported by the page once the API answers.
func (s *Server) runPageHTML(c echo.Context) error {
	h := c.Response().Header()
	setPageHeaders(h)
	h.Set("Content-Security-Policy", runPageCSP)
	h.Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", s.page.html)
}

// runPageAsset serves the page's script and style sheet.
func (s *Server) runPageAsset(c echo.Context) error { return s.page.serveAsset(c) }

// pageBody is what the participant page shows besides the trials.
type pageBody struct {
	Study        string       `json:"study"`
	Task         alignet.Task `json:"task"`
	Title        string       `json:"title"`
	Consent      string       `json:"consent"`
	Instructions string       `json:"instructions"`
}

// getPageSettings returns a study's task and page texts, from memory.
func (s *Server) getPageSettings(c echo.Context) error {
	st, err := s.study(c.Request().Context(), c.Param("study"))
	if err != nil {
		return err
	}
	p := st.study.Settings.Page
	return c.JSON(http.StatusOK, pageBody{Study: st.study.ID, Task: st.study.Task,
		Title: p.Title, Consent: p.Consent, Instructions: p.Instructions})
}
