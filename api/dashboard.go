package api

import (
	"embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// The built-in dashboard: GET /dashboard lists the studies and
// GET /dashboard/{study} shows one (collection progress, workers and their
// flags, the query mix, the teacher's learning curve, a reliability
// diagram, drift signals with their change points, student alignment, and
// the lag and freshness of every role). Like the participant page it is
// one static HTML shell whose script draws everything in the browser from
// the JSON API, with the vendored uPlot (api/dashboard/uplot, pinned in
// its VERSION file); nothing is loaded from elsewhere.
//
// The pages hold no data: every number comes from read-scope API calls
// with a key the user gives, either in a form or in the URL fragment
// (/dashboard/{study}#k=KEY, which browsers never send to servers). The
// page keeps it in sessionStorage (gone when the tab closes), removes the
// fragment from the address bar, and sends no Referer (Referrer-Policy:
// no-referrer), so the key reaches no other site.

//go:embed dashboard
var dashboardFS embed.FS

// dashboardAssets are the files under /dashboard/assets/, by their path
// under api/dashboard, with their content types.
var dashboardAssets = map[string]string{
	"dashboard.js":            "text/javascript; charset=utf-8",
	"dashboard.css":           "text/css; charset=utf-8",
	"uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
	"uplot/uPlot.min.css":     "text/css; charset=utf-8",
}

// dashboardCSP allows the page its own scripts, styles and API only.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// dashboardHTML serves the dashboard shell of the study list and of any
// study; a study that does not exist is reported by the page.
func (s *Server) dashboardHTML(c echo.Context) error {
	h := c.Response().Header()
	setPageHeaders(h)
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", s.dashboard.html)
}

// dashboardAsset serves the dashboard's scripts and style sheets.
func (s *Server) dashboardAsset(c echo.Context) error { return s.dashboard.serveAsset(c) }
