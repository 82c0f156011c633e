package api

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// Slow or stalled clients are bounded in three ways: Serve caps the open
// connections (Config.MaxConns); deadlines below bound how long a client may
// take to send a body and to take a response; and exports, which hold a
// database connection while they stream, are limited to Config.MaxExports
// at once and fail once a client stops reading for WriteTimeout.

// deadlines sets the connection deadlines of a request before anything
// else runs, authentication included: a body must arrive within
// ReadTimeout, and the response must be written within ReadTimeout +
// WriteTimeout. Once the body is read to its end the read deadline is
// lifted again, because net/http's background read would otherwise cancel
// a request that is still being answered when it passes.
func (s *Server) deadlines(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		rc := http.NewResponseController(c.Response())
		now := time.Now()
		if req.Body != nil && req.Body != http.NoBody {
			_ = rc.SetReadDeadline(now.Add(s.cfg.ReadTimeout))
			req.Body = &liftDeadlineBody{ReadCloser: req.Body, rc: rc}
		}
		// Errors mean the writer has no connection (as in tests): nothing
		// to bound.
		_ = rc.SetWriteDeadline(now.Add(s.cfg.ReadTimeout + s.cfg.WriteTimeout))
		return next(c)
	}
}

// extendDeadlines gives an authenticated upload UploadTimeout to be read
// and answered.
func (s *Server) extendDeadlines(c echo.Context) {
	rc := http.NewResponseController(c.Response())
	t := time.Now().Add(s.cfg.UploadTimeout)
	if b, ok := c.Request().Body.(*liftDeadlineBody); !ok || !b.done {
		_ = rc.SetReadDeadline(t)
	}
	_ = rc.SetWriteDeadline(t.Add(s.cfg.WriteTimeout))
}

// liftDeadlineBody clears the connection's read deadline when the body
// has been read to its end.
type liftDeadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *liftDeadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// chunkDeadlineWriter sets a write deadline of d before each write, so a
// client that stops reading fails a streamed response after d instead of
// holding it (and its database connection) open.
type chunkDeadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
	d  time.Duration
}

func (w chunkDeadlineWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	return w.w.Write(p)
}

// exportRetryAfter is the Retry-After, in seconds, of an export refused
// because MaxExports are running.
const exportRetryAfter = 5

// acquireExport takes one of the MaxExports export slots, or fails with a
// 503 when all are taken. The caller must call the returned release.
func (s *Server) acquireExport() (release func(), err error) {
	select {
	case s.exports <- struct{}{}:
		return func() { <-s.exports }, nil
	default:
		e := newErr(http.StatusServiceUnavailable, CodeUnavailable, "",
			"%d exports are running, the most this server allows at once; retry later", cap(s.exports))
		e.retryAfter = exportRetryAfter
		return nil, e
	}
}
