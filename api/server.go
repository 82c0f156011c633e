// Package api is alignet's HTTP API. Crowdsourcing pages post judgments to
// it, administrators define embedding spaces, studies and API keys, and
// training pipelines export the collected data.
//
// Accepted judgments are validated against an in-memory copy of the study's
// item pool and against alignet.Judgment.Validate, pseudonymised and
// published to the stream; the API answers 202 only after the broker
// acknowledged them, so an accepted judgment is never lost.
//
// Every error response has the body
//
//	{"error":{"code":"invalid_field","message":"...","field":"[3].odd"}}
//
// where field is the JSON path of the offending value when one is to blame;
// elements of a batch are prefixed with their index. Status codes:
//
//   - 400 malformed JSON, wrong JSON types, unknown JSON fields, a body that
//     is not valid UTF-8 or holds an unpaired surrogate escape (the message
//     gives the byte offset), bad query parameters (field names the member
//     or parameter when known);
//   - 401 missing or invalid API key (with WWW-Authenticate: Bearer);
//   - 403 valid key without the route's scope;
//   - 404 unknown route, study, space or key;
//   - 408 a request body not received within Config.ReadTimeout;
//   - 409 an entity exists with a different definition; a judgment's
//     query was served to another worker (query_foreign) or answered by
//     another judgment id (query_answered); a study cannot serve queries
//     yet (not_ready: no items with embeddings, or no completion code for
//     a Prolific session);
//   - 410 a judgment's query expired unanswered (query_expired);
//   - 413 body over the configured cap, batch over MaxBatch, or a batch too
//     large for one stream message once encoded (split it; retrying the
//     same batch cannot succeed);
//   - 415 wrong Content-Type;
//   - 422 well-formed JSON with semantically invalid values (missing or
//     out-of-range fields, control characters in text, unknown or duplicate
//     items, a choice that is not among the items, fields of the other
//     task, duplicate ids in a batch);
//   - 503 with Retry-After when Kafka or Postgres is unavailable, or when
//     Config.MaxExports exports are already running.
//
// Authentication uses "Authorization: Bearer <key>". Keys are stored only as
// SHA-256 hashes. Lookups are cached for Config.KeyCacheTTL. A key revoked
// through this server stops working at once; Run polls the store every
// Config.RevocationPollInterval for keys revoked through other servers.
// Scopes are "collect" (post judgments, open participant sessions, get
// their next queries), "read" (read data, export, worker lookup and
// flags) and "admin" (everything). GET /v1/openapi.json takes any valid
// key; /healthz, /readyz and /metrics take none (serve /metrics on an
// internal network only, or set Config.OmitMetrics and serve it elsewhere).
//
// The judgment hot path does no database query: study definitions and item
// pools are cached in memory, refreshed in the background once older than
// Config.PoolCacheTTL and at once after this server adds items. Items or
// studies added through another server become usable within PoolCacheTTL
// (an unknown item triggers at most one synchronous reload per second).
//
// A Postgres outage does not stop collection: keys and studies seen before
// keep being served from the caches, stale if need be, and each is reloaded
// at most once per second until Postgres answers again; only a key or study
// never seen gets 503. /readyz follows: it answers 200 "ok" when Kafka and
// Postgres answer, 200 "degraded" when only Kafka does but the caches hold
// a key and a study (so collection goes on), and 503 otherwise.
//
// Query selection is served from memory too: each replica keeps one
// query engine per study (package query) holding the candidate pool, its
// scores under the current teacher (Deps.Teachers, rescored whenever it
// changes) and the loaded sessions; served queries reach Postgres through
// a batched query log (Config.QueryLogInterval bounds what a crash
// loses). What must hold across replicas is decided in Postgres: a
// judgment answering a query is bound to it in a transaction before it is
// published, so a query is answered once, by its own worker, within its
// TTL. Requests of one session should reach one replica (session
// affinity, such as hashing the path's session id): another replica takes
// the session over from Postgres, and the worker's never-twice rule and
// the budget then hold up to the queries served in the last log interval.
//
// Slow clients are bounded: Run holds at most Config.MaxConns connections;
// a request body must arrive within Config.ReadTimeout, with or without a
// key; each chunk of an export must be taken within Config.WriteTimeout;
// and at most Config.MaxExports exports hold a database connection at once.
//
// The /teacher routes show what the learner role stores in Postgres: a
// study's current teacher state, its versions and, as the .npz file of
// alignet fit --out, its parameters. Predictions and neighbours are served
// from a TeacherCache, an in-memory copy of every cached study's teacher
// representations that Serve keeps current by polling cheap stamps every
// Config.TeacherPollInterval; before the learner stored anything, the raw
// embeddings are the teacher.
//
// The server is wired as
//
//	srv, err := api.New(cfg, api.StoreDeps(database, producer)) // *db.DB, *stream.Producer
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
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/ttlcache"
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
	// DefaultRevocationPollInterval is how often revocations made through
	// other servers are picked up by default.
	DefaultRevocationPollInterval = time.Second
	// DefaultMaxConns is the default cap on open client connections.
	DefaultMaxConns = 1024
	// DefaultReadTimeout is the default time allowed to send a request body.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout is the default time allowed to take each chunk of
	// a response.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultUploadTimeout is the default time allowed for an embedding
	// upload or item list, from reading it to answering.
	DefaultUploadTimeout = time.Hour
	// DefaultMaxExports is the default number of exports that may run at
	// once, each holding one database connection.
	DefaultMaxExports = 4
	// DefaultQueryLogInterval is how often served queries are written to
	// the query log by default: the durability window of the log.
	DefaultQueryLogInterval = 100 * time.Millisecond
	// DefaultQueryLogBatch is the default largest query log write.
	DefaultQueryLogBatch = 1000
	// DefaultQueryLogMaxPending is the default number of served queries
	// kept in memory while the query log cannot be written.
	DefaultQueryLogMaxPending = 200000
	// DefaultMaxPredictTriplets is the default largest predict request.
	DefaultMaxPredictTriplets = 10000
	// DefaultMaxImageBody is the default cap on uploaded item images
	// (5 MiB).
	DefaultMaxImageBody = 5 << 20
	// DefaultDisplayCacheTTL is the default lifetime of the cached display
	// data of a study's items.
	DefaultDisplayCacheTTL = 30 * time.Second
)

