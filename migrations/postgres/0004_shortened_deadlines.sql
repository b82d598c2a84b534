-- A deadline moved earlier ends or shortens a session, and caches must
-- hear of it like any other such change. The application only ever moves
-- deadlines forward (a cache that finds an entry expired reads the row
-- again), so this fires for edits from outside it alone: an operator's
-- `UPDATE sessions SET expires_at = ...`, another program.
CREATE TRIGGER sessions_shortened
    AFTER UPDATE OF expires_at ON sessions
    FOR EACH ROW WHEN (NEW.expires_at < OLD.expires_at)
    EXECUTE FUNCTION sesija_session_changed();
