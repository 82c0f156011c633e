-- 0009_worker_flags: per study and worker, the counts of answered queries
-- (trials, too-fast answers, attention checks passed and failed) and the
-- reasons the worker is flagged (alignet.FlagSettings.Reasons; empty: not
-- flagged). Recomputed from query_answers whenever an answer is bound or
-- unbound. flag_changed_at is when the reasons went from empty to
-- non-empty or back; learners poll it to exclude flagged workers.
CREATE TABLE worker_flags (
    study           text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    worker          text COLLATE "C" NOT NULL,
    trials          bigint NOT NULL DEFAULT 0,
    fast            bigint NOT NULL DEFAULT 0,
    checks_passed   bigint NOT NULL DEFAULT 0,
    checks_failed   bigint NOT NULL DEFAULT 0,
    reasons         text[] NOT NULL DEFAULT '{}',
    flagged_at      timestamptz,
    flag_changed_at timestamptz,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (study, worker)
);
CREATE INDEX worker_flags_changed_idx ON worker_flags (flag_changed_at) WHERE flag_changed_at IS NOT NULL;
