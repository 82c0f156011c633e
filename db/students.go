package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

const studentColumns = `study, id, space, settings, created_at, current, coalesce(init_artifact, 0)`

func scanStudent(row pgx.Row, s *alignet.Student) error {
	var raw []byte
	if err := row.Scan(&s.Study, &s.ID, &s.Space, &raw, &s.CreatedAt, &s.Current, &s.InitArtifact); err != nil {
		return err
	}
	s.Settings = alignet.DefaultStudentSettings()
	if err := json.Unmarshal(raw, &s.Settings); err != nil {
		return fmt.Errorf("student %q of %q: settings: %w", s.ID, s.Study, err)
	}
	return nil
}

// CreateStudent registers s and returns it with created=true. A student
// that exists with the same space is returned unchanged with
// created=false; with another space the error wraps alignet.ErrConflict.
// A missing study or space yields an error wrapping alignet.ErrNotFound
// that names it.
func (d *DB) CreateStudent(ctx context.Context, s alignet.Student) (alignet.Student, bool, error) {
	settings, err := json.Marshal(s.Settings)
	if err != nil {
		return alignet.Student{}, false, fmt.Errorf("db: create student: %w", err)
	}
	var got alignet.Student
	created := false
	err = d.inTx(ctx, "create_student", func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1 FOR KEY SHARE`, s.Study).Scan(&one); err != nil {
			return fmt.Errorf("study %q: %w", s.Study, err)
		}
		if _, err := getSpace(ctx, tx, s.Space); err != nil {
			return fmt.Errorf("space %q: %w", s.Space, err)
		}
		err := scanStudent(tx.QueryRow(ctx, `INSERT INTO students (study, id, space, settings) VALUES ($1, $2, $3, $4)
			ON CONFLICT (study, id) DO NOTHING RETURNING `+studentColumns, s.Study, s.ID, s.Space, settings), &got)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return scanStudent(tx.QueryRow(ctx, `SELECT `+studentColumns+` FROM students WHERE study = $1 AND id = $2`, s.Study, s.ID), &got)
	})
	if err != nil {
		return alignet.Student{}, false, wrapErr(fmt.Sprintf("create student %q of %q", s.ID, s.Study), err)
	}
	if got.Space != s.Space {
		return alignet.Student{}, false, fmt.Errorf("db: create student %q of %q: %w: exists with space %q", s.ID, s.Study, alignet.ErrConflict, got.Space)
	}
	return got, created, nil
}

// GetStudent returns student id of study, or an error wrapping
// alignet.ErrNotFound.
func (d *DB) GetStudent(ctx context.Context, study, id string) (alignet.Student, error) {
	defer d.observe("get_student", time.Now())
	var s alignet.Student
	if err := scanStudent(d.pool.QueryRow(ctx, `SELECT `+studentColumns+` FROM students WHERE study = $1 AND id = $2`, study, id), &s); err != nil {
		return alignet.Student{}, wrapErr(fmt.Sprintf("student %q of %q", id, study), err)
	}
	return s, nil
}

// ListStudents returns the students of study sorted by id. A missing study
// yields an error wrapping alignet.ErrNotFound.
func (d *DB) ListStudents(ctx context.Context, study string) ([]alignet.Student, error) {
	defer d.observe("list_students", time.Now())
	what := fmt.Sprintf("students of %q", study)
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, study).Scan(&one); err != nil {
		return nil, wrapErr(what, err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+studentColumns+` FROM students WHERE study = $1 ORDER BY id`, study)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.Student, error) {
		var s alignet.Student
		err := scanStudent(r, &s)
		return s, err
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	if out == nil {
		out = []alignet.Student{}
	}
	return out, nil
}

// DeleteStudent deletes a student with its versions and their artifacts.
// A missing student yields an error wrapping alignet.ErrNotFound.
func (d *DB) DeleteStudent(ctx context.Context, study, id string) error {
	err := d.inTx(ctx, "delete_student", func(tx pgx.Tx) error {
		var init *int64
		if err := tx.QueryRow(ctx, `DELETE FROM students WHERE study = $1 AND id = $2 RETURNING init_artifact`, study, id).Scan(&init); err != nil {
			return err
		}
		// The versions went with the student (cascade); their artifacts
		// and θ₀'s are now referenced by nothing.
		_, err := tx.Exec(ctx, `DELETE FROM artifacts a WHERE a.complete AND (a.id = $1 OR (a.kind = 'student'
			AND NOT EXISTS (SELECT 1 FROM student_versions v WHERE v.artifact = a.id)
			AND NOT EXISTS (SELECT 1 FROM students s WHERE s.init_artifact = a.id)))`, init)
		return err
	})
	return wrapErr(fmt.Sprintf("delete student %q of %q", id, study), err)
}

// SetStudentInit completes the artifact a holding a student's initial
// head θ₀ and records it, unless the student has one already; it returns
// the artifact id in effect. A missing student yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) SetStudentInit(ctx context.Context, study, id string, a alignet.Artifact) (int64, error) {
	var cur int64
	err := d.inTx(ctx, "set_student_init", func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT coalesce(init_artifact, 0) FROM students WHERE study = $1 AND id = $2 FOR UPDATE`, study, id).Scan(&cur); err != nil {
			return err
		}
		if cur != 0 {
			return nil
		}
		if err := completeArtifact(ctx, tx, a); err != nil {
			return err
		}
		cur = a.ID
		_, err := tx.Exec(ctx, `UPDATE students SET init_artifact = $3 WHERE study = $1 AND id = $2`, study, id, a.ID)
		return err
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("set initial head of student %q of %q", id, study), err)
	}
	return cur, nil
}

