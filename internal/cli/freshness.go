package cli

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/alignet/alignet/client"
)

// freshnessReport is loadgen's measure of how fast accepted judgments
// reach the stored teacher. Freshness is measured for sampled requests
// from their 202 to the first polled teacher state whose
// newest_accepted_at is at or after the judgments' received_at
// (observed, so it includes up to one poll interval), and on the server's
// clock as that state's updated_at minus received_at. Lag is the
// judgments accepted during the run minus those the learner counted
// (judgments_seen grown since the start), at each poll while posting.
type freshnessReport struct {
	PollMillis      float64 `json:"poll_interval_ms"`
	Polls           int     `json:"polls"`
	PollErrors      int     `json:"poll_errors"`
	Samples         int     `json:"samples"`
	Resolved        int     `json:"resolved"`
	P50Millis       float64 `json:"freshness_p50_ms"`
	P99Millis       float64 `json:"freshness_p99_ms"`
	MaxMillis       float64 `json:"freshness_max_ms"`
	ServerP50Millis float64 `json:"server_freshness_p50_ms"`
	ServerP99Millis float64 `json:"server_freshness_p99_ms"`
	LagP50          int64   `json:"learner_lag_p50"`
	LagP99          int64   `json:"learner_lag_p99"`
	LagMax          int64   `json:"learner_lag_max"`
	FinalLag        int64   `json:"learner_lag_final"`
}

// teacherPoller reads a study's teacher; *client.Client is one.
type teacherPoller interface {
	Teacher(ctx context.Context, study string) (client.TeacherInfo, error)
}

// freshSample is one sampled request: when its 202 arrived and the accept
// time its judgments carry.
type freshSample struct {
	ack, receivedAt time.Time
}

// freshnessProbe polls a study's teacher and resolves sampled requests.
// Its logic (add, observe) works on given times, so it is tested without
// a clock.
type freshnessProbe struct {
	poller   teacherPoller
	study    string
	interval time.Duration
	accepted func() int64 // judgments accepted so far in this run

	mu               sync.Mutex
	seen0            int64
	pending          []freshSample
	samples          int
	observed, server []time.Duration
	lags             []int64
	lastLag          int64
	posting          bool
	polls, errs      int
}

func newFreshnessProbe(p teacherPoller, study string, interval time.Duration, accepted func() int64) *freshnessProbe {
	return &freshnessProbe{poller: p, study: study, interval: interval, accepted: accepted, posting: true}
}

// start reads the learner's count before the run.
func (p *freshnessProbe) start(ctx context.Context) error {
	t, err := p.poller.Teacher(ctx, p.study)
	if err != nil {
		return err
	}
	p.seen0 = t.JudgmentsSeen
	return nil
}

// add records a sampled request.
func (p *freshnessProbe) add(ack, receivedAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending = append(p.pending, freshSample{ack, receivedAt})
	p.samples++
}

// observe takes a teacher state polled at now, with accepted judgments
// accepted so far: it resolves the samples the state reflects and records
// the learner lag.
func (p *freshnessProbe) observe(now time.Time, t client.TeacherInfo, accepted int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls++
	p.lastLag = accepted - (t.JudgmentsSeen - p.seen0)
	if p.posting {
		p.lags = append(p.lags, p.lastLag)
	}
	if t.NewestAcceptedAt == nil || t.UpdatedAt == nil {
		return
	}
	newest, updated := *t.NewestAcceptedAt, *t.UpdatedAt
	keep := p.pending[:0]
	for _, s := range p.pending {
		if s.receivedAt.After(newest) || now.Before(s.ack) {
			keep = append(keep, s)
			continue
		}
		p.observed = append(p.observed, now.Sub(s.ack))
		p.server = append(p.server, updated.Sub(s.receivedAt))
	}
	p.pending = keep
}

// stopPosting marks the end of the posting phase: later polls no longer
// count towards the lag percentiles.
func (p *freshnessProbe) stopPosting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.posting = false
}

// done reports whether every sample is resolved and the learner has
// counted every accepted judgment.
func (p *freshnessProbe) done() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending) == 0 && p.lastLag <= 0
}

// poll observes the teacher once.
func (p *freshnessProbe) poll(ctx context.Context) {
	accepted := p.accepted()
	t, err := p.poller.Teacher(ctx, p.study)
	now := time.Now()
	if err != nil {
		p.mu.Lock()
		p.errs++
		p.mu.Unlock()
		return
	}
	p.observe(now, t, accepted)
}

// run polls every interval until ctx is done.
func (p *freshnessProbe) run(ctx context.Context) {
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.poll(ctx)
		}
	}
}

// drain polls, once posting has ended, until done or timeout.
func (p *freshnessProbe) drain(ctx context.Context, timeout time.Duration) {
	p.stopPosting()
	deadline := time.Now().Add(timeout)
	for !p.done() && time.Now().Before(deadline) && ctx.Err() == nil {
		p.poll(ctx)
		time.Sleep(p.interval)
	}
}

func (p *freshnessProbe) report() freshnessReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	obs, srv := slices.Sorted(slices.Values(p.observed)), slices.Sorted(slices.Values(p.server))
	lags := slices.Sorted(slices.Values(p.lags))
	r := freshnessReport{PollMillis: ms(p.interval), Polls: p.polls, PollErrors: p.errs, Samples: p.samples,
		Resolved: len(obs), P50Millis: pct(obs, 0.5), P99Millis: pct(obs, 0.99),
		ServerP50Millis: pct(srv, 0.5), ServerP99Millis: pct(srv, 0.99), FinalLag: p.lastLag}
	if len(obs) > 0 {
		r.MaxMillis = ms(obs[len(obs)-1])
	}
	if len(lags) > 0 {
		r.LagP50, r.LagP99, r.LagMax = lags[int(0.5*float64(len(lags)-1))], lags[int(0.99*float64(len(lags)-1))], lags[len(lags)-1]
	}
	return r
}
