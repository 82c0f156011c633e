-- 0006_input_revisions: revision counters that tell a reader cheaply, and
-- without comparing clocks, whether a study's item pool or its space's
-- embeddings changed since it built a copy (db.StudyStamps; the API's
-- teacher cache polls them). AddStudyItems bumps items_rev when it adds an
-- item; UpsertEmbeddings bumps embeddings_rev when it writes a vector.
ALTER TABLE spaces ADD COLUMN embeddings_rev bigint NOT NULL DEFAULT 0;
ALTER TABLE studies ADD COLUMN items_rev bigint NOT NULL DEFAULT 0;
