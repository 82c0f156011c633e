package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alignet/alignet"
	"github.com/labstack/echo/v4"
)

// Study-bound keys ship inside public experiment pages, so anyone can
// copy one. Requests made with them are rate-limited in memory, per
// participant session and per client address, with token buckets; other
// keys are not limited. Each API replica limits on its own.

// RateLimit is a token bucket: Rate requests per second on average and at
// most Burst at once.
type RateLimit struct {
	// Rate is the sustained number of requests per second.
	Rate float64
	// Burst is the most requests allowed in a burst.
	Burst int
}

// String renders l as RATE:BURST, the form Set reads.
func (l *RateLimit) String() string {
	if l == nil {
		return ""
	}
	return strconv.FormatFloat(l.Rate, 'g', -1, 64) + ":" + strconv.Itoa(l.Burst)
}

// Set parses RATE:BURST, such as "5:60" (five requests a second, bursts of
// sixty), so a RateLimit can be a flag.
func (l *RateLimit) Set(s string) error {
	r, b, ok := strings.Cut(s, ":")
	rate, err1 := strconv.ParseFloat(r, 64)
	burst, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || !(rate > 0) || burst < 1 {
		return fmt.Errorf("want RATE:BURST with a positive rate and burst, such as 5:60")
	}
	l.Rate, l.Burst = rate, burst
	return nil
}

// Defaults of the limits on study-bound keys.
var (
	// DefaultSessionLimit bounds one participant session: a page answers
	// a trial every second or two, and resends a backlog after a reload.
	DefaultSessionLimit = RateLimit{Rate: 5, Burst: 60}
	// DefaultAddressLimit bounds one client address, which a lab's
	// classroom or a campus NAT may share among many participants.
	DefaultAddressLimit = RateLimit{Rate: 50, Burst: 300}
)

// Names of the limits, as error bodies report them in "limit".
const (
	limitSession = "session"
	limitAddress = "address"
)

// maxBuckets bounds the buckets of one limiter; past it, full (idle)
// buckets are dropped, and new clients are refused while none is.
const maxBuckets = 100000

// limiter is a set of token buckets by key.
type limiter struct {
	name    string
	rate    float64
	burst   float64
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(name string, l RateLimit, now func() time.Time) *limiter {
	return &limiter{name: name, rate: l.Rate, burst: float64(l.Burst), now: now, buckets: map[string]*bucket{}}
}

// take spends one token of key's bucket. It returns 0 when the request
// may go on, or how long until a token is available.
func (l *limiter) take(key string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.sweepLocked(now)
			if len(l.buckets) >= maxBuckets {
				return time.Second
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweepLocked drops the buckets that have refilled: they hold no state.
func (l *limiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// limit answers 429 when key's bucket is empty. what describes the key
// in the message.
func (l *limiter) limit(key, what string) error {
	wait := l.take(key)
	if wait == 0 {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	e := newErr(http.StatusTooManyRequests, CodeRateLimited, "",
		"more than %s requests per second (bursts of %d) from %s with a study-bound key; retry after %ds",
		strconv.FormatFloat(l.rate, 'f', -1, 64), int(l.burst), what, secs)
	e.Limit, e.retryAfter = l.name, secs
	return e
}

// checkRateLimit validates a configured limit.
func checkRateLimit(name string, l RateLimit) error {
	if !(l.Rate > 0) || math.IsInf(l.Rate, 0) || l.Burst < 1 {
		return fmt.Errorf("api: %s rate limit needs a rate above 0 and a burst of at least 1, got %g/s, burst %d", name, l.Rate, l.Burst)
	}
	return nil
}

// checkBoundKey lets a study-bound key through only to the collect routes
// of its study, and within the per-address limit and, on routes naming a
// session, the per-session limit.
func (s *Server) checkBoundKey(c echo.Context, k alignet.APIKey, scope string) error {
	if scope != alignet.ScopeCollect {
		return &Error{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: fmt.Sprintf("this key is bound to study %q and may only collect judgments in it", k.Study)}
	}
	if st := c.Param("study"); st != k.Study {
		return &Error{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: fmt.Sprintf("this key is bound to study %q, not %q", k.Study, truncate(st, alignet.MaxNameLen))}
	}
	if err := s.addressLimit.limit(c.RealIP(), "this address"); err != nil {
		return err
	}
	if sess := c.Param("session"); sess != "" {
		return s.limitParticipant(k.Study, "session:"+sess)
	}
	return nil
}

// limitParticipant applies the per-session limit to one participant of a
// study, named by their session ("session:ID") or raw worker id
// ("worker:ID"): a session has one worker, so both name the same person.
func (s *Server) limitParticipant(study, who string) error {
	return s.sessionLimit.limit(study+"\x00"+who, "this session")
}

// boundKey reports whether the request was made with a study-bound key.
func boundKey(c echo.Context) bool {
	k, ok := c.Get(ctxKeyPrincipal).(alignet.APIKey)
	return ok && k.Study != ""
}

// limitWorker applies the per-session limit to the participant named by
// the raw worker id of a request made with a study-bound key; requests
// with other keys are not limited.
func (s *Server) limitWorker(c echo.Context, study, raw string) error {
	if !boundKey(c) {
		return nil
	}
	return s.limitParticipant(study, "worker:"+raw)
}

// limitWorkers applies the per-session limit to each distinct worker of
// judgments posted with a study-bound key.
func (s *Server) limitWorkers(c echo.Context, study string, in []judgmentIn) error {
	if !boundKey(c) {
		return nil
	}
	seen := map[string]bool{}
	for _, j := range in {
		if j.Worker == nil || seen[*j.Worker] {
			continue
		}
		seen[*j.Worker] = true
		if err := s.limitParticipant(study, "worker:"+*j.Worker); err != nil {
			return err
		}
	}
	return nil
}
