-- 0005_learner_progress: where each learner consumer group stands in the
-- judgments topic, and which judgment ids it has applied. Both are written
-- in the same transaction as the teacher_state rows they cover, so a
-- restarted learner resumes exactly: nothing applied twice, nothing lost
-- beyond the last second of online steps.
CREATE TABLE learner_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Applied judgment ids of a study as 64-bit hashes (FNV-1a of the id),
-- little-endian uint64s, appended in chunks.
CREATE TABLE learner_seen (
    study  text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    seq    bigint GENERATED ALWAYS AS IDENTITY,
    hashes bytea NOT NULL CHECK (length(hashes) % 8 = 0),
    PRIMARY KEY (study, seq)
);

-- Refits requested through the API (POST .../teacher/refit). The learner
-- that owns the study takes the request (deleting the row) and refits.
CREATE TABLE refit_requests (
    study        text COLLATE "C" PRIMARY KEY REFERENCES studies (id) ON DELETE CASCADE,
    requested_at timestamptz NOT NULL DEFAULT now()
);
