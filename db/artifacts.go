package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// ArtifactChunkSize is the size of the chunks new artifacts are stored in
// (4 MiB): large enough that a gigabyte is a few hundred rows, small
// enough that a ranged read fetches little more than it needs.
const ArtifactChunkSize = 4 << 20

// ArtifactWriter writes one artifact in chunks, each in its own short
// statement, so no transaction stays open while a producer computes; up to
// artifactWriters chunks are stored concurrently while the producer fills
// the next one. The
// artifact is invisible until the row that refers to it is inserted
// (InsertDataset, InsertStudentVersion, SetStudentInit), which completes
// it in the same transaction; one whose writer crashed stays incomplete
// and is deleted by DeleteOrphanArtifacts.
type ArtifactWriter struct {
	d     *DB
	ctx   context.Context
	id    int64
	kind  string
	buf   []byte
	seq   int32
	size  int64
	h     hash.Hash
	err   error
	done  bool
	start time.Time

	chunks chan artifactChunk
	free   chan []byte
	wg     sync.WaitGroup
	mu     sync.Mutex
	werr   error // first error of a chunk insert
}

// artifactChunk is one chunk on its way to the database.
type artifactChunk struct {
	seq  int32
	data []byte
}

// artifactWriters is the number of chunks an ArtifactWriter stores at once.
const artifactWriters = 2

// CreateArtifact starts an artifact of the given kind ("dataset",
// "student"). Writes use ctx.
func (d *DB) CreateArtifact(ctx context.Context, kind string) (*ArtifactWriter, error) {
	w := &ArtifactWriter{d: d, ctx: ctx, kind: kind, buf: make([]byte, 0, ArtifactChunkSize), h: sha256.New(), start: time.Now(),
		chunks: make(chan artifactChunk), free: make(chan []byte, artifactWriters+1)}
	err := d.pool.QueryRow(ctx, `INSERT INTO artifacts (kind, chunk_size) VALUES ($1, $2) RETURNING id`, kind, ArtifactChunkSize).Scan(&w.id)
	if err != nil {
		return nil, wrapErr("create artifact", err)
	}
	for range artifactWriters {
		w.wg.Go(w.store)
	}
	return w, nil
}

// store inserts chunks until the channel closes, recording the first
// error (later chunks are then dropped).
func (w *ArtifactWriter) store() {
	for c := range w.chunks {
		w.mu.Lock()
		failed := w.werr != nil
		w.mu.Unlock()
		if !failed {
			_, err := w.d.pool.Exec(w.ctx, `INSERT INTO artifact_chunks (artifact, seq, data) VALUES ($1, $2, $3)`, w.id, c.seq, c.data)
			if err != nil {
				w.mu.Lock()
				if w.werr == nil {
					w.werr = wrapErr(fmt.Sprintf("write chunk %d of artifact %d", c.seq, w.id), err)
				}
				w.mu.Unlock()
			}
		}
		select {
		case w.free <- c.data[:0]:
		default:
		}
	}
}

// failed returns the first chunk insert error.
func (w *ArtifactWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr
}

// Write appends p, storing each chunk as it fills.
func (w *ArtifactWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, errors.New("db: write to a closed artifact")
	}
	n := len(p)
	w.h.Write(p)
	for len(p) > 0 {
		k := min(len(p), ArtifactChunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == ArtifactChunkSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	w.size += int64(n)
	return n, nil
}

// flush hands the buffered chunk to the storing goroutines.
func (w *ArtifactWriter) flush() error {
	if err := w.failed(); err != nil {
		w.err = err
		return err
	}
	if len(w.buf) == 0 {
		return nil
	}
	select {
	case w.chunks <- artifactChunk{seq: w.seq, data: w.buf}:
	case <-w.ctx.Done():
		w.err = w.ctx.Err()
		return w.err
	}
	w.seq++
	select {
	case w.buf = <-w.free:
	default:
		w.buf = make([]byte, 0, ArtifactChunkSize)
	}
	return nil
}

// finish stops the storing goroutines and returns their first error.
func (w *ArtifactWriter) finish() error {
	if !w.done {
		w.done = true
		close(w.chunks)
		w.wg.Wait()
	}
	return w.failed()
}

// Close stores the last chunk and returns the artifact's description. The
// artifact is still incomplete: pass it to the insert that refers to it.
func (w *ArtifactWriter) Close() (alignet.Artifact, error) {
	if w.err != nil {
		_ = w.finish()
		return alignet.Artifact{}, w.err
	}
	if !w.done {
		err := w.flush()
		if ferr := w.finish(); err == nil {
			err = ferr
		}
		if err != nil {
			w.err = err
			return alignet.Artifact{}, err
		}
		w.d.observe("write_artifact", w.start)
	}
	return alignet.Artifact{ID: w.id, Kind: w.kind, Size: w.size, SHA256: hex.EncodeToString(w.h.Sum(nil)), CreatedAt: w.start}, nil
}

// Abort deletes the artifact and its chunks; a nil error means nothing of
// it is left. It is safe to call after Close, as long as nothing refers to
// the artifact yet.
func (w *ArtifactWriter) Abort(ctx context.Context) error {
	_ = w.finish()
	_, err := w.d.pool.Exec(ctx, `DELETE FROM artifacts WHERE id = $1 AND NOT complete`, w.id)
	return wrapErr(fmt.Sprintf("abort artifact %d", w.id), err)
}

// completeArtifact marks a written artifact complete inside tx, checking
// its size and digest against a.
func completeArtifact(ctx context.Context, tx pgx.Tx, a alignet.Artifact) error {
	tag, err := tx.Exec(ctx, `UPDATE artifacts SET complete = true, size = $2, sha256 = $3
		WHERE id = $1 AND NOT complete
		  AND $2 = coalesce((SELECT sum(length(data)) FROM artifact_chunks WHERE artifact = $1), 0)`, a.ID, a.Size, a.SHA256)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("artifact %d: %w: not an incomplete artifact of %d bytes", a.ID, alignet.ErrConflict, a.Size)
	}
	return nil
}

