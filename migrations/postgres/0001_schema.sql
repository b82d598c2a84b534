-- The whole schema on PostgreSQL, as SQLite has it after its migration 5.
-- Times are unix seconds in BIGINT (PostgreSQL's INTEGER is 32 bits),
-- flags BOOLEAN, bytes BYTEA. Identity ids are never handed out twice, so
-- an account id is never reused and a session never becomes another's.

CREATE TABLE users (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    email           TEXT,
    display_name    TEXT,
    -- The second factor: the sealed secret (NULL: off), since when, and
    -- the last time step accepted (codes for it or earlier are refused).
    totp_secret     BYTEA,
    totp_enabled_at BIGINT,
    totp_last_step  BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE user_groups (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name    TEXT   NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE recovery_codes (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash    TEXT   NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, hash)
);

-- One row per session: found by id, opened by the SHA-256 of the token.
CREATE TABLE sessions (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   BYTEA   NOT NULL,
    handle       TEXT    NOT NULL,
    user_id      BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    data         TEXT    NOT NULL DEFAULT '{}',
    created_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    persistent   BOOLEAN NOT NULL DEFAULT FALSE,
    user_agent   TEXT,
    ip           TEXT
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id, expires_at);

-- Facts about how this database has been served (see the SQLite schema).
CREATE TABLE server_state (
    key   TEXT   PRIMARY KEY,
    value BIGINT NOT NULL,
    since BIGINT NOT NULL
);
