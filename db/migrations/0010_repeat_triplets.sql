-- 0010_repeat_triplets: each study's fixed set of repeat triplets, drawn
-- when it first serves queries (the first API replica to store a set wins)
-- and asked of many workers, each at most once.
CREATE TABLE repeat_triplets (
    study  text COLLATE "C" NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    seq    integer NOT NULL CHECK (seq >= 0),
    item_a text COLLATE "C" NOT NULL,
    item_b text COLLATE "C" NOT NULL,
    item_c text COLLATE "C" NOT NULL,
    PRIMARY KEY (study, seq)
);
