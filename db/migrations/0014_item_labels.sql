-- 0014_item_labels: categories of the items of a space, for class-based
-- sampling (the first label is the item's class) and per-level accuracy.
CREATE TABLE item_labels (
    space      text COLLATE "C" NOT NULL REFERENCES spaces (name) ON DELETE CASCADE,
    item       text COLLATE "C" NOT NULL CHECK (item <> ''),
    labels     text[] NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space, item)
);
