-- Budget periods (006_budget_periods.sql).

-- The start of the period containing `t`: midnight of its day, of its ISO week's Monday, or of
-- the first of its month, in time zone `tz`; -infinity for period 'none'.
CREATE OR REPLACE FUNCTION seqroute_period_start(period text, tz text, t timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE period
               WHEN 'daily' THEN date_trunc('day', t AT TIME ZONE tz) AT TIME ZONE tz
               WHEN 'weekly' THEN date_trunc('week', t AT TIME ZONE tz) AT TIME ZONE tz
               WHEN 'monthly' THEN date_trunc('month', t AT TIME ZONE tz) AT TIME ZONE tz
               ELSE '-infinity'::timestamptz END
$$;

-- Locks the accounts `ids` in id order, starts a new period for each whose current one has
-- ended, and returns the ids it locked (those that exist). Every writer of a session, its
-- decisions or its entries calls this for the session's account first (the batch function, the
-- expiry sweep, corrections), so an account's lock serialises everything about its sessions,
-- and the one order keeps writers from deadlocking.
-- A new period: spent goes back to 0, and the entries that count from now on are those
-- appended after this point (the sequence's last value bounds every entry of these accounts so
-- far, as their rows are locked). held is left as it is: a hold placed in the old period still
-- occupies the new one until it is reported, and what it captures is the new period's spend.
-- The locking statement reads each row as the last holder of its lock committed it (a change of
-- period included), and finds those whose period has ended; the roll, a statement of its own,
-- runs only for them, as it is due once a period per account. PL/pgSQL rather than SQL: it runs
-- with every batch, and PL/pgSQL keeps its plans between calls.
-- Dropped first: a version before it returned nothing, and a return type cannot be replaced.
DROP FUNCTION IF EXISTS seqroute_lock_accounts(text[]);
CREATE FUNCTION seqroute_lock_accounts(ids text[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    got text[];
    ended text[];
BEGIN
    -- The aggregates read every row, so every one is locked.
    SELECT array_agg(l.id), array_agg(l.id) FILTER (WHERE l.ended) INTO got, ended
      FROM (SELECT a.id, a.period <> 'none' AND a.period_start < seqroute_period_start(a.period, a.time_zone, now())
                   AS ended
              FROM accounts a WHERE a.id = ANY (ids) ORDER BY a.id FOR UPDATE) l;
    IF ended IS NOT NULL THEN
        UPDATE accounts a
           SET spent = 0, period_start = seqroute_period_start(a.period, a.time_zone, now()),
               period_entry_id = (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ledger_entries_id_seq),
               updated_at = now()
         WHERE a.id = ANY (ended);
    END IF;
    RETURN got;
END $$;
-- It replaced seqroute_roll_periods(), which only rolled, after the caller's own locks.
DROP FUNCTION IF EXISTS seqroute_roll_periods(text[]);

-- Sets an account's period and time zone; spent becomes the spend of the period under way,
-- recomputed from the entries (all of them for 'none'). Creates nothing: the account must exist.
CREATE OR REPLACE FUNCTION seqroute_set_period(account text, new_period text, tz text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    start timestamptz;
    boundary bigint := 0;
BEGIN
    PERFORM now() AT TIME ZONE tz;  -- an unknown time zone fails here, whatever the period
    start := seqroute_period_start(new_period, tz, now());
    -- The period under way began after the account's last entry from before its start. There
    -- is no index by account: ids are walked down from the newest, as far back as that entry
    -- (the whole ledger if there is none), before the account is locked, so that its batches
    -- do not wait meanwhile. Locked, only entries above that id can still change the answer:
    -- one of a batch that began before the start and committed since.
    IF start > '-infinity' THEN
        boundary := coalesce((SELECT e.id FROM ledger_entries e WHERE e.account_id = account AND e.at < start
                               ORDER BY e.id DESC LIMIT 1), 0);
    END IF;
    PERFORM 1 FROM accounts WHERE id = account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no account %', account USING ERRCODE = 'no_data_found';
    END IF;
    IF start > '-infinity' THEN
        boundary := coalesce((SELECT max(e.id) FROM ledger_entries e
                               WHERE e.id > boundary AND e.account_id = account AND e.at < start), boundary);
    END IF;
    UPDATE accounts a
       SET period = new_period, time_zone = tz, period_start = start, period_entry_id = boundary, updated_at = now(),
           spent = coalesce((SELECT sum(e.amount) FROM ledger_entries e
                              WHERE e.account_id = account AND e.id > boundary
                                AND e.kind IN ('capture', 'expiry', 'overrun', 'adjustment')), 0)
     WHERE a.id = account;
END $$;

-- Only the ledger's owner (the daemon and the operator's tools) runs what writes.
REVOKE ALL ON FUNCTION seqroute_lock_accounts(text[]), seqroute_set_period(text, text, text) FROM PUBLIC;
