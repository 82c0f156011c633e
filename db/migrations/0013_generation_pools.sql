-- 0013_generation_pools: the generation pool of a study, the items of a
-- space (the teacher's base space) that the trainer draws AligNet
-- triplets from. items NULL means every item of the space.
CREATE TABLE generation_pools (
    study      text COLLATE "C" PRIMARY KEY REFERENCES studies (id) ON DELETE CASCADE,
    space      text COLLATE "C" NOT NULL REFERENCES spaces (name) ON DELETE CASCADE,
    items      text[] COLLATE "C",
    updated_at timestamptz NOT NULL DEFAULT now()
);
