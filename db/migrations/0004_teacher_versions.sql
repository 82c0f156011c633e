-- 0004_teacher_versions: immutable snapshots of each study's teacher,
-- written at every refit, on demand and at the study's version interval.
-- The newest learner.keep_versions rows of a study are kept.
--
-- Contract: (study, version) identifies a version, numbered from 1 per
-- study; kind is 'refit' | 'online' | 'manual'; parent is the version it
-- descends from (0: none); offsets maps partition (as a JSON object key)
-- to the next Kafka offset not covered; w and b are as in teacher_state;
-- hyper and eval are alignet.TeacherHyper and alignet.TeacherEval as JSON.
CREATE TABLE teacher_versions (
    study          text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    version        bigint NOT NULL CHECK (version > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL CHECK (kind IN ('refit', 'online', 'manual')),
    parent         bigint NOT NULL DEFAULT 0,
    judgments_seen bigint NOT NULL,
    offsets        jsonb NOT NULL DEFAULT '{}',
    task           text NOT NULL,
    d              integer NOT NULL CHECK (d > 0),
    p              integer NOT NULL CHECK (p > 0 AND p <= d),
    mean           double precision NOT NULL,
    std            double precision NOT NULL,
    tau            double precision NOT NULL,
    lambda         double precision NOT NULL,
    w              bytea NOT NULL CHECK (length(w) = 4 * p * d),
    b              bytea NOT NULL CHECK (length(b) = 4 * p),
    hyper          jsonb NOT NULL DEFAULT '{}',
    eval           jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (study, version)
);
ALTER TABLE teacher_versions ALTER COLUMN w SET STORAGE EXTERNAL;
