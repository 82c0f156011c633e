package api

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/labstack/echo/v4"
)

// CSVHeader is the header row of CSV judgment exports.
const CSVHeader = "id,study,task,worker,item_a,item_b,item_c,odd,head,close,far,rt_ms,query_id,query_kind,received_at"

// CSVQueryColumns are the columns ?join=queries appends to CSVHeader: the
// session, score, teacher version and serving time of the query each
// judgment answers (empty for judgments without one).
const CSVQueryColumns = "query_session,query_score,query_teacher_version,query_served_at"

// queryJoin is the query of a judgment in JSON lines exports with
// ?join=queries.
type queryJoin struct {
	Session        string    `json:"session"`
	Kind           string    `json:"kind"`
	Score          float64   `json:"score"`
	TeacherVersion int64     `json:"teacher_version"`
	ServedAt       time.Time `json:"served_at"`
	ExpiresAt      time.Time `json:"expires_at"`
}

// joinedJudgment is a JSON lines export row with ?join=queries.
type joinedJudgment struct {
	alignet.Judgment
	Query *queryJoin `json:"query"`
}

// flushEvery is how many rows are written between flushes of an export.
const flushEvery = 500

// csvRecord renders a judgment as a CSV export row.
func csvRecord(j alignet.Judgment, rec []string) []string {
	rec = append(rec[:0], j.ID, j.Study, string(j.Task), j.Worker, j.Items[0], j.Items[1], j.Items[2])
	if j.Task == alignet.TaskAnchor {
		rec = append(rec, "", j.Items[0], j.Items[1], j.Items[2])
	} else {
		rec = append(rec, j.Odd, "", "", "")
	}
	return append(rec, strconv.FormatInt(int64(j.RTMillis), 10), j.QueryID, string(j.QueryKind),
		j.ReceivedAt.UTC().Format(time.RFC3339Nano))
}

// csvQuery appends the CSVQueryColumns of q (nil: empty) to rec.
func csvQuery(q *alignet.Query, rec []string) []string {
	if q == nil {
		return append(rec, "", "", "", "")
	}
	return append(rec, q.Session, strconv.FormatFloat(q.Score, 'g', -1, 64), strconv.FormatInt(q.TeacherVersion, 10),
		q.ServedAt.UTC().Format(time.RFC3339Nano))
}

func parseTimeParam(c echo.Context, name string) (time.Time, error) {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badParam(name, "%s must be an RFC 3339 time such as 2025-01-02T15:04:05Z", name)
	}
	return t, nil
}

// exportJudgments streams a study's judgments as CSV or JSON lines. At
// most MaxExports run at once.
func (s *Server) exportJudgments(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	format := c.QueryParam("format")
	if format == "" {
		format = "csv"
	}
	if format != "csv" && format != "jsonl" {
		return badParam("format", "format must be csv or jsonl")
	}
	join := false
	switch c.QueryParam("join") {
	case "":
	case "queries":
		join = true
	default:
		return badParam("join", "join must be queries")
	}
	since, err := parseTimeParam(c, "since")
	if err != nil {
		return err
	}
	until, err := parseTimeParam(c, "until")
	if err != nil {
		return err
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		return invalid("until", "until is before since")
	}
	worker := c.QueryParam("worker")
	if msg := alignet.CheckText(worker, alignet.MaxWorkerLen); msg != "" {
		return badParam("worker", "worker %s", msg)
	}
	f := alignet.JudgmentFilter{Study: id, Since: since, Until: until, Worker: worker}
	release, err := s.acquireExport()
	if err != nil {
		return err
	}
	defer release()

	res := c.Response()
	h := res.Header()
	if format == "csv" {
		h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
		h.Set(echo.HeaderContentDisposition, `attachment; filename="`+id+`.csv"`)
	} else {
		h.Set(echo.HeaderContentType, "application/x-ndjson")
	}
	h.Set("Cache-Control", "no-store")
	// Every chunk must be taken by the client within WriteTimeout, or the
	// export fails and frees its database connection.
	bw := bufio.NewWriterSize(chunkDeadlineWriter{w: res, rc: http.NewResponseController(res), d: s.cfg.WriteTimeout}, 64<<10)
	var cw *csv.Writer
	var enc *json.Encoder
	if format == "csv" {
		cw = csv.NewWriter(bw)
		header := CSVHeader
		if join {
			header += "," + CSVQueryColumns
		}
		_, _ = bw.WriteString(header + "\n")
	} else {
		enc = json.NewEncoder(bw)
	}
	started := false
	start := func() {
		if !started {
			res.WriteHeader(http.StatusOK)
			started = true
		}
	}
	rows := 0
	var rec []string
	row := func(j alignet.Judgment, q *alignet.Query) error {
		start()
		switch {
		case cw != nil:
			rec = csvRecord(j, rec)
			if join {
				rec = csvQuery(q, rec)
			}
			if err := cw.Write(rec); err != nil {
				return err
			}
		case join:
			jj := joinedJudgment{Judgment: j}
			if q != nil {
				jj.Query = &queryJoin{Session: q.Session, Kind: string(q.Kind), Score: q.Score,
					TeacherVersion: q.TeacherVersion, ServedAt: q.ServedAt, ExpiresAt: q.ExpiresAt}
			}
			if err := enc.Encode(jj); err != nil {
				return err
			}
		default:
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		rows++
		if rows%flushEvery == 0 {
			if cw != nil {
				cw.Flush()
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			res.Flush()
		}
		return nil
	}
	if join {
		err = s.deps.Judgments.ExportJudgmentQueries(ctx, f, row)
	} else {
		err = s.deps.Judgments.ExportJudgments(ctx, f, func(j alignet.Judgment) error { return row(j, nil) })
	}
	if err != nil {
		if !started {
			return storeErr(err, "study", "")
		}
		// Headers are sent: abort so the client sees a broken transfer
		// instead of a silently truncated export.
		s.log.Warn("export aborted", "study", id, "rows", rows, "err", err)
		panic(http.ErrAbortHandler)
	}
	start()
	if cw != nil {
		cw.Flush()
	}
	if err := bw.Flush(); err != nil {
		s.log.Warn("export write failed", "study", id, "err", err)
		panic(http.ErrAbortHandler)
	}
	res.Flush()
	s.log.Debug("export finished", "study", id, "rows", rows, "format", format)
	return nil
}
