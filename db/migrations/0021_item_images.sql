-- 0021_item_images: images uploaded for items (PUT /v1/items/{item}/image).
-- content_type is sniffed from the bytes; sha256 (hex) versions the image
-- in ETags and URLs.
CREATE TABLE item_images (
    item         text COLLATE "C" PRIMARY KEY CHECK (item <> ''),
    content_type text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp', 'image/gif')),
    sha256       text NOT NULL CHECK (length(sha256) = 64),
    data         bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Image formats are compressed already.
ALTER TABLE item_images ALTER COLUMN data SET STORAGE EXTERNAL;
