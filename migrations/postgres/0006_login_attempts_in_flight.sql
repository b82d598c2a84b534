-- Attempts begun and not yet settled, per key: an attempt that could
-- exceed a limit only because of these waits for their verdicts instead of
-- being refused, and a failure is counted when its verdict comes. Reset
-- with the window, so an instance killed mid-attempt holds a slot at most
-- until then.
ALTER TABLE login_failures ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
