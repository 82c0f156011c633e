-- 0021_queries: the query log. Every query the API served, with its kind,
-- score and teacher version, and the judgment that answered it.
--
-- Rows are written in batches shortly after they are served (the API's
-- query log writer), or at once by the first answer, whichever comes
-- first; answered_by is set exactly once, in the same transaction that
-- checks the TTL (expires_at), so a query is answered by one judgment id
-- across all API replicas. rt_ms, fast and check_passed describe the
-- answer. As for judgments there is no foreign key to studies (its
-- per-row trigger is costly); writers check the studies of a batch once.
CREATE TABLE queries (
    study           text COLLATE "C" NOT NULL,
    id              text COLLATE "C" NOT NULL CHECK (id <> ''),
    session         text COLLATE "C" NOT NULL,
    worker          text COLLATE "C" NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('active', 'random', 'repeat', 'check')),
    item_a          text COLLATE "C" NOT NULL,
    item_b          text COLLATE "C" NOT NULL,
    item_c          text COLLATE "C" NOT NULL,
    expected        text COLLATE "C",
    score           double precision NOT NULL,
    teacher_version bigint NOT NULL,
    served_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    answered_by     text COLLATE "C",
    answered_at     timestamptz,
    rt_ms           integer,
    fast            boolean,
    check_passed    boolean,
    PRIMARY KEY (study, id)
);
-- A worker's history (never the same triplet twice) and flag counts.
CREATE INDEX queries_worker_idx ON queries (study, worker);
