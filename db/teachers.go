package db

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// stateInfo is the JSON "info" column of teacher_state: the parts of
// alignet.TeacherState that have no column of their own.
type stateInfo struct {
	JudgmentsTrained   int64                 `json:"judgments_trained"`
	Hyper              alignet.TeacherHyper  `json:"hyper"`
	Prequential        []alignet.Prequential `json:"prequential,omitempty"`
	Eval               *alignet.TeacherEval  `json:"eval,omitempty"`
	LastRefitAt        *time.Time            `json:"last_refit_at,omitempty"`
	LastRefitJudgments int64                 `json:"last_refit_judgments"`
	Skipped            map[string]int64      `json:"skipped,omitempty"`
}

func encodeFloats(v []float32) []byte {
	b := make([]byte, 4*len(v))
	encodeVector(b, v)
	return b
}

func decodeFloats(raw []byte, n int) ([]float32, error) {
	v := make([]float32, n)
	if err := decodeVector(v, raw); err != nil {
		return nil, err
	}
	return v, nil
}

// paramArgs are the column values of params, in the order of paramColumns.
func paramArgs(p alignet.TeacherParams) []any {
	return []any{string(p.Task), p.D, p.P, p.Mean, p.Std, p.Tau, p.Lambda, encodeFloats(p.W), encodeFloats(p.B)}
}

const paramColumns = `task, d, p, mean, std, tau, lambda, w, b`

// scanParams returns the scan destinations of paramColumns and a function
// that decodes the raw W and b once the row is scanned.
func scanParams(p *alignet.TeacherParams) ([]any, func() error) {
	var w, b []byte
	dest := []any{&p.Task, &p.D, &p.P, &p.Mean, &p.Std, &p.Tau, &p.Lambda, &w, &b}
	return dest, func() error {
		var err error
		if p.W, err = decodeFloats(w, p.P*p.D); err != nil {
			return fmt.Errorf("w: %w", err)
		}
		if p.B, err = decodeFloats(b, p.P); err != nil {
			return fmt.Errorf("b: %w", err)
		}
		return nil
	}
}

// SaveLearnerProgress stores p in one transaction: it upserts the teacher
// states, appends the applied id hashes and sets the partition offsets.
// States of studies that no longer exist are an error wrapping
// alignet.ErrNotFound, and nothing is stored.
func (d *DB) SaveLearnerProgress(ctx context.Context, p alignet.LearnerProgress) error {
	for i := range p.States {
		if err := p.States[i].Params.Validate(); err != nil {
			return fmt.Errorf("db: save learner progress: study %q: %w", p.States[i].Study, err)
		}
	}
	err := d.inTx(ctx, "save_learner_progress", func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for i := range p.States {
			s := &p.States[i]
			info, err := json.Marshal(stateInfo{
				JudgmentsTrained: s.JudgmentsTrained, Hyper: s.Hyper, Prequential: s.Prequential,
				Eval: s.Eval, LastRefitAt: s.LastRefitAt, LastRefitJudgments: s.LastRefitJudgments, Skipped: s.Skipped,
			})
			if err != nil {
				return fmt.Errorf("encode state of %q: %w", s.Study, err)
			}
			var newest *time.Time
			if !s.NewestAcceptedAt.IsZero() {
				newest = &s.NewestAcceptedAt
			}
			args := append([]any{s.Study, string(s.Status), s.Version, s.UpdatedAt, newest, s.JudgmentsSeen, info}, paramArgs(s.Params)...)
			batch.Queue(`INSERT INTO teacher_state (study, status, version, updated_at, newest_accepted_at, judgments_seen, info, `+paramColumns+`)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
				ON CONFLICT (study) DO UPDATE SET status = excluded.status,
					version = greatest(teacher_state.version, excluded.version),
					updated_at = excluded.updated_at, newest_accepted_at = excluded.newest_accepted_at,
					judgments_seen = excluded.judgments_seen, info = excluded.info,
					task = excluded.task, d = excluded.d, p = excluded.p, mean = excluded.mean, std = excluded.std,
					tau = excluded.tau, lambda = excluded.lambda, w = excluded.w, b = excluded.b`, args...)
		}
		for study, hs := range p.Seen {
			if len(hs) == 0 {
				continue
			}
			b := make([]byte, 8*len(hs))
			for i, h := range hs {
				binary.LittleEndian.PutUint64(b[8*i:], h)
			}
			batch.Queue(`INSERT INTO learner_seen (study, hashes) VALUES ($1, $2)`, study, b)
		}
		for part, off := range p.Offsets {
			batch.Queue(`INSERT INTO learner_offsets (group_id, topic, partition, next_offset, updated_at)
				VALUES ($1, $2, $3, $4, now())
				ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()`,
				p.Group, p.Topic, part, off)
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	return wrapErr("save learner progress", err)
}

// LearnerOffsets returns the next offset of every partition the learner
// group has stored for topic.
func (d *DB) LearnerOffsets(ctx context.Context, group, topic string) (map[int32]int64, error) {
	defer d.observe("learner_offsets", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT partition, next_offset FROM learner_offsets WHERE group_id = $1 AND topic = $2`, group, topic)
	if err != nil {
		return nil, wrapErr("learner offsets", err)
	}
	out := map[int32]int64{}
	var part int32
	var off int64
	_, err = pgx.ForEachRow(rows, []any{&part, &off}, func() error {
		out[part] = off
		return nil
	})
	if err != nil {
		return nil, wrapErr("learner offsets", err)
	}
	return out, nil
}

// LearnerSeen returns the hashes of every judgment id applied to study, in
// the order they were stored.
func (d *DB) LearnerSeen(ctx context.Context, study string) ([]uint64, error) {
	defer d.observe("learner_seen", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT hashes FROM learner_seen WHERE study = $1 ORDER BY seq`, study)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("applied ids of %q", study), err)
	}
	var out []uint64
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&raw}, func() error {
		for i := 0; i+8 <= len(raw); i += 8 {
			out = append(out, binary.LittleEndian.Uint64(raw[i:]))
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("applied ids of %q", study), err)
	}
	return out, nil
}

