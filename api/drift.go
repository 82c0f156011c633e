package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/alignet/alignet"
)

// DriftStore reads the drift monitor's snapshots; *db.DB implements it.
type DriftStore interface {
	// DriftSnapshots returns the newest limit snapshots of a study taken
	// at or after since, oldest first; the newest of the study keeps its
	// detail. A missing study is alignet.ErrNotFound.
	DriftSnapshots(ctx context.Context, study string, since time.Time, limit int) ([]alignet.DriftSnapshot, error)
}

// Limits of GET .../drift.
const (
	// DefaultDriftHistory is the default number of history snapshots (six
	// hours at the monitor's default interval).
	DefaultDriftHistory = 720
	// MaxDriftHistory is the largest limit.
	MaxDriftHistory = 20160
)

// driftBody is the answer of GET .../drift.
type driftBody struct {
	Study string `json:"study"`
	// Current is the newest snapshot, with its detail; null before the
	// monitor computed one.
	Current *alignet.DriftSnapshot `json:"current"`
	// History holds the snapshots from since on, oldest first, compact.
	History []alignet.DriftSnapshot `json:"history"`
}

// getDrift returns a study's current drift signals and their history.
func (s *Server) getDrift(c echo.Context) error {
	since, err := parseTimeParam(c, "since")
	if err != nil {
		return err
	}
	limit := DefaultDriftHistory
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxDriftHistory {
			return badParam("limit", "limit must be an integer between 1 and %d", MaxDriftHistory)
		}
		limit = n
	}
	ctx := c.Request().Context()
	st, err := s.study(ctx, c.Param("study"))
	if err != nil {
		return err
	}
	body := driftBody{Study: st.study.ID, History: []alignet.DriftSnapshot{}}
	if s.deps.Drift == nil {
		return c.JSON(http.StatusOK, body)
	}
	snaps, err := s.deps.Drift.DriftSnapshots(ctx, st.study.ID, since, limit)
	if err != nil {
		if errors.Is(err, alignet.ErrNotFound) {
			return notFound("", "study %q not found", st.study.ID)
		}
		return storeErr(err, "drift", "")
	}
	if n := len(snaps); n > 0 && snaps[n-1].PerMinute != nil {
		cur := snaps[n-1]
		body.Current = &cur
	}
	for _, sn := range snaps {
		body.History = append(body.History, sn.Compact())
	}
	return c.JSON(http.StatusOK, body)
}
