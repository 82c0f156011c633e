-- 0017_students: representation spaces whose affine heads the trainer
-- distils from a study's teacher. settings is alignet.StudentSettings as
-- JSON; current is the promoted version (0: none); init_artifact holds θ₀,
-- the head before its first training (NULL until then).
CREATE TABLE students (
    study         text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    id            text COLLATE "C" NOT NULL CHECK (id <> ''),
    space         text COLLATE "C" NOT NULL REFERENCES spaces (name),
    settings      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    current       bigint NOT NULL DEFAULT 0,
    init_artifact bigint REFERENCES artifacts (id),
    PRIMARY KEY (study, id)
);