// reloadInterval is the least time between two reloads of one study or key
// after a failed one, or of one study for unknown items.
const reloadInterval = time.Second

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
	// RevocationPollInterval is how often Run asks the key store for keys
	// revoked through other servers and drops them from the key cache.
	// Default 1s.
	RevocationPollInterval time.Duration
	// MaxConns caps the client connections Run holds open at once; further
	// connections wait in the listen backlog. Default 1024.
	MaxConns int
	// ReadTimeout bounds the time a client takes to send a request body,
	// from the end of its headers, whether or not it is authenticated.
	// Embedding uploads and item lists get UploadTimeout once
	// authenticated. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing each chunk of an export to the client;
	// any other response must be complete within ReadTimeout+WriteTimeout
	// of the end of the request headers. Default 30s.
	WriteTimeout time.Duration
	// UploadTimeout bounds an authenticated embedding upload or item list,
	// from the end of the request headers to the response. Default 1h.
	UploadTimeout time.Duration
	// MaxExports is the number of exports that may run at once; each holds
	// one database connection, so the rest of the pool stays free for the
	// persister. Further exports get 503 with Retry-After. Default 4.
	MaxExports int
	// MaxNext is the largest n of GET .../next. Default 100.
	MaxNext int
	// QueryLogInterval is how often served queries are written to the
	// query log, which bounds what a crash loses. Default 100ms.
	QueryLogInterval time.Duration
	// QueryLogBatch is the most queries one query log write holds.
	// Default 1000.
	QueryLogBatch int
	// QueryLogMaxPending is how many served queries are kept in memory
	// while the query log cannot be written; beyond it they are dropped
	// (and counted). Default 200000.
	QueryLogMaxPending int
	// TeacherPollInterval is how often the teacher cache behind predict
	// and neighbours asks Postgres whether a cached study's teacher, items
	// or embeddings changed. Default 500ms.
	TeacherPollInterval time.Duration
	// MaxPredictTriplets is the largest number of triplets one predict
	// request may hold. Default 10,000.
	MaxPredictTriplets int
	// MaxImageBody caps uploaded item images in bytes. Default 5 MiB.
	MaxImageBody int64
	// DisplayCacheTTL is how long the display data of a study's items are
	// served from memory before they are refreshed in the background;
	// writes through this server are seen at once. Default 30s.
	DisplayCacheTTL time.Duration
	// SessionLimit is the rate limit of one participant session using a
	// study-bound key. Default DefaultSessionLimit.
	SessionLimit RateLimit
	// AddressLimit is the rate limit of one client address using
	// study-bound keys. Default DefaultAddressLimit.
	AddressLimit RateLimit
	// TrustForwardedFor takes the client address of AddressLimit from the
	// X-Forwarded-For header set by a reverse proxy on a private or
	// loopback address. Default false: the connection's address, which
	// clients cannot forge.
	TrustForwardedFor bool
	// Registerer receives the API's metrics. Default: a new private registry.
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics. Default: Registerer if it is also a
	// Gatherer, otherwise an empty set.
	Gatherer prometheus.Gatherer
	// OmitMetrics leaves /metrics off this router, for a process that
	// serves its metrics on a separate, internal listener. Default false:
	// /metrics is served here.
	OmitMetrics bool
	// AllowOrigins lists the origins (scheme://host[:port]) allowed to call
	// the API from browsers (CORS); "*" allows any. Default: none, so no
	// CORS headers are sent.
	AllowOrigins []string
	// Logger receives the request log and errors. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of the caches and of judgments' received_at.
	// Default time.Now.
	Now func() time.Time
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
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
	if c.RevocationPollInterval <= 0 {
		c.RevocationPollInterval = DefaultRevocationPollInterval
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.UploadTimeout <= 0 {
		c.UploadTimeout = DefaultUploadTimeout
	}
	if c.MaxExports <= 0 {
		c.MaxExports = DefaultMaxExports
	}
	if c.MaxNext <= 0 {
		c.MaxNext = DefaultMaxNext
	}
	if c.QueryLogInterval <= 0 {
		c.QueryLogInterval = DefaultQueryLogInterval
	}
	if c.QueryLogBatch <= 0 {
		c.QueryLogBatch = DefaultQueryLogBatch
	}
	if c.QueryLogMaxPending <= 0 {
		c.QueryLogMaxPending = DefaultQueryLogMaxPending
	}
	if c.TeacherPollInterval <= 0 {
		c.TeacherPollInterval = DefaultTeacherPollInterval
	}
	if c.MaxPredictTriplets <= 0 {
		c.MaxPredictTriplets = DefaultMaxPredictTriplets
	}
	if c.MaxImageBody <= 0 {
		c.MaxImageBody = DefaultMaxImageBody
	}
	if c.DisplayCacheTTL <= 0 {
		c.DisplayCacheTTL = DefaultDisplayCacheTTL
	}
	if c.SessionLimit == (RateLimit{}) {
		c.SessionLimit = DefaultSessionLimit
	}
	if c.AddressLimit == (RateLimit{}) {
		c.AddressLimit = DefaultAddressLimit
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
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// checkOrigins reports the first entry of AllowOrigins that is neither "*"
// nor a bare http(s) origin, as browsers send it in the Origin header.
func checkOrigins(origins []string) error {
	for _, o := range origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("api: CORS origin %q must be \"*\" or scheme://host[:port] without a path", o)
		}
	}
	return nil
}

