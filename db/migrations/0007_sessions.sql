-- 0007_sessions: participant sessions opened by POST /v1/studies/{study}/sessions.
--
-- worker is the pseudonym of the platform worker id (never the raw id);
-- external is the platform's id of the visit (Prolific SESSION_ID, MTurk
-- assignmentId); params are the platform parameters without raw worker
-- ids. A worker has at most one open session (completed_at IS NULL) per
-- study.
CREATE TABLE sessions (
    study        text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    id           text COLLATE "C" NOT NULL CHECK (id <> ''),
    worker       text COLLATE "C" NOT NULL CHECK (worker <> ''),
    platform     text NOT NULL CHECK (platform IN ('prolific', 'mturk', 'generic')),
    external     text COLLATE "C",
    params       jsonb NOT NULL DEFAULT '{}',
    trials       integer NOT NULL CHECK (trials > 0),
    created_at   timestamptz NOT NULL,
    completed_at timestamptz,
    PRIMARY KEY (study, id)
);
CREATE UNIQUE INDEX sessions_open_idx ON sessions (study, worker) WHERE completed_at IS NULL;
CREATE INDEX sessions_external_idx ON sessions (study, worker, external) WHERE external IS NOT NULL;
