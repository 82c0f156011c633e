-- 0008_queries: the query log. Every query the API served, with its kind,
-- score and teacher version, written in batches shortly after it is served
-- (the API's query log writer; the durability window is its interval).
-- Answers are in query_answers, so the log writer and the answer path
-- never write the same rows. As for judgments there is no foreign key to
-- studies (its per-row trigger is costly); writers check a batch's studies
-- once.
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
    PRIMARY KEY (study, id)
);
-- A worker's history (never the same triplet twice).
CREATE INDEX queries_worker_idx ON queries (study, worker);
