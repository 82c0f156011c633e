// Package api is alignet's HTTP API. Crowdsourcing pages post judgments to
// it, administrators define embedding spaces, studies and API keys, and
// training pipelines export the collected data.
//
// Accepted judgments are validated against an in-memory copy of the study's
// item pool, pseudonymised and published to the stream; the API answers 202
// only after the broker acknowledged them, so an accepted judgment is never
// lost.
//
// Every error response has the body
//
//	{"error":{"code":"invalid_field","message":"...","field":"[3].odd"}}
//
// where field is the JSON path of the offending value when one is to blame;
// elements of a batch are prefixed with their index. Status codes:
//
//   - 400 malformed JSON, wrong JSON types, unknown JSON fields, bad query
//     parameters (field names the member or parameter when known);
//   - 401 missing or invalid API key (with WWW-Authenticate: Bearer);
//   - 403 valid key without the route's scope;
//   - 404 unknown route, study, space or key;
//   - 409 an entity exists with a different definition;
//   - 413 body over the configured cap or batch over MaxBatch;
//   - 415 wrong Content-Type;
//   - 422 well-formed JSON with semantically invalid values (missing or
//     out-of-range fields, unknown or duplicate items, a choice that is not
//     among the items, fields of the other task, duplicate ids in a batch);
//   - 503 with Retry-After when Kafka or Postgres is unavailable.
//
// Authentication uses "Authorization: Bearer <key>". Keys are stored only as
// SHA-256 hashes. Lookups are cached for Config.KeyCacheTTL: a key revoked
// through this server stops working at once, a key revoked elsewhere within
// KeyCacheTTL. Scopes are "collect" (post judgments), "read" (read data,
// export, worker lookup) and "admin" (everything). GET /v1/openapi.json takes
// any valid key; /healthz, /readyz and /metrics take none (serve /metrics on
// an internal network only).
//
// The judgment hot path does no database query: study definitions and item
// pools are cached in memory, refreshed in the background once older than
// Config.PoolCacheTTL and at once after this server adds items. Items or
// studies added through another server become usable within PoolCacheTTL
// (an unknown item triggers at most one synchronous reload per second).
//
// The server is wired as
//
//	srv, err := api.New(cfg, store, producer) // *db.DB, *stream.Producer
//	err = srv.Run(ctx)
package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultListen is the default listen address.
	DefaultListen = ":8080"
	// DefaultMaxJudgmentBody is the default cap on small JSON bodies (2 MiB).
	DefaultMaxJudgmentBody = 2 << 20
	// DefaultMaxEmbeddingBody is the default cap on multipart uploads (2 GiB).
	DefaultMaxEmbeddingBody = 2 << 30
	// DefaultMaxEmbeddingJSONBody is the default cap on JSON embedding
	// uploads and item lists (512 MiB).
	DefaultMaxEmbeddingJSONBody = 512 << 20
	// DefaultMaxBatch is the default largest judgment batch.
	DefaultMaxBatch = 1000
	// DefaultMaxRTMillis is the default largest response time (ten minutes).
	DefaultMaxRTMillis = 600000
	// DefaultShutdownTimeout is the default drain time on shutdown.
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultPoolCacheTTL is the default lifetime of cached study pools.
	DefaultPoolCacheTTL = 5 * time.Second
	// DefaultKeyCacheTTL is the default lifetime of cached key lookups.
	DefaultKeyCacheTTL = 30 * time.Second
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Listen is the TCP address Run listens on. Default ":8080".
	Listen string
	// AdminKey is the bootstrap admin key. It always has the admin scope,
	// is checked in memory and is stored (hashed) by Run so that it appears
	// in the key list; it cannot be revoked through the API. Empty disables
	// it; otherwise it must be at least 16 characters.
	AdminKey string
	// PseudonymKey is the HMAC-SHA256 key that turns raw worker ids into
	// pseudonyms. Required, at least 16 bytes.
	PseudonymKey []byte
	// MaxJudgmentBody caps judgment and other small JSON request bodies in
	// bytes. Default 2 MiB.
	MaxJudgmentBody int64
	// MaxEmbeddingBody caps multipart (.npy) embedding uploads in bytes.
	// Default 2 GiB.
	MaxEmbeddingBody int64
	// MaxEmbeddingJSONBody caps JSON embedding uploads and item lists in
	// bytes. Default 512 MiB.
	MaxEmbeddingJSONBody int64
	// MaxBatch is the largest number of judgments in one request. Default 1000.
	MaxBatch int
	// MaxRTMillis is the largest accepted response time in milliseconds.
	// Default 600000 (ten minutes); at most math.MaxInt32.
	MaxRTMillis int64
	// ShutdownTimeout bounds how long Run drains in-flight requests after
	// its context is cancelled. Default 15s.
	ShutdownTimeout time.Duration
	// PoolCacheTTL is how long a study definition and item pool are served
	// from memory before they are refreshed in the background. Default 5s.
	PoolCacheTTL time.Duration
	// KeyCacheTTL is how long API key lookups are cached. Default 30s.
	KeyCacheTTL time.Duration
	// Registerer receives the API's metrics. Default: a new private registry.
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics. Default: Registerer if it is also a
	// Gatherer, otherwise an empty set.
	Gatherer prometheus.Gatherer
	// AllowOrigins lists origins allowed to call the API from browsers
	// (CORS); "*" allows any. Default: none, so no CORS headers are sent.
	AllowOrigins []string
	// Logger receives the request log and errors. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxJudgmentBody <= 0 {
		c.MaxJudgmentBody = DefaultMaxJudgmentBody
	}
	if c.MaxEmbeddingBody <= 0 {
		c.MaxEmbeddingBody = DefaultMaxEmbeddingBody
	}
	if c.MaxEmbeddingJSONBody <= 0 {
		c.MaxEmbeddingJSONBody = DefaultMaxEmbeddingJSONBody
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxRTMillis <= 0 {
		c.MaxRTMillis = DefaultMaxRTMillis
	}
	c.MaxRTMillis = min(c.MaxRTMillis, math.MaxInt32)
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.PoolCacheTTL <= 0 {
		c.PoolCacheTTL = DefaultPoolCacheTTL
	}
	if c.KeyCacheTTL <= 0 {
		c.KeyCacheTTL = DefaultKeyCacheTTL
	}
	if c.Registerer == nil {
		r := prometheus.NewRegistry()
		c.Registerer = r
		if c.Gatherer == nil {
			c.Gatherer = r
		}
	}
	if c.Gatherer == nil {
		if g, ok := c.Registerer.(prometheus.Gatherer); ok {
			c.Gatherer = g
		} else {
			c.Gatherer = prometheus.Gatherers{}
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server is the HTTP API. Create it with New.
type Server struct {
	cfg     Config
	store   Store
	pub     Publisher
	log     *slog.Logger
	e       *echo.Echo
	metrics *metrics
	keys    *keyCache
	studies *studyCache
	routes  map[string]bool

	adminHash [sha256.Size]byte
	hasAdmin  bool
	sf        singleflight.Group
	bufs      sync.Pool
}

// New returns a Server that stores data in store and publishes judgments
// with pub. It registers the API's metrics on cfg.Registerer.
func New(cfg Config, store Store, pub Publisher) (*Server, error) {
	if store == nil || pub == nil {
		return nil, errors.New("api: store and publisher are required")
	}
	if len(cfg.PseudonymKey) < 16 {
		return nil, errors.New("api: pseudonym key must be at least 16 bytes")
	}
	if cfg.AdminKey != "" && len(cfg.AdminKey) < 16 {
		return nil, errors.New("api: admin key must be at least 16 characters")
	}
	cfg.setDefaults()
	cfg.PseudonymKey = append([]byte(nil), cfg.PseudonymKey...)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		store:   store,
		pub:     pub,
		log:     cfg.Logger,
		metrics: m,
		keys:    newKeyCache(cfg.KeyCacheTTL),
		studies: newStudyCache(),
	}
	if cfg.AdminKey != "" {
		s.adminHash = sha256.Sum256([]byte(cfg.AdminKey))
		s.hasAdmin = true
	}
	s.e = s.newEcho()
	return s, nil
}

// Handler returns the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.e }

// Run listens on Config.Listen and serves until ctx is cancelled; then it
// stops accepting connections, drains in-flight requests for up to
// Config.ShutdownTimeout and returns.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener, which it closes.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.ensureAdminKey(ctx)
	srv := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("api listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("drain http requests: %w", err)
	}
	s.log.Info("api stopped")
	return nil
}

// newEcho builds the router.
func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.observe, s.recoverPanic)
	if len(s.cfg.AllowOrigins) > 0 {
		e.Pre(corsMiddleware(s.cfg.AllowOrigins))
	}
	s.registerRoutes(e)
	s.routes = make(map[string]bool)
	for _, r := range e.Routes() {
		s.routes[r.Path] = true
	}
	return e
}

