-- The functions behind the money rules (SPEC section 4); the batch format and the order of
-- work are described in 002_operations.sql. Replaced whole (CREATE OR REPLACE) whenever this
-- file changes: `seqroute migrate` records its SHA-256 in schema_definitions. The batch's
-- temporary table carries a version in its name, so that a connection that still holds the
-- table of an older definition gets a fresh one.

-- Every statement here touches a handful of rows by key, driven by the small batch table.
-- The planner cannot know how small that table is (its statistics are never analysed), and
-- would rather hash a young sessions or decisions table whole than probe it by key, a choice
-- whose cost grows with the log. Nested loops only, then: the batch drives, the big tables
-- are probed by key. No bitmap scans either: they would AND the session's key with the
-- partial index of open holds, whose dead entries pile up between vacuums. Plans are made
-- once (generic), not for every batch. And no JIT: compiling these statements costs more
-- than running them.
CREATE OR REPLACE FUNCTION seqroute_apply(ops jsonb) RETURNS SETOF seqroute_result
LANGUAGE plpgsql
SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    rounds  integer;
    -- The kinds of operation present in the round: statements for absent kinds are skipped.
    kinds   text[];
    this_round integer;
    -- The accounts of the batch's sessions and OPENs.
    touched text[];
BEGIN
    -- The batch, decoded once into a temporary table that lives as long as the connection.
    -- It is emptied with DELETE, not TRUNCATE (nor ON COMMIT DELETE ROWS, which truncates):
    -- a truncation invalidates every cached plan of this function. Only when the dead rows
    -- have grown the table past 1 MB is it truncated, and the plans made again.
    IF to_regclass('pg_temp.seqroute_batch_v2') IS NULL THEN
    CREATE TEMP TABLE seqroute_batch_v2 (
        n integer PRIMARY KEY, rnd integer, k text, s text,
        a text, u text, b bigint, h integer, l double precision,      -- open (and route's λ)
        t integer, m text, hd bigint, mh bigint, pv text, pool text, task text, pt integer,
        f real[], bs double precision[], hs bigint[], fe boolean[], p double precision,
        sc double precision[], pu bigint,                                 -- route
        c bigint, q double precision, i integer, o integer,             -- report, feedback
        account text, dstatus text, dhold bigint,                       -- looked up
        res seqroute_result
    );
    ELSIF pg_relation_size('pg_temp.seqroute_batch_v2') > 1048576 THEN
        TRUNCATE seqroute_batch_v2;
    ELSE
        DELETE FROM seqroute_batch_v2;
    END IF;

    INSERT INTO seqroute_batch_v2 (n, rnd, k, s, a, u, b, h, l, t, m, hd, mh, pv, pool, task, pt, f, bs, hs, fe,
                                p, sc, pu, c, q, i, o)
    SELECT e.n, row_number() OVER (PARTITION BY e.x->>'s' ORDER BY e.n), e.x->>'k', e.x->>'s', e.x->>'a',
           e.x->>'u', (e.x->>'b')::bigint, (e.x->>'h')::integer, (e.x->>'l')::double precision,
           (e.x->>'t')::integer, e.x->>'m', (e.x->>'hd')::bigint, (e.x->>'mh')::bigint, e.x->>'pv',
           e.x->>'pool', e.x->>'task', (e.x->>'pt')::integer, (e.x->>'f')::real[],
           (e.x->>'bs')::double precision[], (e.x->>'hs')::bigint[], (e.x->>'fe')::boolean[],
           (e.x->>'p')::double precision, (e.x->>'sc')::double precision[], (e.x->>'pu')::bigint, (e.x->>'c')::bigint,
           (e.x->>'q')::double precision, (e.x->>'i')::integer, (e.x->>'o')::integer
      FROM jsonb_array_elements(ops) WITH ORDINALITY AS e (x, n);

    touched := array(SELECT se.account_id FROM seqroute_batch_v2 b JOIN sessions se ON se.id = b.s
                     UNION SELECT b.a FROM seqroute_batch_v2 b WHERE b.k = 'open');
    PERFORM 1 FROM accounts a WHERE a.id = ANY (touched) ORDER BY a.id FOR UPDATE;
    -- A budget period that has ended starts afresh (sql/functions/1_periods.sql).
    PERFORM seqroute_roll_periods(touched);
    PERFORM 1 FROM (SELECT DISTINCT b.s AS id FROM seqroute_batch_v2 b) x JOIN sessions se ON se.id = x.id
     ORDER BY se.id FOR UPDATE OF se;

    SELECT max(b.rnd) INTO rounds FROM seqroute_batch_v2 b;
    FOR this_round IN 1..coalesce(rounds, 0) LOOP
        SELECT array_agg(DISTINCT b.k) INTO kinds FROM seqroute_batch_v2 b WHERE b.rnd = this_round;

        -- OPEN
        IF 'open' = ANY (kinds) THEN
            WITH made AS (
                INSERT INTO sessions (id, account_id, user_id, budget, horizon, lambda)
                SELECT b.s, b.a, b.u, b.b, b.h, b.l
                  FROM seqroute_batch_v2 b JOIN accounts a ON a.id = b.a
                 WHERE b.rnd = this_round AND b.k = 'open'
                ON CONFLICT (id) DO NOTHING
                RETURNING id)
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, CASE WHEN made.id IS NOT NULL THEN 'ok'
                                       WHEN a.id IS NULL THEN 'unknown_account' ELSE 'exists' END,
                             NULL, b.b, 0, 0, NULL, b.h, b.l, 'open', false, NULL, NULL, NULL)::seqroute_result,
                   account = b.a
              FROM seqroute_batch_v2 b2 LEFT JOIN made ON made.id = b2.s LEFT JOIN accounts a ON a.id = b2.a
             WHERE b.n = b2.n AND b.rnd = this_round AND b.k = 'open';
        END IF;

        -- Everything else needs its session; note its account.
        UPDATE seqroute_batch_v2 b SET account = se.account_id
          FROM sessions se WHERE se.id = b.s AND b.rnd = this_round AND b.k <> 'open';
        UPDATE seqroute_batch_v2 b
           SET res = ROW(b.n, 'unknown_session', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                         NULL, NULL)::seqroute_result
         WHERE b.rnd = this_round AND b.k <> 'open' AND b.account IS NULL;

        -- STATUS
        IF 'status' = ANY (kinds) THEN
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, 'ok', se.turns, se.budget, se.spent, se.held, NULL, se.horizon, se.lambda, se.state,
                             se.closed_at IS NOT NULL, NULL, NULL, NULL)::seqroute_result
              FROM sessions se
             WHERE se.id = b.s AND b.rnd = this_round AND b.k = 'status';
        END IF;

        -- FEEDBACK: quality that arrives after the report.
        IF 'feedback' = ANY (kinds) THEN
            WITH fed AS (
                UPDATE decisions d SET quality = b.q
                  FROM seqroute_batch_v2 b
                 WHERE b.rnd = this_round AND b.k = 'feedback' AND b.account IS NOT NULL
                   AND d.session_id = b.s AND d.turn = b.t AND d.status <> 'bankrupt'
                RETURNING b.n)
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, CASE WHEN fed.n IS NULL THEN 'unknown_turn' ELSE 'ok' END, NULL, NULL, NULL, NULL,
                             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::seqroute_result
              FROM seqroute_batch_v2 b2 LEFT JOIN fed ON fed.n = b2.n
             WHERE b.n = b2.n AND b.rnd = this_round AND b.k = 'feedback' AND b.account IS NOT NULL;
        END IF;

        -- REPORT. A held turn: capture up to the hold, release the rest, record any excess as
        -- an overrun. A released turn (the session was closed first): nothing is held any more,
        -- so the whole cost is an overrun; the ledger tells the truth about spend.
        IF 'report' = ANY (kinds) THEN
            UPDATE seqroute_batch_v2 b SET dstatus = d.status, dhold = d.hold
              FROM decisions d
             WHERE b.rnd = this_round AND b.k = 'report' AND b.account IS NOT NULL AND d.session_id = b.s AND d.turn = b.t;
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n,
                             CASE WHEN b.dstatus IS NULL OR b.dstatus = 'bankrupt' THEN 'unknown_turn'
                                  WHEN b.dstatus = 'expired' THEN 'expired'
                                  WHEN d.cost = b.c AND d.reported_quality IS NOT DISTINCT FROM b.q THEN 'ok'
                                  ELSE 'conflict' END,
                             b.t, NULL, se.spent, se.held, d.hold, NULL, NULL, NULL, NULL,
                             d.report_spent, d.report_remaining, NULL)::seqroute_result
              FROM sessions se, decisions d
             WHERE se.id = b.s AND d.session_id = b.s AND d.turn = b.t
               AND b.rnd = this_round AND b.k = 'report' AND b.account IS NOT NULL
               AND (b.dstatus IS DISTINCT FROM 'held' AND b.dstatus IS DISTINCT FROM 'released');
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, 'unknown_turn', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                             NULL)::seqroute_result
             WHERE b.rnd = this_round AND b.k = 'report' AND b.account IS NOT NULL AND b.dstatus IS NULL;

            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
            SELECT e.kind, b.account, b.s, b.t, e.amount
              FROM seqroute_batch_v2 b
             CROSS JOIN LATERAL (VALUES
                    ('capture', CASE WHEN b.dstatus = 'held' THEN least(b.c, b.dhold) ELSE 0 END),
                    ('release', CASE WHEN b.dstatus = 'held' THEN b.dhold - b.c ELSE 0 END),
                    ('overrun', CASE WHEN b.dstatus = 'held' THEN b.c - b.dhold ELSE b.c END)) AS e (kind, amount)
             WHERE b.rnd = this_round AND b.k = 'report' AND b.dstatus IN ('held', 'released') AND e.amount > 0
             ORDER BY b.n;
            WITH moved AS (
                UPDATE sessions se
                   SET spent = se.spent + b.c,
                       held = se.held - CASE WHEN b.dstatus = 'held' THEN b.dhold ELSE 0 END
                  FROM seqroute_batch_v2 b
                 WHERE se.id = b.s AND b.rnd = this_round AND b.k = 'report' AND b.dstatus IN ('held', 'released')
                RETURNING b.n, se.budget, se.spent, se.held)
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, 'ok', b.t, moved.budget, moved.spent, moved.held, b.dhold, NULL, NULL, NULL, NULL,
                             moved.spent, moved.budget - moved.spent - moved.held, NULL)::seqroute_result
              FROM moved WHERE moved.n = b.n;
            UPDATE decisions d
               SET status = 'reported', cost = b.c, quality = coalesce(b.q, d.quality), reported_quality = b.q,
                       in_tokens = b.i, out_tokens = b.o,
                   reported_at = now(), report_spent = (b.res).answer_spent,
                   report_remaining = (b.res).answer_remaining
              FROM seqroute_batch_v2 b
             WHERE b.rnd = this_round AND b.k = 'report' AND b.dstatus IN ('held', 'released')
               AND d.session_id = b.s AND d.turn = b.t;
            UPDATE accounts a
               SET spent = a.spent + x.spent, held = a.held - x.released, updated_at = now()
              FROM (SELECT b.account, sum(b.c) AS spent,
                           sum(CASE WHEN b.dstatus = 'held' THEN b.dhold ELSE 0 END) AS released
                      FROM seqroute_batch_v2 b
                     WHERE b.rnd = this_round AND b.k = 'report' AND b.dstatus IN ('held', 'released')
                     GROUP BY b.account) x
             WHERE a.id = x.account;
        END IF;

        -- CLOSE releases the session's open holds; closing twice answers the same.
        IF 'close' = ANY (kinds) THEN
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
            SELECT 'release', b.account, b.s, d.turn, d.hold
              FROM seqroute_batch_v2 b JOIN sessions se ON se.id = b.s
              JOIN decisions d ON d.session_id = b.s AND d.status = 'held'
             WHERE b.rnd = this_round AND b.k = 'close' AND se.closed_at IS NULL AND se.held > 0 AND d.hold > 0
             ORDER BY b.n, d.turn;
            UPDATE decisions d SET status = 'released'
              FROM seqroute_batch_v2 b JOIN sessions se ON se.id = b.s
             WHERE b.rnd = this_round AND b.k = 'close' AND se.closed_at IS NULL
               AND d.session_id = b.s AND d.status = 'held';
            UPDATE accounts a
               SET held = a.held - x.released, updated_at = now()
              FROM (SELECT b.account, sum(se.held) AS released
                      FROM seqroute_batch_v2 b JOIN sessions se ON se.id = b.s
                     WHERE b.rnd = this_round AND b.k = 'close' AND se.closed_at IS NULL AND se.held > 0
                     GROUP BY b.account) x
             WHERE a.id = x.account;
            UPDATE sessions se
               SET held = 0, closed_at = now(), state = CASE WHEN se.state = 'bankrupt' THEN 'bankrupt' ELSE 'closed' END
              FROM seqroute_batch_v2 b
             WHERE se.id = b.s AND b.rnd = this_round AND b.k = 'close' AND se.closed_at IS NULL;
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, 'ok', se.turns, se.budget, se.spent, 0, NULL, NULL, NULL, se.state, true, NULL,
                             NULL, NULL)::seqroute_result
              FROM sessions se
             WHERE se.id = b.s AND b.rnd = this_round AND b.k = 'close';
        END IF;

        -- ROUTE. A hold is admitted only if it fits the session and the account, counting the
        -- holds admitted before it in this round (cumulative per account, in arrival order).
        -- A route decided on an outdated view (wrong turn, or money moved since) is answered
        -- 'stale' with the current figures, and the daemon decides again. A route without a
        -- model asks to record a bankrupt turn; it is stale too if the cheapest hold fits.
        IF 'route' = ANY (kinds) THEN
            WITH r AS (
                SELECT b.n, b.account, se.closed_at IS NOT NULL AS closed, se.state,
                       se.turns + 1 = b.t AS turn_ok,
                       se.spent + se.held + b.hd <= se.budget AS fits_session,
                       se.spent + se.held + b.mh <= se.budget AND a.spent + a.held + b.mh <= a.cap AS cheapest_fits,
                       a.spent + a.held AS account_used, a.cap, b.m, b.hd
                  FROM seqroute_batch_v2 b JOIN sessions se ON se.id = b.s JOIN accounts a ON a.id = se.account_id
                 WHERE b.rnd = this_round AND b.k = 'route'
            ), c AS (
                SELECT r.*,
                       r.m IS NOT NULL AND r.state = 'open' AND NOT r.closed AND r.turn_ok AND r.fits_session AS candidate
                  FROM r
            ), w AS (
                SELECT c.*,
                       sum(CASE WHEN c.candidate THEN c.hd ELSE 0 END)
                           OVER (PARTITION BY c.account ORDER BY c.n) AS cumulative
                  FROM c
            )
            UPDATE seqroute_batch_v2 b
               SET dstatus = CASE
                       WHEN w.closed THEN 'closed'
                       WHEN NOT w.turn_ok THEN 'stale'
                       WHEN w.state = 'bankrupt' THEN 'bankrupt'
                       WHEN w.m IS NULL THEN CASE WHEN w.cheapest_fits THEN 'stale' ELSE 'bankrupt' END
                       WHEN w.candidate AND w.account_used + w.cumulative <= w.cap THEN 'ok'
                       ELSE 'stale' END
              FROM w WHERE w.n = b.n;

            INSERT INTO decisions (session_id, turn, policy_version, lambda, pool_id, task, prompt_tokens, features,
                                   budget_state, holds, feasible, model, propensity, scores, hold, status, peer_uid)
            SELECT b.s, b.t, b.pv, b.l, b.pool, b.task, b.pt, b.f, b.bs, b.hs, b.fe,
                   CASE WHEN b.dstatus = 'ok' THEN b.m END, CASE WHEN b.dstatus = 'ok' THEN b.p END,
                   CASE WHEN b.dstatus = 'ok' THEN b.sc END, CASE WHEN b.dstatus = 'ok' THEN b.hd ELSE 0 END,
                   CASE WHEN b.dstatus = 'ok' THEN 'held' ELSE 'bankrupt' END, b.pu
              FROM seqroute_batch_v2 b
             WHERE b.rnd = this_round AND b.k = 'route' AND b.dstatus IN ('ok', 'bankrupt')
             ORDER BY b.n;
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
            SELECT 'hold', b.account, b.s, b.t, b.hd
              FROM seqroute_batch_v2 b
             WHERE b.rnd = this_round AND b.k = 'route' AND b.dstatus = 'ok' AND b.hd > 0
             ORDER BY b.n;
            UPDATE sessions se
               SET held = se.held + CASE WHEN b.dstatus = 'ok' THEN b.hd ELSE 0 END, turns = b.t,
                   state = CASE WHEN b.dstatus = 'bankrupt' THEN 'bankrupt' ELSE se.state END
              FROM seqroute_batch_v2 b
             WHERE se.id = b.s AND b.rnd = this_round AND b.k = 'route' AND b.dstatus IN ('ok', 'bankrupt');
            UPDATE accounts a
               SET held = a.held + x.held, updated_at = now()
              FROM (SELECT b.account, sum(b.hd) AS held FROM seqroute_batch_v2 b
                     WHERE b.rnd = this_round AND b.k = 'route' AND b.dstatus = 'ok' GROUP BY b.account) x
             WHERE a.id = x.account;
            UPDATE seqroute_batch_v2 b
               SET res = ROW(b.n, b.dstatus, CASE WHEN b.dstatus IN ('ok', 'bankrupt') THEN b.t ELSE se.turns END,
                             se.budget, se.spent, se.held, CASE WHEN b.dstatus = 'ok' THEN b.hd END, se.horizon,
                             se.lambda, se.state, se.closed_at IS NOT NULL, NULL, NULL, NULL)::seqroute_result
              FROM sessions se
             WHERE se.id = b.s AND b.rnd = this_round AND b.k = 'route' AND b.account IS NOT NULL;
        END IF;
    END LOOP;

    RETURN QUERY
        SELECT (b.res).n, (b.res).status, (b.res).turn, (b.res).budget, (b.res).spent, (b.res).held, (b.res).hold,
               (b.res).horizon, (b.res).lambda, (b.res).state, (b.res).closed, (b.res).answer_spent,
               (b.res).answer_remaining, a.cap - a.spent - a.held
          FROM seqroute_batch_v2 b LEFT JOIN accounts a ON a.id = b.account
         ORDER BY b.n;
