-- Instances announce changes to each other, so each may keep sessions and
-- identities in memory and still honour a logout made on another at once.
--
-- Every change that ends or alters a session (a delete, a new token, new
-- data, another owner) announces its id on `sesija_sessions`, from the very
-- transaction that made it, whoever made it (an instance, the command line,
-- a raw SQL edit). Deadline moves are not announced: a cache that finds an
-- entry expired reads the row again. Any change to an account or its groups
-- is announced on `sesija_accounts`.
CREATE FUNCTION sesija_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sesija_sessions', OLD.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER sessions_announced
    AFTER DELETE OR UPDATE OF token_hash, data, user_id ON sessions
    FOR EACH ROW EXECUTE FUNCTION sesija_session_changed();

CREATE FUNCTION sesija_account_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sesija_accounts', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER users_announced AFTER UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION sesija_account_changed();
CREATE TRIGGER groups_announced AFTER INSERT OR UPDATE OR DELETE ON user_groups
    FOR EACH STATEMENT EXECUTE FUNCTION sesija_account_changed();

-- The instances listening, and the last barrier each has applied: a writer
-- waits (about 2 s at most) until every instance seen in the last 2 s has
-- applied the barrier it announced after its change.
CREATE TABLE sesija_instances (
    id      TEXT   PRIMARY KEY,
    applied BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
CREATE SEQUENCE sesija_barrier;
