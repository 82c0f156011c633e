-- 0022_api_key_study: a collect key may be bound to one study (it ships
-- inside a public experiment page). NULL means unbound.
ALTER TABLE api_keys ADD COLUMN study text COLLATE "C" REFERENCES studies (id);
