-- 0011_judgment_query_kind: the kind of the query a judgment answers
-- (alignet.Judgment.QueryKind), stamped by the API; NULL for judgments
-- without a query.
ALTER TABLE judgments ADD COLUMN query_kind text CHECK (query_kind IN ('active', 'random', 'repeat', 'check'));