const (
	scopeCollect = "collect"
	scopeRead    = "read"
	scopeAdmin   = "admin"
	scopeAny     = ""
)

func (s *Server) registerRoutes(e *echo.Echo) {
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metricsHandler())

	v1 := e.Group("/v1")
	v1.GET("/openapi.json", s.openAPI, s.auth(scopeAny))

	v1.PUT("/spaces/:space", s.putSpace, s.auth(scopeAdmin))
	v1.GET("/spaces/:space", s.getSpace, s.auth(scopeRead))
	v1.POST("/spaces/:space/embeddings", s.postEmbeddings, s.auth(scopeAdmin))

	v1.POST("/studies", s.postStudy, s.auth(scopeAdmin))
	v1.GET("/studies", s.listStudies, s.auth(scopeRead))
	v1.GET("/studies/:study", s.getStudy, s.auth(scopeRead))
	v1.POST("/studies/:study/items", s.postItems, s.auth(scopeAdmin))
	v1.GET("/studies/:study/items", s.getItems, s.auth(scopeRead))
	v1.POST("/studies/:study/judgments", s.postJudgments, s.countRejected, s.auth(scopeCollect))
	v1.GET("/studies/:study/judgments", s.exportJudgments, s.auth(scopeRead))

	v1.POST("/keys", s.postKey, s.auth(scopeAdmin))
	v1.GET("/keys", s.listKeys, s.auth(scopeAdmin))
	v1.DELETE("/keys/:id", s.deleteKey, s.auth(scopeAdmin))

	v1.POST("/workers/lookup", s.lookupWorker, s.auth(scopeRead))
}

