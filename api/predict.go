package api

import (
	"cmp"
	"context"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/labstack/echo/v4"
)

// Predictions and neighbours are computed from the study's TeacherSnapshot,
// in memory: no request reads the database once the study is cached.

// DefaultNeighbours is the number of neighbours returned without ?k.
const DefaultNeighbours = 10

// MaxNeighbours is the largest ?k of a neighbours request.
const MaxNeighbours = 1000

// unknownItemReload bounds the synchronous reloads of a study's teacher
// snapshot caused by requests naming items it does not hold.
const unknownItemReload = time.Second

// predictionBody is the prediction for one triplet.
type predictionBody struct {
	// Probs are, for odd-one-out, the probabilities that each of the three
	// items is the odd one out, in the order given; for anchor, the
	// probabilities that the second and the third item are closer to the
	// first (the head).
	Probs []float64 `json:"probs"`
	// Choice is the most probable answer: the odd item, or the item closer
	// to the head.
	Choice string `json:"choice"`
	// Entropy is the entropy of Probs in nats.
	Entropy float64 `json:"entropy"`
}

// teacherRefBody says which teacher answered.
type teacherRefBody struct {
	Study     string                `json:"study"`
	Task      alignet.Task          `json:"task"`
	Status    alignet.TeacherStatus `json:"status"`
	Version   int64                 `json:"version"`
	UpdatedAt *time.Time            `json:"updated_at"`
	Tau       float64               `json:"tau"`
}

func teacherRef(s *TeacherSnapshot) teacherRefBody {
	b := teacherRefBody{Study: s.Study, Task: s.Task, Status: s.Status, Version: s.Version, Tau: s.Tau}
	if !s.UpdatedAt.IsZero() {
		t := s.UpdatedAt
		b.UpdatedAt = &t
	}
	return b
}

