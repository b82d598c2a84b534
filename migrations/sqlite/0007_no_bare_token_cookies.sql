-- Cookies carry the row id since schema 3; rows from before it (marked
-- legacy, found by their token hash alone) were a format that never
-- shipped in a release. Any left end here, with the column and the index
-- that found them: every session is found by its id.
DELETE FROM sessions WHERE legacy = 1;
DROP INDEX IF EXISTS sessions_legacy_token;
ALTER TABLE sessions DROP COLUMN legacy;