// observe records the request metric and log line and renders errors.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		d := time.Since(start)
		route := c.Path()
		if !s.routes[route] {
			route = "unmatched"
		}
		req := c.Request()
		status := c.Response().Status
		s.metrics.observe(route, req.Method, status, d)
		level := slog.LevelDebug
		if status >= 400 {
			level = slog.LevelInfo
		}
		if !s.log.Enabled(req.Context(), level) {
			return nil
		}
		attrs := []slog.Attr{
			slog.String("method", req.Method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Duration("duration", d),
			slog.Int64("bytes", c.Response().Size),
		}
		if err != nil {
			ae := toAPIError(err)
			attrs = append(attrs, slog.String("code", ae.Code), slog.String("error", ae.Error()))
		}
		s.log.LogAttrs(req.Context(), level, "http request", attrs...)
		return nil
	}
}

// recoverPanic turns a handler panic into a 500, except http.ErrAbortHandler
// which aborts a streamed response.
func (s *Server) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value
					panic(r)
				}
				s.log.Error("handler panic", "route", c.Path(), "panic", fmt.Sprint(r))
				err = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error"}
			}
		}()
		return next(c)
	}
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reports 200 only if the store and the publisher answer within 2s.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	ch := make(chan result, 2)
	go func() { ch <- result{"postgres", s.store.Ready(ctx)} }()
	go func() { ch <- result{"kafka", s.pub.Ping(ctx)} }()
	checks := map[string]string{}
	pending := map[string]bool{"postgres": true, "kafka": true}
	ok := true
	for len(pending) > 0 {
		select {
		case r := <-ch:
			delete(pending, r.name)
			if r.err != nil {
				ok = false
				checks[r.name] = r.err.Error()
				s.log.Warn("readiness check failed", "dependency", r.name, "err", r.err)
			} else {
				checks[r.name] = "ok"
			}
		case <-ctx.Done():
			for name := range pending {
				ok = false
				checks[name] = "no answer within 2s"
				s.log.Warn("readiness check timed out", "dependency", name)
			}
			pending = nil
		}
	}
	if !ok {
		c.Response().Header().Set("Retry-After", "1")
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ok", "checks": checks})
}
