package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// InsertDataset stores ds as the study's next dataset version (Version and
// CreatedAt are assigned) in one transaction with completing its artifact
// (ds.Artifact, ds.Size, ds.SHA256, as ArtifactWriter.Close returned
// them), so a dataset is visible only whole. It then deletes the study's
// datasets beyond the newest keep, with their artifacts. A missing study
// yields an error wrapping alignet.ErrNotFound.
func (d *DB) InsertDataset(ctx context.Context, ds alignet.Dataset, keep int) (alignet.Dataset, error) {
	info, err := json.Marshal(ds.Info)
	if err != nil {
		return alignet.Dataset{}, fmt.Errorf("db: insert dataset: %w", err)
	}
	err = d.inTx(ctx, "insert_dataset", func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1 FOR UPDATE`, ds.Study).Scan(&one); err != nil {
			return fmt.Errorf("study %q: %w", ds.Study, err)
		}
		if err := completeArtifact(ctx, tx, alignet.Artifact{ID: ds.Artifact, Size: ds.Size, SHA256: ds.SHA256}); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO datasets (study, version, teacher_version, seed, triplets, items, space, input_hash, info, artifact)
			SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9 FROM datasets WHERE study = $1
			RETURNING version, created_at`, ds.Study, ds.TeacherVersion, int64(ds.Seed), ds.Triplets, ds.Items, ds.Space,
			ds.InputHash, info, ds.Artifact).Scan(&ds.Version, &ds.CreatedAt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `WITH gone AS (
				DELETE FROM datasets WHERE study = $1 AND version <= $2 RETURNING artifact)
			DELETE FROM artifacts WHERE id IN (SELECT artifact FROM gone)`, ds.Study, ds.Version-int64(max(keep, 1)))
		return err
	})
	if err != nil {
		return alignet.Dataset{}, wrapErr(fmt.Sprintf("insert dataset of %q", ds.Study), err)
	}
	return ds, nil
}

const datasetColumns = `d.study, d.version, d.created_at, d.teacher_version, d.seed, d.triplets, d.items, d.space, d.input_hash, d.info, d.artifact, a.size, a.sha256`

func scanDataset(row pgx.Row, ds *alignet.Dataset) error {
	var info []byte
	var seed int64
	if err := row.Scan(&ds.Study, &ds.Version, &ds.CreatedAt, &ds.TeacherVersion, &seed, &ds.Triplets, &ds.Items,
		&ds.Space, &ds.InputHash, &info, &ds.Artifact, &ds.Size, &ds.SHA256); err != nil {
		return err
	}
	ds.Seed = uint64(seed)
	if err := json.Unmarshal(info, &ds.Info); err != nil {
		return fmt.Errorf("dataset %d of %q: info: %w", ds.Version, ds.Study, err)
	}
	return nil
}

// Datasets returns the stored datasets of study, newest first. A missing
// study yields an error wrapping alignet.ErrNotFound; one without datasets
// an empty slice.
func (d *DB) Datasets(ctx context.Context, study string) ([]alignet.Dataset, error) {
	defer d.observe("datasets", time.Now())
	what := fmt.Sprintf("datasets of %q", study)
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, study).Scan(&one); err != nil {
		return nil, wrapErr(what, err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+datasetColumns+` FROM datasets d JOIN artifacts a ON a.id = d.artifact
		WHERE d.study = $1 ORDER BY d.version DESC`, study)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.Dataset, error) {
		var ds alignet.Dataset
		err := scanDataset(r, &ds)
		return ds, err
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	if out == nil {
		out = []alignet.Dataset{}
	}
	return out, nil
}

// GetDataset returns dataset version of study; version 0 means the newest.
// A missing study or version yields an error wrapping alignet.ErrNotFound.
func (d *DB) GetDataset(ctx context.Context, study string, version int64) (alignet.Dataset, error) {
	defer d.observe("get_dataset", time.Now())
	var ds alignet.Dataset
	err := scanDataset(d.pool.QueryRow(ctx, `SELECT `+datasetColumns+` FROM datasets d JOIN artifacts a ON a.id = d.artifact
		WHERE d.study = $1 AND (d.version = $2 OR $2 = 0) ORDER BY d.version DESC LIMIT 1`, study, version), &ds)
	if err != nil {
		return alignet.Dataset{}, wrapErr(fmt.Sprintf("dataset %d of %q", version, study), err)
	}
	return ds, nil
}