// Server is the HTTP API. Create it with New.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	e        *echo.Echo
	metrics  *metrics
	keys     *ttlcache.Cache[[sha256.Size]byte, keyEntry]
	studies  *ttlcache.Cache[string, *studyEntry]
	teachers *TeacherCache
	// displays holds the display data of each study's pool.
	displays *ttlcache.Cache[string, *displayEntry]
	// sessionLimit and addressLimit bound study-bound keys.
	sessionLimit, addressLimit *limiter
	// page is the built-in participant page and dashboard the built-in
	// dashboard.
	page, dashboard *staticPage
	exports         chan struct{} // one token per running export
	routes          map[string]bool
	bufs            bufPool
	sel             *selection
	qlog            *queryLog
	stopBG          context.CancelFunc // stops the query log and selection loops
	bgDone          sync.WaitGroup
	// unsubscribe ends query selection's subscription to the teacher
	// cache (a no-op with Deps.QueryTeachers).
	unsubscribe func()

	adminHash [sha256.Size]byte
	hasAdmin  bool
	// warmKeys and warmStudies are set once a key and a study were loaded,
	// so the caches can serve collection through a database outage.
	warmKeys, warmStudies atomic.Bool
	closeOnce             sync.Once
}

// New returns a Server that stores data in and reads it from deps and
// publishes judgments with deps.Publisher. It registers the API's metrics
// on cfg.Registerer.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := deps.check(); err != nil {
		return nil, err
	}
	if len(cfg.PseudonymKey) < 16 {
		return nil, errors.New("api: pseudonym key must be at least 16 bytes")
	}
	if cfg.AdminKey != "" && len(cfg.AdminKey) < 16 {
		return nil, errors.New("api: admin key must be at least 16 characters")
	}
	if err := checkOrigins(cfg.AllowOrigins); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := checkRateLimit("session", cfg.SessionLimit); err != nil {
		return nil, err
	}
	if err := checkRateLimit("address", cfg.AddressLimit); err != nil {
		return nil, err
	}
	cfg.PseudonymKey = append([]byte(nil), cfg.PseudonymKey...)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		deps:        deps,
		log:         cfg.Logger,
		metrics:     m,
		exports:     make(chan struct{}, cfg.MaxExports),
		unsubscribe: func() {},

		sessionLimit: newLimiter(limitSession, cfg.SessionLimit, cfg.Now),
		addressLimit: newLimiter(limitAddress, cfg.AddressLimit, cfg.Now),
	}
	if s.page, err = newStaticPage(runFS, "run", runAssets); err != nil {
		return nil, err
	}
	if s.dashboard, err = newStaticPage(dashboardFS, "dashboard", dashboardAssets); err != nil {
		return nil, err
	}
	if s.keys, err = s.newKeyCache(); err != nil {
		return nil, err
	}
	if s.studies, err = s.newStudyCache(); err != nil {
		return nil, err
	}
	if s.teachers, err = NewTeacherCache(TeacherCacheConfig{PollInterval: cfg.TeacherPollInterval,
		Registerer: cfg.Registerer, Logger: cfg.Logger, Now: cfg.Now}, deps.TeacherSource); err != nil {
		return nil, err
	}
	if s.displays, err = s.newDisplayCache(); err != nil {
		return nil, err
	}
	if cfg.AdminKey != "" {
		s.adminHash = sha256.Sum256([]byte(cfg.AdminKey))
		s.hasAdmin = true
	}
	teachers := deps.QueryTeachers
	if teachers == nil {
		ct := newCacheTeachers(s.teachers)
		s.unsubscribe = ct.cancel
		teachers = ct
	}
	s.sel = newSelection(s, teachers)
	s.qlog = newQueryLog(deps.Sessions, cfg.Logger, m, cfg.QueryLogInterval, cfg.QueryLogBatch, cfg.QueryLogMaxPending)
	// The query log and the selection loop run from New until the server
	// stops, so handlers served without Serve (tests) work alike.
	bg, stop := context.WithCancel(context.Background())
	s.stopBG = stop
	s.bgDone.Go(func() { s.qlog.run(bg) })
	s.bgDone.Go(func() { s.sel.run(bg) })
	s.e = s.newEcho()
	return s, nil
}

