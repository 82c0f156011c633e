-- 0019_embeddings_inline: keep embedding vectors in the heap row up to
-- about 8 kB (2,032 float32 components) instead of moving them to the
-- TOAST table from 2 kB on. A 768-d vector is 3 kB: out of line, reading
-- a generation pool costs a TOAST index lookup per vector, which made
-- reading 1.28M of them several times slower. Applies to rows written
-- from now on.
ALTER TABLE embeddings SET (toast_tuple_target = 8160);
