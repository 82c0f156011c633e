-- 0015_artifacts: blobs (dataset and student .npz files) stored in fixed
-- size chunks. An artifact becomes visible only once complete is set, in
-- the same transaction that inserts the row referring to it (a dataset or
-- a student version); incomplete ones are left-overs of crashed writers
-- and are deleted.
CREATE TABLE artifacts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL,
    chunk_size integer NOT NULL CHECK (chunk_size > 0),
    size       bigint NOT NULL DEFAULT 0,
    sha256     text NOT NULL DEFAULT '',
    complete   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_incomplete_idx ON artifacts (created_at) WHERE NOT complete;

-- Chunk seq covers bytes [seq*chunk_size, (seq+1)*chunk_size).
CREATE TABLE artifact_chunks (
    artifact bigint NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    seq      integer NOT NULL CHECK (seq >= 0),
    data     bytea NOT NULL,
    PRIMARY KEY (artifact, seq)
);
-- Compressed .npz data does not compress further.
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
