-- Account ids are never reused, and a session never outlives its account.
--
-- Before, users.id had no AUTOINCREMENT, so a removed account's id went to
-- the next account created, and sessions.user_id had no foreign key, so a
-- session that survived its account (a login racing the removal) became the
-- new account's. Now users.id is AUTOINCREMENT (SQLite then never hands out
-- an id it gave before) and sessions.user_id references it with ON DELETE
-- CASCADE (every connection runs with PRAGMA foreign_keys = ON).
--
-- Sessions whose account is gone are dropped here: they could only ever
-- have been honoured as someone else's.

CREATE TABLE users_autoincrement (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
INSERT INTO users_autoincrement (id, username, password_hash, created_at)
SELECT id, username, password_hash, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_autoincrement RENAME TO users;

CREATE TABLE sessions_owned (
    id           INTEGER PRIMARY KEY,
    token_hash   BLOB    NOT NULL,
    handle       TEXT    NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    data         TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    persistent   INTEGER NOT NULL DEFAULT 0,
    user_agent   TEXT,
    ip           TEXT,
    legacy       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO sessions_owned
    (id, token_hash, handle, user_id, data, created_at, last_seen_at, expires_at, persistent,
     user_agent, ip, legacy)
SELECT id, token_hash, handle, user_id, data, created_at, last_seen_at, expires_at, persistent,
       user_agent, ip, legacy
FROM sessions WHERE user_id IN (SELECT id FROM users);
DROP TABLE sessions;
ALTER TABLE sessions_owned RENAME TO sessions;

CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id, expires_at);
CREATE INDEX sessions_legacy_token ON sessions (token_hash) WHERE legacy = 1;

-- Facts about how this database has been served, one row each. The first
-- is `session_cookie`: the cookie name the server last ran with (value) and when
-- it first ran with it (since). A cookie under the other setting's name is
-- honoured only for sessions created before `since`: a switch logs nobody
-- out, and a plain cookie planted later opens nothing.
CREATE TABLE server_state (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL,
    since INTEGER NOT NULL
);

-- What forward auth hands to the apps behind the proxy: an optional e-mail
-- and display name, and the groups access rules name.
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN display_name TEXT;
CREATE TABLE user_groups (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name    TEXT    NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;