// predict answers POST /v1/studies/{study}/predict.
func (s *Server) predict(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	if _, err := s.study(ctx, id); err != nil {
		return err
	}
	var req struct {
		Triplets [][]string `json:"triplets"`
	}
	if err := bindJSON(c, s.cfg.MaxJudgmentBody, &req); err != nil {
		return err
	}
	switch {
	case req.Triplets == nil:
		return missing("triplets")
	case len(req.Triplets) == 0:
		return invalid("triplets", "triplets must not be empty")
	case len(req.Triplets) > s.cfg.MaxPredictTriplets:
		return newErr(http.StatusRequestEntityTooLarge, CodeTooLarge, "triplets",
			"%d triplets exceed the %d one request may hold", len(req.Triplets), s.cfg.MaxPredictTriplets)
	}
	for i, tr := range req.Triplets {
		if err := checkTriplet(tr, "triplets["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
	}
	snap, err := s.teacherSnapshot(ctx, id, func(snap *TeacherSnapshot) *Error {
		for i, tr := range req.Triplets {
			for j, it := range tr {
				if err := itemErr(snap, it, "triplets["+strconv.Itoa(i)+"]["+strconv.Itoa(j)+"]"); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	out := make([]predictionBody, len(req.Triplets))
	probs := make([]float64, 3*len(req.Triplets))
	for i, tr := range req.Triplets {
		out[i] = predictTriplet(snap, tr, probs[3*i:3*i+3])
	}
	s.metrics.predicted.Add(float64(len(out)))
	return c.JSON(http.StatusOK, struct {
		teacherRefBody
		Predictions []predictionBody `json:"predictions"`
	}{teacherRef(snap), out})
}

// checkTriplet checks the shape of a triplet of item ids.
func checkTriplet(tr []string, field string) *Error {
	if len(tr) != 3 {
		return invalid(field, "a triplet holds exactly 3 item ids, got %d", len(tr))
	}
	for j, it := range tr {
		f := field + "[" + strconv.Itoa(j) + "]"
		if it == "" {
			return invalid(f, "item ids must not be empty")
		}
		if err := badText(f, it, alignet.MaxItemIDLen); err != nil {
			return err
		}
		if slices.Contains(tr[:j], it) {
			return invalid(f, "item %q appears twice in the triplet", truncate(it, alignet.MaxItemIDLen))
		}
	}
	return nil
}

// itemErr reports an item that the snapshot cannot score.
func itemErr(snap *TeacherSnapshot, item, field string) *Error {
	r, ok := snap.Index[item]
	if !ok {
		return newErr(http.StatusUnprocessableEntity, CodeUnknownItem, field,
			"item %q is not in the pool of study %q", truncate(item, alignet.MaxItemIDLen), snap.Study)
	}
	if !snap.Embedded[r] {
		return newErr(http.StatusUnprocessableEntity, CodeNoEmbedding, field,
			"item %q has no embedding in space %q yet; upload one to POST /v1/spaces/%s/embeddings",
			truncate(item, alignet.MaxItemIDLen), snap.Space, snap.Space)
	}
	return nil
}

// teacherSnapshot returns the study's snapshot once check accepts it. When
// check fails, the items may have been added or embedded a moment ago:
// the snapshot is reloaded once (at most once per second per study) and
// checked again.
func (s *Server) teacherSnapshot(ctx context.Context, study string, check func(*TeacherSnapshot) *Error) (*TeacherSnapshot, error) {
	snap, err := s.teachers.Get(ctx, study)
	if err != nil {
		return nil, storeErr(err, "study", "")
	}
	aerr := check(snap)
	if aerr == nil {
		return snap, nil
	}
	if fresh, err := s.teachers.Refresh(ctx, study, unknownItemReload); err == nil && fresh != snap {
		if aerr = check(fresh); aerr == nil {
			return fresh, nil
		}
	}
	return nil, aerr
}

// predictTriplet scores one checked triplet, writing its probabilities
// into p (3 values).
func predictTriplet(snap *TeacherSnapshot, tr []string, p []float64) predictionBody {
	t := learner.Triplet{I: snap.Index[tr[0]], J: snap.Index[tr[1]], K: snap.Index[tr[2]]}
	l := learner.Logits(snap.Z, snap.P, t)
	q := learner.TaskProbs(learner.Task(snap.Task), l, snap.Tau)
	var choices []string
	if snap.Task == alignet.TaskAnchor {
		// q holds p(J closer), p(K closer).
		p, choices = p[:2], tr[1:]
		p[0], p[1] = q[0], q[1]
	} else {
		// q holds p(K odd), p(J odd), p(I odd).
		choices = tr
		p[0], p[1], p[2] = q[2], q[1], q[0]
	}
	best, h := 0, 0.0
	for a, v := range p {
		if v > p[best] {
			best = a
		}
		if v > 0 {
			h -= v * math.Log(v)
		}
	}
	return predictionBody{Probs: p, Choice: choices[best], Entropy: h}
}

// neighbourBody is one neighbour of an item.
type neighbourBody struct {
	Item  string  `json:"item"`
	Score float64 `json:"score"`
}

// neighbours answers GET /v1/studies/{study}/items/{item}/neighbours: the
// k items of the study with the largest teacher similarity to the item,
// the dot product of their teacher representations.
func (s *Server) neighbours(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	item, err := pathParam(c, "item") // checkParams checked it
	if err != nil {
		return notFound("item", "item not found")
	}
	k := DefaultNeighbours
	if v := c.QueryParam("k"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxNeighbours {
			return badParam("k", "k must be an integer from 1 to %d", MaxNeighbours)
		}
		k = n
	}
	if _, err := s.study(ctx, id); err != nil {
		return err
	}
	snap, err := s.teacherSnapshot(ctx, id, func(snap *TeacherSnapshot) *Error {
		if _, ok := snap.Index[item]; !ok {
			return notFound("item", "item %q is not in the pool of study %q", truncate(item, alignet.MaxItemIDLen), id)
		}
		return itemErr(snap, item, "item")
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		teacherRefBody
		Item       string          `json:"item"`
		Neighbours []neighbourBody `json:"neighbours"`
	}{teacherRef(snap), item, nearest(snap, item, k)})
}

// nearest returns the k embedded items other than item with the largest
// dot product with it in teacher space, best first (ties by item id).
func nearest(snap *TeacherSnapshot, item string, k int) []neighbourBody {
	q, _ := snap.Row(item)
	self := snap.Index[item]
	better := func(a, b neighbourBody) bool {
		return a.Score > b.Score || a.Score == b.Score && a.Item < b.Item
	}
	// top is a min-heap of the best k so far: top[0] is the worst of them.
	top := make([]neighbourBody, 0, min(k, len(snap.Items)))
	down := func(i int) {
		for {
			m, l, r := i, 2*i+1, 2*i+2
			if l < len(top) && better(top[m], top[l]) {
				m = l
			}
			if r < len(top) && better(top[m], top[r]) {
				m = r
			}
			if m == i {
				return
			}
			top[i], top[m] = top[m], top[i]
			i = m
		}
	}
	for r, it := range snap.Items {
		if int32(r) == self || !snap.Embedded[r] {
			continue
		}
		z := snap.Z[r*snap.P : (r+1)*snap.P]
		var dot float64
		for a, v := range q {
			dot += float64(v) * float64(z[a])
		}
		nb := neighbourBody{Item: it, Score: dot}
		switch {
		case len(top) < k:
			top = append(top, nb)
			for i := len(top) - 1; i > 0; {
				p := (i - 1) / 2
				if !better(top[p], top[i]) {
					break
				}
				top[i], top[p] = top[p], top[i]
				i = p
			}
		case better(nb, top[0]):
			top[0] = nb
			down(0)
		}
	}
	slices.SortFunc(top, func(a, b neighbourBody) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.Item, b.Item))
	})
	return top
}