const stateColumns = `study, status, version, updated_at, newest_accepted_at, judgments_seen, info, ` + paramColumns

func scanState(row pgx.Row, s *alignet.TeacherState) error {
	var newest *time.Time
	var info []byte
	pdest, decode := scanParams(&s.Params)
	dest := append([]any{&s.Study, &s.Status, &s.Version, &s.UpdatedAt, &newest, &s.JudgmentsSeen, &info}, pdest...)
	if err := row.Scan(dest...); err != nil {
		return err
	}
	if err := decodeStateInfo(s, newest, info); err != nil {
		return err
	}
	if err := decode(); err != nil {
		return fmt.Errorf("teacher state of %q: %w", s.Study, err)
	}
	return nil
}

// decodeStateInfo fills the parts of s that the newest_accepted_at and
// info columns hold.
func decodeStateInfo(s *alignet.TeacherState, newest *time.Time, info []byte) error {
	if newest != nil {
		s.NewestAcceptedAt = *newest
	}
	var si stateInfo
	if err := json.Unmarshal(info, &si); err != nil {
		return fmt.Errorf("teacher state of %q: info: %w", s.Study, err)
	}
	s.JudgmentsTrained, s.Hyper, s.Prequential, s.Eval = si.JudgmentsTrained, si.Hyper, si.Prequential, si.Eval
	s.LastRefitAt, s.LastRefitJudgments, s.Skipped = si.LastRefitAt, si.LastRefitJudgments, si.Skipped
	return nil
}

// TeacherState returns the current teacher of study. A study without one
// (no judgment applied yet) or a missing study yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) TeacherState(ctx context.Context, study string) (alignet.TeacherState, error) {
	defer d.observe("teacher_state", time.Now())
	var s alignet.TeacherState
	if err := scanState(d.pool.QueryRow(ctx, `SELECT `+stateColumns+` FROM teacher_state WHERE study = $1`, study), &s); err != nil {
		return alignet.TeacherState{}, wrapErr(fmt.Sprintf("teacher state of %q", study), err)
	}
	return s, nil
}

// TeacherStateMeta is TeacherState without W and b (Params.W and Params.B
// are nil), for readers that only show the state: it does not read the
// parameters, which are 4·P·D bytes.
func (d *DB) TeacherStateMeta(ctx context.Context, study string) (alignet.TeacherState, error) {
	defer d.observe("teacher_state_meta", time.Now())
	var s alignet.TeacherState
	var newest *time.Time
	var info []byte
	p := &s.Params
	err := d.pool.QueryRow(ctx, `SELECT study, status, version, updated_at, newest_accepted_at, judgments_seen, info,
			task, d, p, mean, std, tau, lambda FROM teacher_state WHERE study = $1`, study).
		Scan(&s.Study, &s.Status, &s.Version, &s.UpdatedAt, &newest, &s.JudgmentsSeen, &info,
			&p.Task, &p.D, &p.P, &p.Mean, &p.Std, &p.Tau, &p.Lambda)
	if err == nil {
		err = decodeStateInfo(&s, newest, info)
	}
	if err != nil {
		return alignet.TeacherState{}, wrapErr(fmt.Sprintf("teacher state of %q", study), err)
	}
	return s, nil
}

