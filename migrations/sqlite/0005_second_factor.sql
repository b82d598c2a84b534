-- A second factor per account: an authenticator app's secret (RFC 6238)
-- and single-use recovery codes.
--
-- totp_secret is sealed (AES-256-GCM) under a key derived from the cookie
-- key, so the database alone yields no secret; NULL means 2FA is off.
-- totp_last_step is the time step of the last code accepted: a code is
-- accepted only for a later step, so none is ever accepted twice.
-- Recovery codes are kept as argon2id hashes, each usable once.

ALTER TABLE users ADD COLUMN totp_secret BLOB;
ALTER TABLE users ADD COLUMN totp_enabled_at INTEGER;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;

CREATE TABLE recovery_codes (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash    TEXT    NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (user_id, hash)
) WITHOUT ROWID;
