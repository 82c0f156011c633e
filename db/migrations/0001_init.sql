-- 0001_init: spaces, embeddings, studies, study items, judgments, API keys.
-- Identifiers are text COLLATE "C": opaque ids compare and sort bytewise,
-- exactly like Go strings.

CREATE TABLE spaces (
    name       text COLLATE "C" PRIMARY KEY CHECK (name <> ''),
    dim        integer NOT NULL CHECK (dim > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- vector is little-endian float32, dim*4 bytes.
CREATE TABLE embeddings (
    space      text COLLATE "C" NOT NULL REFERENCES spaces (name) ON DELETE CASCADE,
    item       text COLLATE "C" NOT NULL CHECK (item <> ''),
    vector     bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space, item)
);
-- Float data does not compress: store out of line without trying pglz.
ALTER TABLE embeddings ALTER COLUMN vector SET STORAGE EXTERNAL;

CREATE TABLE studies (
    id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    task       text NOT NULL CHECK (task IN ('odd-one-out', 'anchor')),
    space      text COLLATE "C" NOT NULL REFERENCES spaces (name),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX studies_space_idx ON studies (space);

CREATE TABLE study_items (
    study text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    item  text COLLATE "C" NOT NULL CHECK (item <> ''),
    PRIMARY KEY (study, item)
);

-- No foreign key to studies: its per-row trigger was ~40% of the insert
-- cost. InsertJudgments instead checks the batch's studies once and holds a
-- FOR KEY SHARE lock on them until commit.
CREATE TABLE judgments (
    study       text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL CHECK (id <> ''),
    task        text NOT NULL,
    worker      text COLLATE "C" NOT NULL,
    item_a      text COLLATE "C" NOT NULL,
    item_b      text COLLATE "C" NOT NULL,
    item_c      text COLLATE "C" NOT NULL,
    odd         text COLLATE "C",
    rt_ms       integer NOT NULL,
    query_id    text COLLATE "C",
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study, id)
);
-- Serves export in (received_at, id) order within a study, with time bounds.
CREATE INDEX judgments_study_received_idx ON judgments (study, received_at, id);
CREATE INDEX judgments_worker_idx ON judgments (worker);

-- hash is sha256 of the key; the key itself is never stored.
CREATE TABLE api_keys (
    id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    name       text NOT NULL,
    scopes     text[] NOT NULL DEFAULT '{}',
    prefix     text NOT NULL,
    hash       bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