// StudyStamps returns the stamps of the given studies that exist (missing
// ones are absent from the map): one primary-key lookup per study, so a
// reader can poll them often and reload only what changed.
func (d *DB) StudyStamps(ctx context.Context, studies []string) (map[string]alignet.StudyStamp, error) {
	defer d.observe("study_stamps", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT s.id, s.items_rev + sp.embeddings_rev, t.updated_at, coalesce(t.version, 0)
		FROM studies s JOIN spaces sp ON sp.name = s.space LEFT JOIN teacher_state t ON t.study = s.id
		WHERE s.id = ANY($1::text[])`, studies)
	if err != nil {
		return nil, wrapErr("study stamps", err)
	}
	out := make(map[string]alignet.StudyStamp, len(studies))
	var id string
	var st alignet.StudyStamp
	var updated *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &st.Inputs, &updated, &st.TeacherVersion}, func() error {
		st.TeacherUpdatedAt = time.Time{}
		if updated != nil {
			st.TeacherUpdatedAt = *updated
		}
		out[id] = st
		return nil
	})
	if err != nil {
		return nil, wrapErr("study stamps", err)
	}
	return out, nil
}

// TeacherStatesSince returns the teacher states stored after since (all of
// them for the zero time), oldest update first. API replicas and the
// trainer poll it to refresh their copies.
func (d *DB) TeacherStatesSince(ctx context.Context, since time.Time) ([]alignet.TeacherState, error) {
	defer d.observe("teacher_states_since", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT `+stateColumns+` FROM teacher_state WHERE updated_at > $1 ORDER BY updated_at, study`, since)
	if err != nil {
		return nil, wrapErr("teacher states", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.TeacherState, error) {
		var s alignet.TeacherState
		err := scanState(r, &s)
		return s, err
	})
	if err != nil {
		return nil, wrapErr("teacher states", err)
	}
	return out, nil
}

// RequestRefit records that study should be refitted now. A missing study
// yields an error wrapping alignet.ErrNotFound.
func (d *DB) RequestRefit(ctx context.Context, study string) error {
	defer d.observe("request_refit", time.Now())
	_, err := d.pool.Exec(ctx, `INSERT INTO refit_requests (study) VALUES ($1)
		ON CONFLICT (study) DO UPDATE SET requested_at = now()`, study)
	return wrapErr(fmt.Sprintf("request refit of %q", study), err)
}

