-- 0016_datasets: the AligNet datasets the trainer generated for a study,
-- numbered from 1, each an .npz artifact in the official AligNet layout.
-- info is alignet.DatasetInfo as JSON (strategy mix, clustering, stage
-- timings).
CREATE TABLE datasets (
    study           text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    version         bigint NOT NULL CHECK (version > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    teacher_version bigint NOT NULL,
    seed            bigint NOT NULL,
    triplets        bigint NOT NULL,
    items           integer NOT NULL,
    space           text COLLATE "C" NOT NULL,
    input_hash      text NOT NULL,
    info            jsonb NOT NULL DEFAULT '{}',
    artifact        bigint NOT NULL REFERENCES artifacts (id),
    PRIMARY KEY (study, version)
);