// InsertStudentVersion stores v as the student's next version (Version and
// CreatedAt are assigned), completing its artifact (v.Artifact with size
// and digest as given in a) in the same transaction, makes it the current
// version when v.Promoted, and deletes versions beyond the newest keep
// (never the current one) with their artifacts. A missing student yields
// an error wrapping alignet.ErrNotFound.
func (d *DB) InsertStudentVersion(ctx context.Context, v alignet.StudentVersion, a alignet.Artifact, keep int) (alignet.StudentVersion, error) {
	settings, err := json.Marshal(v.Settings)
	if err != nil {
		return alignet.StudentVersion{}, fmt.Errorf("db: insert student version: %w", err)
	}
	metrics, err := json.Marshal(v.Metrics)
	if err != nil {
		return alignet.StudentVersion{}, fmt.Errorf("db: insert student version: %w", err)
	}
	v.Artifact = a.ID
	err = d.inTx(ctx, "insert_student_version", func(tx pgx.Tx) error {
		var current int64
		if err := tx.QueryRow(ctx, `SELECT current FROM students WHERE study = $1 AND id = $2 FOR UPDATE`, v.Study, v.Student).Scan(&current); err != nil {
			return fmt.Errorf("student %q: %w", v.Student, err)
		}
		if err := completeArtifact(ctx, tx, a); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO student_versions (study, student, version, dataset, teacher_version, parent, promoted, reason, d, p, settings, metrics, artifact)
			SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM student_versions WHERE study = $1 AND student = $2
			RETURNING version, created_at`, v.Study, v.Student, v.Dataset, v.TeacherVersion, v.Parent, v.Promoted, v.Reason,
			v.D, v.P, settings, metrics, v.Artifact).Scan(&v.Version, &v.CreatedAt); err != nil {
			return err
		}
		if v.Promoted {
			current = v.Version
			if _, err := tx.Exec(ctx, `UPDATE students SET current = $3 WHERE study = $1 AND id = $2`, v.Study, v.Student, current); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `WITH gone AS (
				DELETE FROM student_versions WHERE study = $1 AND student = $2 AND version <= $3 AND version <> $4 RETURNING artifact)
			DELETE FROM artifacts WHERE id IN (SELECT artifact FROM gone)`, v.Study, v.Student, v.Version-int64(max(keep, 1)), current)
		return err
	})
	if err != nil {
		return alignet.StudentVersion{}, wrapErr(fmt.Sprintf("insert version of student %q of %q", v.Student, v.Study), err)
	}
	return v, nil
}

const studentVersionColumns = `study, student, version, created_at, dataset, teacher_version, parent, promoted, reason, d, p, settings, metrics, artifact`

func scanStudentVersion(row pgx.Row, v *alignet.StudentVersion) error {
	var settings, metrics []byte
	if err := row.Scan(&v.Study, &v.Student, &v.Version, &v.CreatedAt, &v.Dataset, &v.TeacherVersion, &v.Parent,
		&v.Promoted, &v.Reason, &v.D, &v.P, &settings, &metrics, &v.Artifact); err != nil {
		return err
	}
	if err := json.Unmarshal(settings, &v.Settings); err != nil {
		return fmt.Errorf("version %d of student %q: settings: %w", v.Version, v.Student, err)
	}
	if err := json.Unmarshal(metrics, &v.Metrics); err != nil {
		return fmt.Errorf("version %d of student %q: metrics: %w", v.Version, v.Student, err)
	}
	return nil
}

// StudentVersions returns the stored versions of a student, newest first.
// A missing student yields an error wrapping alignet.ErrNotFound.
func (d *DB) StudentVersions(ctx context.Context, study, id string) ([]alignet.StudentVersion, error) {
	defer d.observe("student_versions", time.Now())
	what := fmt.Sprintf("versions of student %q of %q", id, study)
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM students WHERE study = $1 AND id = $2`, study, id).Scan(&one); err != nil {
		return nil, wrapErr(what, err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+studentVersionColumns+` FROM student_versions
		WHERE study = $1 AND student = $2 ORDER BY version DESC`, study, id)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.StudentVersion, error) {
		var v alignet.StudentVersion
		err := scanStudentVersion(r, &v)
		return v, err
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	if out == nil {
		out = []alignet.StudentVersion{}
	}
	return out, nil
}

// StudentVersion returns version n of a student; n = 0 means the current
// (promoted) version. A missing student or version, or n = 0 before any
// promotion, yields an error wrapping alignet.ErrNotFound.
func (d *DB) StudentVersion(ctx context.Context, study, id string, n int64) (alignet.StudentVersion, error) {
	defer d.observe("student_version", time.Now())
	var v alignet.StudentVersion
	err := scanStudentVersion(d.pool.QueryRow(ctx, `SELECT `+studentVersionColumns+` FROM student_versions v
		WHERE v.study = $1 AND v.student = $2
		  AND v.version = CASE WHEN $3 = 0 THEN (SELECT current FROM students s WHERE s.study = $1 AND s.id = $2) ELSE $3 END`,
		study, id, n), &v)
	if err != nil {
		return alignet.StudentVersion{}, wrapErr(fmt.Sprintf("version %d of student %q of %q", n, id, study), err)
	}
	return v, nil
}

// TryTrainerLock takes the trainer's lock on study, a Postgres session
// advisory lock held on a connection of its own, so that only one trainer
// process regenerates a study at a time; a process that dies releases it
// with its connection. ok is false when another session holds it. The
// returned unlock must be called when ok.
func (d *DB) TryTrainerLock(ctx context.Context, study string) (unlock func(), ok bool, err error) {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, false, wrapErr("trainer lock: acquire connection", err)
	}
	// The key covers the schema too: advisory locks are per database.
	var key int64
	if err := conn.QueryRow(ctx, `SELECT hashtextextended('alignet-trainer:' || current_schema() || ':' || $1, 0)`, study).Scan(&key); err != nil {
		conn.Release()
		return nil, false, wrapErr(fmt.Sprintf("trainer lock of %q", study), err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, wrapErr(fmt.Sprintf("trainer lock of %q", study), err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Conn().Close(uctx)
		}
		conn.Release()
	}, true, nil
}