// TakeRefitRequests removes and returns the pending refit requests of the
// given studies.
func (d *DB) TakeRefitRequests(ctx context.Context, studies []string) ([]string, error) {
	defer d.observe("take_refit_requests", time.Now())
	rows, err := d.pool.Query(ctx, `DELETE FROM refit_requests WHERE study = ANY($1::text[]) RETURNING study`, studies)
	if err != nil {
		return nil, wrapErr("take refit requests", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrapErr("take refit requests", err)
	}
	return out, nil
}

// InsertTeacherVersion stores v as the study's next version (its Version
// and CreatedAt are assigned), points the study's teacher state at it, and
// deletes the study's versions beyond the newest keep. It returns the
// stored version.
func (d *DB) InsertTeacherVersion(ctx context.Context, v alignet.TeacherVersion, keep int) (alignet.TeacherVersion, error) {
	if err := v.Params.Validate(); err != nil {
		return alignet.TeacherVersion{}, fmt.Errorf("db: insert teacher version of %q: %w", v.Study, err)
	}
	offsets := make(map[string]int64, len(v.Offsets))
	for p, o := range v.Offsets {
		offsets[strconv.Itoa(int(p))] = o
	}
	hyper, err := json.Marshal(v.Hyper)
	if err != nil {
		return alignet.TeacherVersion{}, fmt.Errorf("db: insert teacher version: %w", err)
	}
	eval, err := json.Marshal(v.Eval)
	if err != nil {
		return alignet.TeacherVersion{}, fmt.Errorf("db: insert teacher version: %w", err)
	}
	err = d.inTx(ctx, "insert_teacher_version", func(tx pgx.Tx) error {
		// Lock the study so concurrent writers number versions in turn.
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1 FOR UPDATE`, v.Study).Scan(&one); err != nil {
			return fmt.Errorf("study %q: %w", v.Study, err)
		}
		args := append([]any{v.Study, v.Kind, v.Parent, v.JudgmentsSeen, offsets, hyper, eval}, paramArgs(v.Params)...)
		if err := tx.QueryRow(ctx, `INSERT INTO teacher_versions (study, version, kind, parent, judgments_seen, offsets, hyper, eval, `+paramColumns+`)
			SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16
			FROM teacher_versions WHERE study = $1
			RETURNING version, created_at`, args...).Scan(&v.Version, &v.CreatedAt); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE teacher_state SET version = $2 WHERE study = $1 AND version < $2`, v.Study, v.Version); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM teacher_versions WHERE study = $1 AND version <= $2`, v.Study, v.Version-int64(max(keep, 1)))
		return err
	})
	if err != nil {
		return alignet.TeacherVersion{}, wrapErr(fmt.Sprintf("insert teacher version of %q", v.Study), err)
	}
	return v, nil
}

const versionMetaColumns = `study, version, created_at, kind, parent, judgments_seen, offsets, hyper, eval`

func scanVersion(row pgx.Row, v *alignet.TeacherVersion, withParams bool) error {
	var offsets map[string]int64
	var hyper, eval []byte
	dest := []any{&v.Study, &v.Version, &v.CreatedAt, &v.Kind, &v.Parent, &v.JudgmentsSeen, &offsets, &hyper, &eval}
	var decode func() error
	if withParams {
		var pdest []any
		pdest, decode = scanParams(&v.Params)
		dest = append(dest, pdest...)
	} else {
		dest = append(dest, &v.Params.Task, &v.Params.D, &v.Params.P, &v.Params.Mean, &v.Params.Std, &v.Params.Tau, &v.Params.Lambda)
	}
	if err := row.Scan(dest...); err != nil {
		return err
	}
	v.Offsets = make(map[int32]int64, len(offsets))
	for k, o := range offsets {
		p, err := strconv.Atoi(k)
		if err != nil {
			return fmt.Errorf("version %d of %q: offsets key %q: %w", v.Version, v.Study, k, err)
		}
		v.Offsets[int32(p)] = o
	}
	if err := json.Unmarshal(hyper, &v.Hyper); err != nil {
		return fmt.Errorf("version %d of %q: hyper: %w", v.Version, v.Study, err)
	}
	if err := json.Unmarshal(eval, &v.Eval); err != nil {
		return fmt.Errorf("version %d of %q: eval: %w", v.Version, v.Study, err)
	}
	if decode != nil {
		if err := decode(); err != nil {
			return fmt.Errorf("version %d of %q: %w", v.Version, v.Study, err)
		}
	}
	return nil
}

// TeacherVersions returns the stored versions of study, newest first,
// without their W and b. A missing study yields an error wrapping
// alignet.ErrNotFound; a study without versions an empty slice.
func (d *DB) TeacherVersions(ctx context.Context, study string) ([]alignet.TeacherVersion, error) {
	defer d.observe("teacher_versions", time.Now())
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, study).Scan(&one); err != nil {
		return nil, wrapErr(fmt.Sprintf("teacher versions of %q", study), err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+versionMetaColumns+`, task, d, p, mean, std, tau, lambda
		FROM teacher_versions WHERE study = $1 ORDER BY version DESC`, study)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("teacher versions of %q", study), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.TeacherVersion, error) {
		var v alignet.TeacherVersion
		err := scanVersion(r, &v, false)
		return v, err
	})
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("teacher versions of %q", study), err)
	}
	if out == nil {
		out = []alignet.TeacherVersion{}
	}
	return out, nil
}

// TeacherVersion returns version n of study with its parameters; n = 0
// means the newest. A missing study or version yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) TeacherVersion(ctx context.Context, study string, n int64) (alignet.TeacherVersion, error) {
	defer d.observe("teacher_version", time.Now())
	var v alignet.TeacherVersion
	q := `SELECT ` + versionMetaColumns + `, ` + paramColumns + ` FROM teacher_versions WHERE study = $1 AND (version = $2 OR $2 = 0)
		ORDER BY version DESC LIMIT 1`
	if err := scanVersion(d.pool.QueryRow(ctx, q, study, n), &v, true); err != nil {
		return alignet.TeacherVersion{}, wrapErr(fmt.Sprintf("teacher version %d of %q", n, study), err)
	}
	return v, nil
}
