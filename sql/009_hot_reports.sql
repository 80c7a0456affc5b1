-- A REPORT rewrites its decision row (status, cost, quality, ...). While `status` was part of
-- an index (the partial index of open holds), every such update wrote a whole new row version
-- elsewhere plus an entry in each index of `decisions`. Without it, no indexed column changes,
-- and with room left on each page the new version stays beside the old one (a HOT update): no
-- index entry at all. docs/BENCHMARKS.md has the measurement.
--
-- The expiry sweep finds held decisions through `decisions_time` instead, from where the last
-- sweep reached (sql/functions/2_operations.sql, seqroute_expire_holds).
CREATE TABLE hold_expiry_progress (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- Every decision dated before this has been seen by a sweep after it committed.
    swept_to    timestamptz NOT NULL
);
-- Start from the oldest open hold, or from the start of the oldest transaction still running:
-- a daemon of the previous release may yet commit decisions dated from it.
INSERT INTO hold_expiry_progress (swept_to)
SELECT least((SELECT min(decided_at) FROM decisions WHERE status = 'held'),
             (SELECT min(xact_start) FROM pg_stat_activity WHERE pid <> pg_backend_pid()),
             now());
DROP INDEX decisions_open_holds;
ALTER TABLE decisions SET (fillfactor = 50);
-- Open holds belong to sessions not closed yet (CLOSE releases them). The metrics count open
-- sessions and open holds through this index and those sessions' decisions, now that no index
-- knows which decisions are held.
DROP INDEX sessions_open;
CREATE INDEX sessions_unclosed ON sessions (id) WHERE closed_at IS NULL;
