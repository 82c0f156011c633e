-- 0018_student_versions: the trained heads of each student, numbered from
-- 1. A version worse than its predecessor on held-out human judgments is
-- stored with promoted = false and the reason. metrics and settings are
-- alignet.StudentMetrics and alignet.StudentSettings as JSON.
CREATE TABLE student_versions (
    study           text COLLATE "C" NOT NULL,
    student         text COLLATE "C" NOT NULL,
    version         bigint NOT NULL CHECK (version > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    dataset         bigint NOT NULL,
    teacher_version bigint NOT NULL,
    parent          bigint NOT NULL DEFAULT 0,
    promoted        boolean NOT NULL,
    reason          text NOT NULL DEFAULT '',
    d               integer NOT NULL,
    p               integer NOT NULL,
    settings        jsonb NOT NULL DEFAULT '{}',
    metrics         jsonb NOT NULL DEFAULT '{}',
    artifact        bigint NOT NULL REFERENCES artifacts (id),
    PRIMARY KEY (study, student, version),
    FOREIGN KEY (study, student) REFERENCES students (study, id) ON DELETE CASCADE
);
