-- Budget periods: an account with period daily, weekly or monthly (in its own time zone)
-- starts every period from zero spend. Nothing past is rewritten: `spent` is the spend of the
-- period that began at `period_start`, and the period of any entry follows from its time,
-- the account's period and its time zone (seqroute_period_start() in
-- sql/functions/1_periods.sql). For period 'none', period_start stays -infinity.
ALTER TABLE accounts ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
ALTER TABLE accounts ADD COLUMN period_start timestamptz NOT NULL DEFAULT '-infinity';
-- The period's spend is the account's spend entries with a larger id than this. An id, not a
-- time: every writer appends an account's entries while it holds that account's row lock, so
-- ids order them exactly, where a transaction that began before midnight and commits after
-- the roll-over would carry a time from the period before.
ALTER TABLE accounts ADD COLUMN period_entry_id bigint NOT NULL DEFAULT 0;

-- Open sessions, counted at every metrics scrape, without reading the whole table.
CREATE INDEX sessions_open ON sessions (id) WHERE state = 'open';
