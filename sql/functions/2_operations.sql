-- The functions behind the money rules (SPEC section 4); the batch format is described in
-- 007_batch_op.sql and docs/LEDGER.md. The daemon sends a batch as a seqroute_op[] in binary,
-- which names every attribute's type: seqroute_op stays as it is, and a release that needs
-- another field adds a type and an overload instead. Replaced whole (CREATE OR REPLACE)
-- whenever this file changes: `seqroute migrate` records its SHA-256 in schema_definitions.

-- A batch is applied in a fixed handful of statements, whatever its size: survey and lock, then
-- one statement per kind of operation present (two for OPEN), its reads and writes joined with
-- data-modifying CTEs, in the order OPEN, STATUS, FEEDBACK, REPORT, CLOSE, ROUTE, so that
-- routes see the money that reports and closes of the same batch freed. The daemon never puts
-- two operations of one session in a batch (GroupCommitter), so within a statement every
-- session, decision and account row is written at most once; a batch that breaks this is
-- refused whole.
--
-- Every statement touches a handful of rows by key, driven by the batch. The planner cannot
-- know how small the batch is, and would rather hash a young sessions or decisions table whole
-- than probe it by key, a choice whose cost grows with the log. Nested loops only, then: the
-- batch drives, the big tables are probed by key. No bitmap scans either: each probe finds a
-- row or a handful, which a plain index scan reads directly. Plans are made once (generic),
-- not for every batch. And no JIT: compiling these statements costs more than running them.
--
-- Columns of the ledger's domains (011_check_domains.sql) are cast to the plain types of
-- seqroute_result in the answers: RETURN QUERY wants each column's type exactly.
CREATE OR REPLACE FUNCTION seqroute_apply(ops seqroute_op[]) RETURNS SETOF seqroute_result
LANGUAGE plpgsql
SET jit = off SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    -- The kinds of operation present: statements for absent kinds are skipped.
    kinds   text[];
    repeats boolean;
    -- The accounts locked. A session is read and written only if its account is one of them: a
    -- session opened, under another account, by a batch that committed after the survey's
    -- snapshot (a request racing its session's OPEN on another daemon) is answered as unknown,
    -- as if the request came first.
    locked  text[];
    -- When the batch's routes are logged, after its locks: the expiry sweep relies on a
    -- decision being dated no earlier than its transaction got an id (seqroute_expire_holds).
    routed_at timestamptz;
BEGIN
    -- The survey, with the locks: the kinds present, whether a session is named twice, and the
    -- accounts of the batch's sessions and OPENs, locked in id order, which serialises every
    -- writer of their sessions; ended budget periods start afresh (1_periods.sql). An OPEN
    -- names its account; a ROUTE or REPORT may name its session's, which the daemon knows for
    -- the sessions it opened, and spares the lookup. A wrong name locks the wrong account, and
    -- the statements below then do not find the session (they join only sessions of locked
    -- accounts), unless another operation of the batch locked its account.
    SELECT s.kinds, s.repeats, l.got INTO kinds, repeats, locked
      FROM (SELECT array_agg(DISTINCT x.k) AS kinds, count(DISTINCT x.s) < count(*) AS repeats,
                   array_agg(coalesce(x.a, (SELECT se.account_id FROM sessions se WHERE se.id = x.s))) AS accounts
              FROM unnest(ops) x) s
     CROSS JOIN LATERAL seqroute_lock_accounts(s.accounts) AS l (got);
    IF repeats THEN
        RAISE EXCEPTION 'seqroute_apply: a batch names a session more than once' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- OPEN: the insert, then the answers in a statement of its own, which sees the rows: a
    -- session this batch made carries the transaction's id (xmin) and its start (opened_at; the
    -- two together, as a frozen row keeps an old xmin that may come round again). That holds as
    -- the daemon calls this function, alone in its transaction. No session row means the insert
    -- found no account (one made between the two statements included). (The insert's returned
    -- rows joined back to the operations were a nested loop, quadratic in the OPENs of a batch:
    -- 2,000 took a quarter of a second.)
    IF 'open' = ANY (kinds) THEN
        INSERT INTO sessions (id, account_id, user_id, budget, horizon, lambda)
        SELECT x.s, x.a, x.u, x.b, x.h, x.l FROM unnest(ops) x JOIN accounts a ON a.id = x.a
         WHERE x.k = 'open'
        ON CONFLICT (id) DO NOTHING;
        RETURN QUERY
        SELECT x.n, CASE WHEN a.id IS NULL OR se.id IS NULL THEN 'unknown_account'
                         WHEN se.xmin = pg_current_xact_id_if_assigned()::xid AND se.opened_at = now() THEN 'ok'
                         ELSE 'exists' END,
               NULL::integer, x.b, 0::bigint, 0::bigint, NULL::bigint, x.h, x.l, 'open', false, NULL::bigint,
               NULL::bigint, CASE WHEN se.id IS NOT NULL THEN a.cap - a.spent - a.held END
          FROM unnest(ops) x LEFT JOIN accounts a ON a.id = x.a LEFT JOIN sessions se ON se.id = x.s
         WHERE x.k = 'open';
    END IF;

    IF 'status' = ANY (kinds) THEN
        RETURN QUERY
        SELECT x.n, CASE WHEN se.id IS NULL THEN 'unknown_session' ELSE 'ok' END, se.turns, se.budget::bigint, se.spent,
               se.held::bigint, NULL::bigint, se.horizon, se.lambda, se.state::text, se.closed_at IS NOT NULL, NULL::bigint,
               NULL::bigint, a.cap - a.spent - a.held
          FROM unnest(ops) x LEFT JOIN sessions se ON se.id = x.s LEFT JOIN accounts a ON a.id = se.account_id
         WHERE x.k = 'status';
    END IF;

    -- FEEDBACK: quality that arrives after the report. Each is answered from its own lookup,
    -- which finds what the update finds (the batch holds the account's lock), so that the
    -- answers need no join to the update's rows.
    IF 'feedback' = ANY (kinds) THEN
        RETURN QUERY
        WITH o AS (
            SELECT x.n, x.s, x.t, x.q, se.id IS NOT NULL AS known,
                   d.status IS NOT NULL AND d.status <> 'bankrupt' AS feeds, a.cap - a.spent - a.held AS account_left
              FROM unnest(ops) x LEFT JOIN sessions se ON se.id = x.s AND se.account_id = ANY (locked)
              LEFT JOIN decisions d ON d.session_id = x.s AND d.turn = x.t AND se.id IS NOT NULL
              LEFT JOIN accounts a ON a.id = se.account_id
             WHERE x.k = 'feedback'),
        fed AS (
            UPDATE decisions d SET quality = o.q
              FROM o
             WHERE o.feeds AND d.session_id = o.s AND d.turn = o.t)
        SELECT o.n, CASE WHEN NOT o.known THEN 'unknown_session' WHEN NOT o.feeds THEN 'unknown_turn' ELSE 'ok' END,
               NULL::integer, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::integer,
               NULL::double precision, NULL::text, NULL::boolean, NULL::bigint, NULL::bigint, o.account_left
          FROM o;
    END IF;

    -- REPORT, by the decision's status. Held: capture up to the hold, release the rest, record
    -- any excess as an overrun. Released (the session was closed first): nothing is held any
    -- more, so the whole cost is an overrun; the ledger tells the truth about spend. Reported:
    -- the first answer again if the figures are the same, else a conflict.
    IF 'report' = ANY (kinds) THEN
        RETURN QUERY
        WITH o AS (
            SELECT x.n, x.s, x.t, x.c, x.q, x.i, x.o, se.id IS NOT NULL AS known, se.account_id, se.spent, se.held,
                   d.status AS dstatus, d.hold AS dhold, d.cost AS dcost, d.reported_quality AS dquality,
                   d.report_spent, d.report_remaining,
                   -- The account's remaining money once this statement has settled its reports.
                   a.cap - a.spent - a.held - sum(CASE d.status WHEN 'held' THEN x.c - d.hold WHEN 'released' THEN x.c ELSE 0 END)
                                                  OVER (PARTITION BY se.account_id)::bigint AS account_left
              FROM unnest(ops) x LEFT JOIN sessions se ON se.id = x.s AND se.account_id = ANY (locked)
              -- Keyed by the operation's own session and turn, so that the probe uses the whole
              -- primary key: keyed by se.id, the plan read every decision of the session and
              -- filtered on the turn afterwards.
              LEFT JOIN decisions d ON d.session_id = x.s AND d.turn = x.t AND se.id IS NOT NULL
              LEFT JOIN accounts a ON a.id = se.account_id
             WHERE x.k = 'report'),
        live AS (SELECT * FROM o WHERE o.dstatus IN ('held', 'released')),
        entries AS (
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
            SELECT e.kind, live.account_id, live.s, live.t, e.amount
              FROM live
             CROSS JOIN LATERAL (VALUES
                    ('capture', CASE WHEN live.dstatus = 'held' THEN least(live.c, live.dhold) ELSE 0 END),
                    ('release', CASE WHEN live.dstatus = 'held' THEN live.dhold - live.c ELSE 0 END),
                    ('overrun', CASE WHEN live.dstatus = 'held' THEN live.c - live.dhold ELSE live.c END))
                    AS e (kind, amount)
             WHERE e.amount > 0
             ORDER BY live.n),
        moved AS (
            UPDATE sessions se
               SET spent = se.spent + live.c,
                   held = se.held - CASE WHEN live.dstatus = 'held' THEN live.dhold ELSE 0 END
              FROM live
             WHERE se.id = live.s
            RETURNING live.n, live.s, live.t, live.c, live.q, live.i, live.o, live.dhold, live.account_left, se.budget,
                      se.spent, se.held),
        settled AS (
            UPDATE decisions d
               SET status = 'reported', cost = moved.c, quality = coalesce(moved.q, d.quality), reported_quality = moved.q,
                   in_tokens = moved.i, out_tokens = moved.o, reported_at = now(), report_spent = moved.spent,
                   report_remaining = moved.budget - moved.spent - moved.held
              FROM moved
             WHERE d.session_id = moved.s AND d.turn = moved.t),
        charged AS (
            UPDATE accounts a
               SET spent = a.spent + x.spent, held = a.held - x.released, updated_at = now()
              FROM (SELECT live.account_id, sum(live.c) AS spent,
                           sum(CASE WHEN live.dstatus = 'held' THEN live.dhold ELSE 0 END) AS released
                      FROM live GROUP BY live.account_id) x
             WHERE a.id = x.account_id)
        -- Answers without joining the batch's operations to the rows written (with hash joins
        -- off, a join of two CTEs is a nested loop, quadratic in the batch): the settled
        -- reports from what their update returned, every other report from its lookup.
        SELECT moved.n, 'ok', moved.t, moved.budget::bigint, moved.spent, moved.held::bigint, moved.dhold::bigint, NULL::integer,
               NULL::double precision, NULL::text, NULL::boolean, moved.spent, moved.budget - moved.spent - moved.held,
               moved.account_left
          FROM moved
        UNION ALL
        SELECT o.n,
               CASE WHEN NOT o.known THEN 'unknown_session'
                    WHEN o.dstatus IS NULL OR o.dstatus = 'bankrupt' THEN 'unknown_turn'
                    WHEN o.dstatus = 'expired' THEN 'expired'
                    WHEN o.dcost = o.c AND o.dquality IS NOT DISTINCT FROM o.q THEN 'ok'
                    ELSE 'conflict' END,
               o.t, NULL::bigint, o.spent, o.held::bigint, o.dhold::bigint, NULL::integer, NULL::double precision, NULL::text,
               NULL::boolean, o.report_spent, o.report_remaining, o.account_left
          FROM o
         WHERE o.dstatus IS NULL OR o.dstatus NOT IN ('held', 'released');
    END IF;

    -- CLOSE releases the session's open holds; closing twice answers the same.
    IF 'close' = ANY (kinds) THEN
        RETURN QUERY
        WITH o AS (
            SELECT x.n, x.s, se.id IS NOT NULL AS known, se.account_id, se.turns, se.budget, se.spent, se.held,
                   se.state, se.id IS NOT NULL AND se.closed_at IS NULL AS closing,
                   -- The account's remaining money once this statement has released its holds.
                   a.cap - a.spent - a.held + sum(CASE WHEN se.id IS NOT NULL AND se.closed_at IS NULL THEN se.held ELSE 0 END)
                                                  OVER (PARTITION BY se.account_id)::bigint AS account_left
              FROM unnest(ops) x LEFT JOIN sessions se ON se.id = x.s AND se.account_id = ANY (locked)
              LEFT JOIN accounts a ON a.id = se.account_id
             WHERE x.k = 'close'),
        released AS (
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
            SELECT 'release', o.account_id, o.s, d.turn, d.hold
              FROM o JOIN decisions d ON d.session_id = o.s AND d.status = 'held'
             WHERE o.closing AND o.held > 0 AND d.hold > 0
             ORDER BY o.n, d.turn),
        freed AS (
            UPDATE decisions d SET status = 'released'
              FROM o
             WHERE o.closing AND d.session_id = o.s AND d.status = 'held'),
        unheld AS (
            UPDATE accounts a
               SET held = a.held - x.released, updated_at = now()
              FROM (SELECT o.account_id, sum(o.held) AS released FROM o WHERE o.closing AND o.held > 0
                     GROUP BY o.account_id) x
             WHERE a.id = x.account_id),
        shut AS (
            UPDATE sessions se
               SET held = 0, closed_at = now(), state = CASE WHEN se.state = 'bankrupt' THEN 'bankrupt' ELSE 'closed' END
              FROM o
             WHERE o.closing AND se.id = o.s)
        -- The state each session is left in, from its lookup, as `shut` sets it: no join to the
        -- rows written (a nested loop, quadratic in the CLOSEs of a batch).
        SELECT o.n, CASE WHEN o.known THEN 'ok' ELSE 'unknown_session' END, o.turns, o.budget::bigint, o.spent,
               CASE WHEN o.known THEN 0::bigint END, NULL::bigint, NULL::integer, NULL::double precision,
               CASE WHEN o.closing AND o.state <> 'bankrupt' THEN 'closed' ELSE o.state::text END,
               CASE WHEN o.known THEN true END, NULL::bigint, NULL::bigint, o.account_left
          FROM o;
    END IF;

    -- ROUTE. A hold is admitted only if it fits the session and the account, counting the
    -- holds admitted before it in this batch (cumulative per account, in arrival order).
    -- A route decided on an outdated view (wrong turn, or money moved since) is answered
    -- 'stale' with the current figures, and the daemon decides again. A route without a
    -- model asks to record a bankrupt turn; it is stale too if the cheapest hold fits.
    IF 'route' = ANY (kinds) THEN
        -- The transaction has an id: a route is logged only for a known session, whose account
        -- the batch has locked.
        routed_at := clock_timestamp();
        RETURN QUERY
        WITH r AS (
            -- Features as bytes (fb); as a real[] (f) from daemons of earlier releases.
            SELECT x.n, x.s, x.t, x.m, x.hd, x.pv, x.l, x.pool, x.task, x.pt,
                   coalesce(x.fb, seqroute_features_bytes(x.f)) AS f, x.bs, x.hs, x.fe, x.p, x.sc, x.pu,
                   se.id IS NOT NULL AS known, se.account_id, se.closed_at IS NOT NULL AS closed, se.state, se.turns,
                   se.budget, se.spent, se.held, se.horizon, se.lambda AS session_lambda,
                   se.turns + 1 = x.t AS turn_ok,
                   se.spent + se.held + x.hd <= se.budget AS fits_session,
                   se.spent + se.held + x.mh <= se.budget AND a.spent + a.held + x.mh <= a.cap AS cheapest_fits,
                   a.spent + a.held AS account_used, a.cap
              FROM unnest(ops) x LEFT JOIN sessions se ON se.id = x.s AND se.account_id = ANY (locked)
              LEFT JOIN accounts a ON a.id = se.account_id
             WHERE x.k = 'route'
        ), c AS (
            SELECT r.*, r.m IS NOT NULL AND r.state = 'open' AND NOT r.closed AND r.turn_ok AND r.fits_session AS candidate
              FROM r
        ), w AS (
            SELECT c.*, sum(CASE WHEN c.candidate THEN c.hd ELSE 0 END)
                            OVER (PARTITION BY c.account_id ORDER BY c.n) AS cumulative
              FROM c
        ), v AS (
            -- With the account's remaining money once this statement has placed its holds.
            SELECT y.*, y.cap - y.account_used - sum(CASE WHEN y.verdict = 'ok' THEN y.hd ELSE 0 END)
                                                   OVER (PARTITION BY y.account_id)::bigint AS account_left
              FROM (SELECT w.*, CASE
                               WHEN NOT w.known THEN 'unknown_session'
                               WHEN w.closed THEN 'closed'
                               WHEN NOT w.turn_ok THEN 'stale'
                               WHEN w.state = 'bankrupt' THEN 'bankrupt'
                               WHEN w.m IS NULL THEN CASE WHEN w.cheapest_fits THEN 'stale' ELSE 'bankrupt' END
                               WHEN w.candidate AND w.account_used + w.cumulative <= w.cap THEN 'ok'
                               ELSE 'stale' END AS verdict
                      FROM w) y
        ), logged AS (
            INSERT INTO decisions (session_id, turn, decided_at, policy_version, lambda, pool_id, task, prompt_tokens,
                                   features, budget_state, holds, feasible, model, propensity, scores, hold, status, peer_uid)
            SELECT v.s, v.t, routed_at, v.pv, v.l, v.pool, v.task, v.pt, v.f, v.bs, v.hs, v.fe,
                   CASE WHEN v.verdict = 'ok' THEN v.m END, CASE WHEN v.verdict = 'ok' THEN v.p END,
                   CASE WHEN v.verdict = 'ok' THEN v.sc END, CASE WHEN v.verdict = 'ok' THEN v.hd ELSE 0 END,
                   CASE WHEN v.verdict = 'ok' THEN 'held' ELSE 'bankrupt' END, v.pu
              FROM v
             WHERE v.verdict IN ('ok', 'bankrupt')
             ORDER BY v.n
        ), holds AS (
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
            SELECT 'hold', v.account_id, v.s, v.t, v.hd
              FROM v
             WHERE v.verdict = 'ok' AND v.hd > 0
             ORDER BY v.n
        ), moved AS (
            UPDATE sessions se
               SET held = se.held + CASE WHEN v.verdict = 'ok' THEN v.hd ELSE 0 END, turns = v.t,
                   state = CASE WHEN v.verdict = 'bankrupt' THEN 'bankrupt' ELSE se.state END
              FROM v
             WHERE se.id = v.s AND v.verdict IN ('ok', 'bankrupt')
            RETURNING v.n, v.verdict, v.t, v.budget, v.spent, se.held, v.hd, v.horizon, v.session_lambda, se.state,
                      v.closed, v.account_left
        ), charged AS (
            UPDATE accounts a
               SET held = a.held + x.held, updated_at = now()
              FROM (SELECT v.account_id, sum(v.hd) AS held FROM v WHERE v.verdict = 'ok' GROUP BY v.account_id) x
             WHERE a.id = x.account_id
        )
        -- As for REPORT: the admitted and bankrupt turns from what their update returned, the
        -- refused ones from their lookup.
        SELECT moved.n, moved.verdict, moved.t, moved.budget::bigint, moved.spent, moved.held::bigint,
               CASE WHEN moved.verdict = 'ok' THEN moved.hd END, moved.horizon, moved.session_lambda, moved.state::text,
               moved.closed, NULL::bigint, NULL::bigint, moved.account_left
          FROM moved
        UNION ALL
        SELECT v.n, v.verdict, v.turns, v.budget::bigint, v.spent, v.held::bigint, NULL::bigint, v.horizon, v.session_lambda,
               v.state::text,
               CASE WHEN v.known THEN v.closed END, NULL::bigint, NULL::bigint, v.account_left
          FROM v
         WHERE v.verdict NOT IN ('ok', 'bankrupt');
    END IF;
