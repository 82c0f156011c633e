package api

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/labstack/echo/v4"
)

// CORS response header values.
const (
	corsAllowMethods  = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
	corsAllowHeaders  = "Authorization, Content-Type"
	corsExposeHeaders = "Retry-After, WWW-Authenticate, Content-Disposition"
	// corsMaxAge is how long, in seconds, browsers may cache a preflight.
	corsMaxAge = 600
)

// corsMiddleware lets pages of the allowed origins call the API from
// browsers. A preflight (OPTIONS with Access-Control-Request-Method) is
// answered here with 204: for an allowed origin with the methods, headers
// and max age to use, for any other origin without CORS headers, so the
// browser refuses the call. Other requests from an allowed origin get
// Access-Control-Allow-Origin and may read Retry-After. Keys travel in the
// Authorization header, never in cookies, so credentials are not allowed.
func corsMiddleware(origins []string) echo.MiddlewareFunc {
	anyOrigin := slices.Contains(origins, "*")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			h := c.Response().Header()
			origin := req.Header.Get("Origin")
			allowed := origin != "" && (anyOrigin || slices.Contains(origins, origin))
			if !anyOrigin {
				// The answer depends on Origin: caches must key on it.
				h.Add("Vary", "Origin")
			}
			preflight := req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != ""
			if preflight {
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
			}
			if allowed {
				if anyOrigin {
					h.Set("Access-Control-Allow-Origin", "*")
				} else {
					h.Set("Access-Control-Allow-Origin", origin)
				}
			}
			if !preflight {
				if allowed {
					h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
				}
				return next(c)
			}
			if allowed {
				h.Set("Access-Control-Allow-Methods", corsAllowMethods)
				h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
				h.Set("Access-Control-Max-Age", strconv.Itoa(corsMaxAge))
			}
			return c.NoContent(http.StatusNoContent)
		}
	}
}
