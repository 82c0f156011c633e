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

// runPage is the page's HTML and its assets, each with its ETag.
type runPage struct {
	html   []byte
	assets map[string][]byte
	etags  map[string]string
}

// newRunPage loads the embedded page; the HTML links its assets by
// checksum, so browsers may cache them for good.
func newRunPage() (*runPage, error) {
	p := &runPage{assets: map[string][]byte{}, etags: map[string]string{}}
	html, err := runFS.ReadFile("run/index.html")
	if err != nil {
		return nil, fmt.Errorf("api: participant page: %w", err)
	}
	page := string(html)
	for name := range runAssets {
		b, err := runFS.ReadFile(path.Join("run", name))
		if err != nil {
			return nil, fmt.Errorf("api: participant page: %w", err)
		}
		sum := sha256.Sum256(b)
		v := hex.EncodeToString(sum[:8])
		p.assets[name], p.etags[name] = b, `"`+v+`"`
		page = strings.ReplaceAll(page, "assets/"+name+"?v=", "assets/"+name+"?v="+v)
	}
	p.html = []byte(page)
	return p, nil
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
func (s *Server) runPageAsset(c echo.Context) error {
	name := c.Param("file")
	ct, ok := runAssets[name]
	if !ok {
		return notFound("", "no asset %q", truncate(name, 64))
	}
	h := c.Response().Header()
	setPageHeaders(h)
	h.Set("ETag", s.page.etags[name])
	if c.QueryParam("v") == strings.Trim(s.page.etags[name], `"`) {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if match := c.Request().Header.Get("If-None-Match"); match == s.page.etags[name] {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, ct, s.page.assets[name])
}

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
