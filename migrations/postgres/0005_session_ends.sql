-- A hard end for a session that activity must not extend: a login waiting
-- for its second factor lives `two_factor_pending_timeout`, not the idle
-- deadline of an ordinary session. NULL: an ordinary session.
ALTER TABLE sessions ADD COLUMN ends_at BIGINT;

-- Logins already waiting for their code end as the default timeout says,
-- so the purge removes them and no list shows them for days.
UPDATE sessions
   SET ends_at = created_at + 300,
       expires_at = LEAST(expires_at, created_at + 300)
 WHERE data LIKE '%"factor":"pending"%';