// Handler returns the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.e }

// Teachers returns the server's teacher cache, which Serve keeps current.
func (s *Server) Teachers() *TeacherCache { return s.teachers }

// Run listens on Config.Listen and serves until ctx is cancelled; then it
// stops accepting connections, drains in-flight requests for up to
// Config.ShutdownTimeout and returns. A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener, which it closes. It holds at most
// Config.MaxConns connections open, and polls for revocations and keeps the
// teacher cache current while it runs; when it returns, the caches stop
// refreshing.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.close()
	ln = netutil.LimitListener(ln, s.cfg.MaxConns)
	s.ensureAdminKey(ctx)
	srv := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(ctx)
	defer func() { stopBG(); bg.Wait() }()
	bg.Go(func() { s.pollRevocations(bgCtx) })
	bg.Go(func() { _ = s.teachers.Run(bgCtx) })

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

// close stops the caches' loads and the selection loop and writes the
// pending query log; the server must not be used afterwards.
func (s *Server) close() {
	s.closeOnce.Do(func() {
		s.unsubscribe()
		s.stopBG()
		s.bgDone.Wait()
		s.keys.Close()
		s.studies.Close()
		s.teachers.Close()
		s.displays.Close()
	})
}

// newEcho builds the router.
func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.IPExtractor = echo.ExtractIPDirect()
	if s.cfg.TrustForwardedFor {
		e.IPExtractor = echo.ExtractIPFromXFFHeader()
	}
	e.Pre(s.deadlines)
	if len(s.cfg.AllowOrigins) > 0 {
		e.Pre(corsMiddleware(s.cfg.AllowOrigins))
	}
	e.Use(s.observe, s.recoverPanic)
	s.registerRoutes(e)
	s.routes = make(map[string]bool)
	for _, r := range e.Routes() {
		s.routes[r.Path] = true
	}
	return e
}

