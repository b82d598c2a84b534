-- One row per live login. Times are INTEGER unix seconds; a row is honoured
-- only while expires_at > now, whether or not the purge has reached it yet.
-- token_hash is SHA-256 of the cookie token: the token itself is never stored.
-- handle is a separate random id that can be shown and logged safely.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    token_hash   BLOB    NOT NULL UNIQUE,
    handle       TEXT    NOT NULL UNIQUE,
    user_id      INTEGER NOT NULL,
    data         TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    persistent   INTEGER NOT NULL DEFAULT 0,
    user_agent   TEXT,
    ip           TEXT
);

-- The purge walks expired rows; per-user listing and revocation walk one user's rows.
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id, expires_at);