END $$;

-- Money rule 3: holds not reported within max_age are captured at their full amount.
CREATE OR REPLACE FUNCTION seqroute_expire_holds(max_age interval) RETURNS integer
LANGUAGE plpgsql
SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    d   record;
    n   integer := 0;
BEGIN
    PERFORM 1 FROM accounts
     WHERE id IN (SELECT se.account_id FROM sessions se JOIN decisions dd ON dd.session_id = se.id
                   WHERE dd.status = 'held' AND dd.decided_at < now() - max_age)
     ORDER BY id FOR UPDATE;
    PERFORM seqroute_roll_periods(array(SELECT se.account_id FROM sessions se JOIN decisions dd ON dd.session_id = se.id
                                         WHERE dd.status = 'held' AND dd.decided_at < now() - max_age));
    PERFORM 1 FROM sessions
     WHERE id IN (SELECT dd.session_id FROM decisions dd
                   WHERE dd.status = 'held' AND dd.decided_at < now() - max_age)
     ORDER BY id FOR UPDATE;
    FOR d IN SELECT dd.session_id, dd.turn, dd.hold, se.account_id
               FROM decisions dd JOIN sessions se ON se.id = dd.session_id
              WHERE dd.status = 'held' AND dd.decided_at < now() - max_age
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
    RETURN n;
END $$;

-- Only the ledger's owner (the daemon) runs these.
REVOKE ALL ON FUNCTION seqroute_apply(jsonb), seqroute_expire_holds(interval) FROM PUBLIC;
