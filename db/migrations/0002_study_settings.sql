-- 0002_study_settings: optional per-study settings (alignet.StudySettings)
-- as JSON. Missing members take their defaults when read, so '{}' means
-- "all defaults".
ALTER TABLE studies ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
