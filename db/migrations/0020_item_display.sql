-- 0020_item_display: how items are shown to participants (alignet.ItemDisplay).
-- Keyed by item id alone: an id names one stimulus in every space and
-- study. Empty strings mean "none".
CREATE TABLE item_display (
    item       text COLLATE "C" PRIMARY KEY CHECK (item <> ''),
    label      text NOT NULL DEFAULT '',
    image_url  text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
