-- 0023_drift_snapshots: what the drift monitor computed for each study at
-- each interval (alignet.DriftSnapshot as JSON, without its per-minute
-- counts, reliability bins and worker list), for drawing signals over
-- time; detail holds those for the newest row of a study only (NULL on
-- older rows). Rows older than the monitor's retention are deleted.
CREATE TABLE drift_snapshots (
    study    text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    taken_at timestamptz NOT NULL,
    snapshot jsonb NOT NULL,
    detail   jsonb,
    PRIMARY KEY (study, taken_at)
);
