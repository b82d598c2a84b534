-- Sessions are found by row id, which the cookie now carries beside the
-- token, and token_hash is checked on that one row. Neither token_hash nor
-- handle needs an index of its own any more: keyed on random values, those
-- two indexes made every login and every purged row write pages all over
-- two extra B-trees (a purge of 1,000,000 rows ran ten times longer).
-- handle is still looked up within one user's rows (sessions_user_id), or by
-- scanning for the operator's `sessions revoke`.
--
-- Rows from before this migration have cookies without the id: legacy = 1
-- marks them, and a partial index finds them by token_hash until they end.
-- Their first request re-issues the cookie with the id.
CREATE TABLE sessions_by_id (
    id           INTEGER PRIMARY KEY,
    token_hash   BLOB    NOT NULL,
    handle       TEXT    NOT NULL,
    user_id      INTEGER NOT NULL,
    data         TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    persistent   INTEGER NOT NULL DEFAULT 0,
    user_agent   TEXT,
    ip           TEXT,
    legacy       INTEGER NOT NULL DEFAULT 0
);

INSERT INTO sessions_by_id
    (id, token_hash, handle, user_id, data, created_at, last_seen_at, expires_at, persistent,
     user_agent, ip, legacy)
SELECT id, token_hash, handle, user_id, data, created_at, last_seen_at, expires_at, persistent,
       user_agent, ip, 1
FROM sessions;

DROP TABLE sessions;
ALTER TABLE sessions_by_id RENAME TO sessions;

CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id, expires_at);
CREATE INDEX sessions_legacy_token ON sessions (token_hash) WHERE legacy = 1;
