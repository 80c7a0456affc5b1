-- ledger_entries is written three times per decision and read in bulk (the reconciliation,
-- the audit views, reports by time range). B-tree entries per row on (session_id, turn) and
-- (account_id, at), and a foreign-key trigger per row on `corrects`, cost the write path about
-- 8% of the ledger backend's CPU per decision (docs/BENCHMARKS.md). What replaces them:
--   * a BRIN index on `at`: rows are appended in time order, so a summary per block range
--     serves time-range reads at almost no cost per insert;
--   * `corrects` is checked by seqroute_adjust(), the only writer of adjustments, and the
--     reconciliation view reports any adjustment whose entry does not exist;
--   * the period boundary walks the primary key backwards (sql/functions/1_periods.sql).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_corrects_fkey;
DROP INDEX ledger_entries_session;
DROP INDEX ledger_entries_account_at;
CREATE INDEX ledger_entries_at ON ledger_entries USING brin (at);