END $$;

-- The batch as json or jsonb, as daemons of earlier releases send it: they keep serving while
-- a newer release migrates (docs/OPERATIONS.md, Upgrade). The daemon sends the array itself,
-- in binary.
CREATE OR REPLACE FUNCTION seqroute_apply(ops json) RETURNS SETOF seqroute_result
LANGUAGE sql AS $$ SELECT * FROM seqroute_apply(array(SELECT x FROM json_populate_recordset(NULL::seqroute_op, ops) x)) $$;
CREATE OR REPLACE FUNCTION seqroute_apply(ops jsonb) RETURNS SETOF seqroute_result
LANGUAGE sql AS $$ SELECT * FROM seqroute_apply(ops::json) $$;

-- Money rule 3: holds not reported within max_age are captured at their full amount.
--
-- No index knows which decisions are held (009_hot_reports.sql), so each sweep reads the
-- decisions dated from where the last one reached up to the cutoff, through decisions_time,
-- and keeps the held ones: every decision is read about once after it falls due. A decision
-- still uncommitted when a sweep reads is not lost: its transaction had an id before it dated
-- the decision (routed_at in seqroute_apply), so either the sweep saw that transaction
-- running and reaches no further than its start, or the decision is dated after the sweep
-- began, past the cutoff. And `swept_to` never moves back: decisions dated before it were all
-- seen once committed, and every later one is dated after it.
CREATE OR REPLACE FUNCTION seqroute_expire_holds(max_age interval) RETURNS integer
LANGUAGE plpgsql
SET jit = off SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    cutoff  timestamptz := now() - max_age;
    since   timestamptz;
    reach   timestamptz;
    due     text[];
    d       record;
    n       integer := 0;
