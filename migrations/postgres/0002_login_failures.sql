-- The login throttle every instance shares: failures per key within a
-- window that started at `since` (unix seconds, the database's clock).
-- `scope` names the counter (login or code; per pair, account or address).
CREATE TABLE login_failures (
    scope    TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    failures INTEGER NOT NULL,
    since    BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_failures_since ON login_failures (since);