// GetArtifact returns a complete artifact's description. A missing or
// incomplete one yields an error wrapping alignet.ErrNotFound.
func (d *DB) GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error) {
	defer d.observe("get_artifact", time.Now())
	a := alignet.Artifact{ID: id}
	err := d.pool.QueryRow(ctx, `SELECT kind, size, sha256, created_at FROM artifacts WHERE id = $1 AND complete`, id).
		Scan(&a.Kind, &a.Size, &a.SHA256, &a.CreatedAt)
	if err != nil {
		return alignet.Artifact{}, wrapErr(fmt.Sprintf("artifact %d", id), err)
	}
	return a, nil
}

// ReadArtifact writes bytes [off, off+n) of a complete artifact to w, one
// chunk query at a time, so a slow reader holds no connection between
// chunks. The range must lie within the artifact. An artifact deleted
// meanwhile (retention) yields an error wrapping alignet.ErrNotFound.
func (d *DB) ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error {
	var chunk, size int64
	err := d.pool.QueryRow(ctx, `SELECT chunk_size, size FROM artifacts WHERE id = $1 AND complete`, id).Scan(&chunk, &size)
	if err != nil {
		return wrapErr(fmt.Sprintf("read artifact %d", id), err)
	}
	if off < 0 || n < 0 || off+n > size {
		return fmt.Errorf("db: read artifact %d: range [%d, %d) outside its %d bytes", id, off, off+n, size)
	}
	for n > 0 {
		seq := off / chunk
		skip := off - seq*chunk
		var data []byte
		start := time.Now()
		err := d.pool.QueryRow(ctx, `SELECT data FROM artifact_chunks WHERE artifact = $1 AND seq = $2`, id, seq).Scan(&data)
		d.observe("read_artifact_chunk", start)
		if err != nil {
			return wrapErr(fmt.Sprintf("read chunk %d of artifact %d", seq, id), err)
		}
		if skip >= int64(len(data)) {
			return fmt.Errorf("db: read artifact %d: chunk %d has %d bytes, want more than %d", id, seq, len(data), skip)
		}
		part := data[skip:min(int64(len(data)), skip+n)]
		if _, err := w.Write(part); err != nil {
			return err
		}
		off += int64(len(part))
		n -= int64(len(part))
	}
	return nil
}

// DeleteOrphanArtifacts deletes the artifacts nothing refers to: complete
// ones whose dataset, student or student version is gone, and incomplete
// ones (of crashed writers) older than grace. It returns how many it
// deleted.
func (d *DB) DeleteOrphanArtifacts(ctx context.Context, grace time.Duration) (int64, error) {
	defer d.observe("delete_orphan_artifacts", time.Now())
	tag, err := d.pool.Exec(ctx, `DELETE FROM artifacts a
		WHERE (NOT a.complete AND a.created_at < now() - make_interval(secs => $1))
		   OR (a.complete
		       AND NOT EXISTS (SELECT 1 FROM datasets x WHERE x.artifact = a.id)
		       AND NOT EXISTS (SELECT 1 FROM student_versions v WHERE v.artifact = a.id)
		       AND NOT EXISTS (SELECT 1 FROM students s WHERE s.init_artifact = a.id))`, grace.Seconds())
	if err != nil {
		return 0, wrapErr("delete orphan artifacts", err)
	}
	return tag.RowsAffected(), nil
}
