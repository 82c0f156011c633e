-- 0012_query_answers: the binding of each answered query to the one
-- judgment id that answered it, written by the API in the transaction that
-- checks it before the judgment is published; the primary key makes a
-- query answerable once across all API replicas. The row repeats the
-- query as served (so answered queries need no query log row: the export
-- joins judgments to it), and describes the answer (rt_ms, fast,
-- check_passed) for the worker flags.
CREATE TABLE query_answers (
    study           text COLLATE "C" NOT NULL,
    query_id        text COLLATE "C" NOT NULL CHECK (query_id <> ''),
    judgment_id     text COLLATE "C" NOT NULL CHECK (judgment_id <> ''),
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
    answered_at     timestamptz NOT NULL,
    rt_ms           integer NOT NULL,
    fast            boolean NOT NULL,
    check_passed    boolean,
    PRIMARY KEY (study, query_id)
);
-- A worker's answers (flag counts, history).
CREATE INDEX query_answers_worker_idx ON query_answers (study, worker);
