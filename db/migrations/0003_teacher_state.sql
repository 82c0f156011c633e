-- 0003_teacher_state: the current teacher of each study, updated in place
-- by the learner role at least once a second while judgments arrive.
--
-- Contract (read by the API, query selection and the trainer):
--   status        'empty' | 'online' | 'fitted' (alignet.TeacherStatus)
--   version       newest teacher_versions.version this state descends from (0: none)
--   w, b          little-endian float32, p*d and p values (z = W·(x−mean)/std + b)
--   updated_at    when the learner stored this row; now() − updated_at is staleness
--   newest_accepted_at  API accept time of the newest judgment applied
--   judgments_seen      distinct judgment ids applied, each counted once
--   info          JSON of the rest of alignet.TeacherState (prequential
--                 windows, held-out evaluation, refit bookkeeping, skips)
CREATE TABLE teacher_state (
    study              text COLLATE "C" PRIMARY KEY REFERENCES studies (id) ON DELETE CASCADE,
    status             text NOT NULL CHECK (status IN ('empty', 'online', 'fitted')),
    version            bigint NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL,
    newest_accepted_at timestamptz,
    judgments_seen     bigint NOT NULL DEFAULT 0,
    task               text NOT NULL,
    d                  integer NOT NULL CHECK (d > 0),
    p                  integer NOT NULL CHECK (p > 0 AND p <= d),
    mean               double precision NOT NULL,
    std                double precision NOT NULL,
    tau                double precision NOT NULL,
    lambda             double precision NOT NULL,
    w                  bytea NOT NULL CHECK (length(w) = 4 * p * d),
    b                  bytea NOT NULL CHECK (length(b) = 4 * p),
    info               jsonb NOT NULL DEFAULT '{}',
    -- Set by POST .../teacher/refit; the learner owning the study starts a
    -- refit and clears it.
    refit_requested_at timestamptz
);
ALTER TABLE teacher_state ALTER COLUMN w SET STORAGE EXTERNAL;
-- Serves the "what changed since" polls of API replicas and the trainer.
CREATE INDEX teacher_state_updated_idx ON teacher_state (updated_at);