BEGIN
    -- One sweep at a time, across daemons.
    SELECT swept_to INTO STRICT since FROM hold_expiry_progress FOR UPDATE;
    -- Read before the decisions, whose statement takes a later snapshot. A writer whose start
    -- this role may not see (another role's, or with track_activities off) holds the sweep
    -- where it is.
    SELECT greatest(since, least(cutoff, min(coalesce(a.xact_start, since)))) INTO reach
      FROM pg_stat_activity a
     WHERE a.pid <> pg_backend_pid() AND a.backend_xid IS NOT NULL
       AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database());
    due := array(SELECT dd.session_id FROM decisions dd
                  WHERE dd.decided_at >= since AND dd.decided_at < cutoff AND dd.status = 'held');
    IF cardinality(due) > 0 THEN
        PERFORM seqroute_lock_accounts(array(SELECT se.account_id FROM sessions se WHERE se.id = ANY (due)));
        -- Read again under the locks: a REPORT or CLOSE may have settled the hold meanwhile.
        FOR d IN SELECT dd.session_id, dd.turn, dd.hold, se.account_id
                   FROM decisions dd JOIN sessions se ON se.id = dd.session_id
                  WHERE dd.decided_at >= since AND dd.decided_at < cutoff AND dd.status = 'held'
                    AND dd.session_id = ANY (due)
                  FOR UPDATE OF dd LOOP
            IF d.hold > 0 THEN
                INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                VALUES ('expiry', d.account_id, d.session_id, d.turn, d.hold);
            END IF;
            UPDATE decisions SET status = 'expired' WHERE session_id = d.session_id AND turn = d.turn;
            UPDATE sessions SET held = held - d.hold, spent = spent + d.hold WHERE id = d.session_id;
            UPDATE accounts SET held = held - d.hold, spent = spent + d.hold, updated_at = now()
             WHERE id = d.account_id;
            n := n + 1;
        END LOOP;
    END IF;
    UPDATE hold_expiry_progress SET swept_to = reach;
    RETURN n;
END $$;

-- Only the ledger's owner (the daemon) runs these.
REVOKE ALL ON FUNCTION seqroute_apply(seqroute_op[]), seqroute_apply(json), seqroute_apply(jsonb),
    seqroute_expire_holds(interval) FROM PUBLIC;