// scopeAny is granted to every valid key.
const scopeAny = ""

func (s *Server) registerRoutes(e *echo.Echo) {
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if !s.cfg.OmitMetrics {
		e.GET("/metrics", s.metricsHandler())
	}

	v1 := e.Group("/v1")
	// Routes with an entity in their path reject ids that no entity can
	// have before they reach the store (checkParams).
	v1.GET("/openapi.json", s.openAPI, s.auth(scopeAny))

	v1.PUT("/spaces/:space", s.putSpace, s.auth(alignet.ScopeAdmin))
	v1.GET("/spaces/:space", s.getSpace, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/spaces/:space/embeddings", s.postEmbeddings, s.auth(alignet.ScopeAdmin), checkParams)

	v1.POST("/studies", s.postStudy, s.auth(alignet.ScopeAdmin))
	v1.GET("/studies", s.listStudies, s.auth(alignet.ScopeRead))
	v1.GET("/studies/:study", s.getStudy, s.auth(alignet.ScopeRead), checkParams)
	v1.PATCH("/studies/:study", s.patchStudy, s.auth(alignet.ScopeAdmin), checkParams)
	v1.POST("/studies/:study/items", s.postItems, s.auth(alignet.ScopeAdmin), checkParams)
	v1.GET("/studies/:study/items", s.getItems, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/studies/:study/judgments", s.postJudgments, s.countRejected, s.auth(alignet.ScopeCollect), checkParams)
	v1.GET("/studies/:study/judgments", s.exportJudgments, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/studies/:study/sessions", s.postSession, s.auth(alignet.ScopeCollect), checkParams)
	v1.GET("/studies/:study/sessions/:session", s.getSession, s.auth(alignet.ScopeCollect), checkParams)
	v1.GET("/studies/:study/sessions/:session/next", s.nextQueries, s.auth(alignet.ScopeCollect), checkParams)
	v1.GET("/studies/:study/workers", s.listWorkers, s.auth(alignet.ScopeRead), checkParams)

	v1.PUT("/studies/:study/pool", s.putPool, s.auth(alignet.ScopeAdmin), checkParams)
	v1.GET("/studies/:study/pool", s.getPool, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/spaces/:space/labels", s.postLabels, s.auth(alignet.ScopeAdmin), checkParams)
	v1.POST("/studies/:study/students", s.postStudent, s.auth(alignet.ScopeAdmin), checkParams)
	v1.GET("/studies/:study/students", s.listStudents, s.auth(alignet.ScopeRead), checkParams)
	// GET .../students/{student} also serves {student}.npz, the head.
	v1.GET("/studies/:study/students/:student", s.getStudent, s.auth(alignet.ScopeRead), checkParams)
	v1.DELETE("/studies/:study/students/:student", s.deleteStudent, s.auth(alignet.ScopeAdmin), checkParams)
	v1.GET("/studies/:study/students/:student/embeddings", s.studentEmbeddings, s.auth(alignet.ScopeRead), checkParams)
	v1.GET("/studies/:study/datasets", s.listDatasets, s.auth(alignet.ScopeRead), checkParams)
	v1.GET("/studies/:study/datasets/:file", s.getDataset, s.auth(alignet.ScopeRead), checkParams)

	v1.GET("/studies/:study/drift", s.getDrift, s.auth(alignet.ScopeRead), checkParams)

	v1.GET("/studies/:study/teacher", s.getTeacher, s.auth(alignet.ScopeRead), checkParams)
	v1.GET("/studies/:study/teacher.npz", s.getTeacherNPZ, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/studies/:study/teacher/refit", s.postRefit, s.auth(alignet.ScopeAdmin), checkParams)
	v1.GET("/studies/:study/teacher/versions", s.listTeacherVersions, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/studies/:study/teacher/versions", s.postTeacherVersion, s.auth(alignet.ScopeAdmin), checkParams)
	v1.GET("/studies/:study/teacher/versions/:version", s.getTeacherVersion, s.auth(alignet.ScopeRead), checkParams)
	v1.POST("/studies/:study/predict", s.predict, s.auth(alignet.ScopeRead), checkParams)
	v1.GET("/studies/:study/items/:item/neighbours", s.neighbours, s.auth(alignet.ScopeRead), checkParams)

	v1.POST("/keys", s.postKey, s.auth(alignet.ScopeAdmin))
	v1.GET("/keys", s.listKeys, s.auth(alignet.ScopeAdmin))
	v1.DELETE("/keys/:id", s.deleteKey, s.auth(alignet.ScopeAdmin), checkParams)

	v1.POST("/workers/lookup", s.lookupWorker, s.auth(alignet.ScopeRead))

	v1.POST("/items", s.postItemDisplays, s.auth(alignet.ScopeAdmin))
	v1.GET("/items/:item", s.getItem, s.auth(alignet.ScopeRead))
	v1.PUT("/items/:item/image", s.putItemImage, s.auth(alignet.ScopeAdmin))
	// Public: browsers load stimuli with <img>, which sends no key.
	v1.GET("/items/:item/image", s.getItemImage)

	// The built-in participant page (public HTML and assets; the page
	// calls the API with the study-bound key of its link).
	v1.GET("/studies/:study/page", s.getPageSettings, s.auth(alignet.ScopeCollect), checkParams)
	e.GET("/run/:study", s.runPageHTML, checkParams)
	e.GET("/run/assets/:file", s.runPageAsset)
	// The built-in dashboard (public HTML and assets; the page calls the
	// API with a read key the user enters).
	e.GET("/dashboard", s.dashboardHTML)
	e.GET("/dashboard/:study", s.dashboardHTML, checkParams)
	e.GET("/dashboard/assets/:file", s.dashboardAsset)
}

// checkParams answers 404 for a path naming a space or study by a string
// that is not a valid name, or a key or item by one that is not valid
// text: no such entity can exist, and the store need not be asked.
func checkParams(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		for _, name := range c.ParamNames() {
			v := c.Param(name)
			switch name {
			case "space", "study":
				if !alignet.ValidName(v) {
					return notFound("", "%s %q not found", name, truncate(v, alignet.MaxNameLen))
				}
			case "student":
				if !alignet.ValidName(strings.TrimSuffix(v, ".npz")) {
					return notFound("", "student %q not found", truncate(v, alignet.MaxNameLen))
				}
			case "id":
				if v == "" || alignet.CheckText(v, alignet.MaxIDLen) != "" {
					return notFound("", "key %q not found", truncate(v, alignet.MaxIDLen))
				}
			case "session":
				if v == "" || alignet.CheckText(v, alignet.MaxQueryIDLen) != "" {
					return notFound("", "session %q not found", truncate(v, alignet.MaxQueryIDLen))
				}
			case "item":
				v, err := pathParam(c, name)
				if err != nil || !alignet.ValidItemID(v) {
					return notFound("item", "item %q not found", truncate(v, alignet.MaxItemIDLen))
				}
			}
		}
		return next(c)
	}
}

// pathParam returns the path parameter name unescaped. Echo matches the
// raw (escaped) path when the request's path has escapes the default
// encoding would not produce, as %2F for a slash inside an item id, and
// then its parameters are escaped; otherwise they are not.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
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

// readyTimeout bounds each readiness check.
const readyTimeout = 2 * time.Second

// readyz reports whether this process can collect judgments. Kafka must
// answer within 2s: without it nothing can be accepted. Postgres may be
// down as long as the caches hold a key and a study loaded before: then
// collection goes on for known keys and studies, and the answer is 200
// with status "degraded". A process that never reached Postgres cannot
// authenticate anyone but the bootstrap admin and answers 503.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	probes := map[string]func(context.Context) error{
		"postgres": s.deps.Ready.Ready,
		"kafka":    s.deps.Publisher.Ping,
	}
	for name, comp := range s.deps.Components {
		probes[name] = comp.Ready
	}
	type result struct {
		name string
		err  error
	}
	ch := make(chan result, len(probes))
	for name, probe := range probes {
		go func() { ch <- result{name, probe(ctx)} }()
	}
	checks := map[string]string{}
	failed := map[string]bool{}
wait:
	for range probes {
		select {
		case r := <-ch:
			if r.err != nil {
				failed[r.name] = true
				checks[r.name] = r.err.Error()
				s.log.Warn("readiness check failed", "check", r.name, "err", r.err)
			} else {
				checks[r.name] = "ok"
			}
		case <-ctx.Done():
			for name := range probes {
				if _, ok := checks[name]; !ok {
					failed[name] = true
					checks[name] = "no answer within " + readyTimeout.String()
					s.log.Warn("readiness check timed out", "check", name)
				}
			}
			break wait
		}
	}
	warm := s.warmKeys.Load() && s.warmStudies.Load()
	degraded := false
	for name := range s.deps.Components {
		degraded = degraded || failed[name]
	}
	switch {
	case failed["kafka"] || failed["postgres"] && !warm:
		c.Response().Header().Set("Retry-After", "1")
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
	case failed["postgres"]:
		checks["cache"] = "serving known keys and studies from memory"
		degraded = true
	}
	if degraded {
		return c.JSON(http.StatusOK, map[string]any{"status": "degraded", "checks": checks})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ok", "checks": checks})
}
