-- The money rules of SPEC section 4, applied to a batch of requests in one transaction
-- (group commit). The daemon sends a JSON array of operations and gets one row back per
-- operation, in order. A REPORT answers (v1, v2) as its first answer was, so that a repeat
-- answers the same, and (v4, v5) as the session's current spent and held. Every row of accounts and sessions that the batch touches is locked up
-- front in one global order (accounts by id, then sessions by id), so that batches from
-- several daemons never deadlock and a hot account row is locked once per batch.

CREATE TYPE seqroute_result AS (
    status  text,
    v1      bigint,
    v2      bigint,
    v3      bigint,
    v4      bigint,
    v5      bigint,
    v6      bigint,
    d1      double precision,
    info    text,
    closed  boolean
);

-- Every statement here touches a handful of rows by key. With a young table, or statistics
-- not yet analysed, the planner may pick sequential scans for the cached plans and keep them
-- as the tables grow; turning them off keeps every plan on the primary keys.
CREATE FUNCTION seqroute_apply(ops jsonb) RETURNS SETOF seqroute_result
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    op      jsonb;
    s       sessions%ROWTYPE;
    d       decisions%ROWTYPE;
    r       seqroute_result;
    kind    text;
    hold    bigint;
    cost    bigint;
    t       integer;
    sids    text[];
    -- The batch's accounts, kept here and written back once at the end: a hot account row
    -- is then read and written once per batch, not once per request.
    acc_ids   text[];
    acc_cap   bigint[];
    acc_spent bigint[];
    acc_held  bigint[];
    ai      integer;
BEGIN
    -- unnest() joins, not "= ANY": they keep the plans on the primary keys as tables grow.
    SELECT array_agg(DISTINCT x->>'s') INTO sids FROM jsonb_array_elements(ops) x;
    SELECT array_agg(DISTINCT id ORDER BY id) INTO acc_ids FROM (
        SELECT se.account_id AS id FROM unnest(sids) AS u (id) JOIN sessions se ON se.id = u.id
        UNION
        SELECT x->>'a' FROM jsonb_array_elements(ops) x WHERE x->>'k' = 'open') q;
    PERFORM 1 FROM unnest(acc_ids) AS u (id) JOIN accounts a ON a.id = u.id ORDER BY a.id FOR UPDATE OF a;
    PERFORM 1 FROM unnest(sids) AS u (id) JOIN sessions se ON se.id = u.id ORDER BY se.id FOR UPDATE OF se;
    -- Accounts that do not exist drop out here (an OPEN naming one is refused below).
    SELECT array_agg(a.id ORDER BY a.id), array_agg(a.cap ORDER BY a.id), array_agg(a.spent ORDER BY a.id),
           array_agg(a.held ORDER BY a.id)
      INTO acc_ids, acc_cap, acc_spent, acc_held
      FROM unnest(acc_ids) AS u (id) JOIN accounts a ON a.id = u.id;

    FOR op IN SELECT value FROM jsonb_array_elements(ops) LOOP
        r := ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::seqroute_result;
        kind := op->>'k';

        IF kind = 'open' THEN
            ai := array_position(acc_ids, op->>'a');
            IF ai IS NULL THEN
                r.status := 'unknown_account';
            ELSE
                INSERT INTO sessions (id, account_id, user_id, budget, horizon, lambda)
                VALUES (op->>'s', acc_ids[ai], op->>'u', (op->>'b')::bigint, (op->>'h')::integer,
                        (op->>'l')::double precision)
                ON CONFLICT (id) DO NOTHING;
                IF FOUND THEN
                    r.status := 'ok';
                    r.v1 := (op->>'b')::bigint;
                    r.v2 := acc_cap[ai] - acc_spent[ai] - acc_held[ai];
                ELSE
                    r.status := 'exists';
                END IF;
            END IF;
            RETURN NEXT r;
            CONTINUE;
        END IF;

        SELECT * INTO s FROM sessions WHERE id = op->>'s';
        IF NOT FOUND THEN
            r.status := 'unknown_session';
            RETURN NEXT r;
            CONTINUE;
        END IF;
        ai := array_position(acc_ids, s.account_id);

        IF kind = 'status' THEN
            r.status := 'ok';
            r.v1 := s.budget; r.v2 := s.spent; r.v3 := s.held; r.v4 := s.turns;
            r.v5 := acc_cap[ai] - acc_spent[ai] - acc_held[ai]; r.v6 := s.horizon; r.d1 := s.lambda;
            r.info := s.state; r.closed := s.closed_at IS NOT NULL;

        ELSIF kind = 'route' THEN
            t := (op->>'t')::integer;
            hold := coalesce((op->>'hd')::bigint, 0);
            IF s.closed_at IS NOT NULL THEN
                r.status := 'closed';
            ELSIF s.turns + 1 <> t
               OR (s.state = 'open' AND op->>'m' IS NOT NULL
                   AND (s.spent + s.held + hold > s.budget OR acc_spent[ai] + acc_held[ai] + hold > acc_cap[ai]))
               OR (s.state = 'open' AND op->>'m' IS NULL
                   AND s.spent + s.held + (op->>'mh')::bigint <= s.budget
                   AND acc_spent[ai] + acc_held[ai] + (op->>'mh')::bigint <= acc_cap[ai]) THEN
                -- The daemon decided on an outdated view (another request or daemon moved
                -- money): send the current figures back so that it decides again.
                r.status := 'stale';
                r.v1 := s.budget; r.v2 := s.spent; r.v3 := s.held; r.v4 := s.turns;
                r.v5 := acc_cap[ai] - acc_spent[ai] - acc_held[ai]; r.v6 := s.horizon; r.d1 := s.lambda;
                r.info := s.state; r.closed := false;
            ELSIF s.state = 'open' AND op->>'m' IS NOT NULL THEN
                INSERT INTO decisions (session_id, turn, policy_version, lambda, pool_id, task, prompt_tokens,
                                       features, budget_state, holds, feasible, model, propensity, scores,
                                       hold, status)
                VALUES (s.id, t, op->>'pv', (op->>'l')::double precision, op->>'pool', op->>'task',
                        (op->>'pt')::integer, (op->>'f')::real[], (op->>'bs')::double precision[],
                        (op->>'hs')::bigint[], (op->>'fe')::boolean[], op->>'m', (op->>'p')::double precision,
                        (op->>'sc')::double precision[], hold, 'held');
                IF hold > 0 THEN
                    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                    VALUES ('hold', s.account_id, s.id, t, hold);
                END IF;
                UPDATE sessions SET held = held + hold, turns = t WHERE id = s.id;
                acc_held[ai] := acc_held[ai] + hold;
                r.status := 'ok';
                r.v1 := t;
                r.v2 := s.budget - s.spent - s.held - hold;
                r.v3 := acc_cap[ai] - acc_spent[ai] - acc_held[ai];
                r.v4 := hold;
            ELSE
                -- Bankrupt: this turn and every later one get no model.
                INSERT INTO decisions (session_id, turn, policy_version, lambda, pool_id, task, prompt_tokens,
                                       features, budget_state, holds, feasible, hold, status)
                VALUES (s.id, t, op->>'pv', (op->>'l')::double precision, op->>'pool', op->>'task',
                        (op->>'pt')::integer, (op->>'f')::real[], (op->>'bs')::double precision[],
                        (op->>'hs')::bigint[], (op->>'fe')::boolean[], 0, 'bankrupt');
                UPDATE sessions SET state = 'bankrupt', turns = t WHERE id = s.id;
                r.status := 'bankrupt';
                r.v1 := t;
                r.v2 := s.budget - s.spent - s.held;
                r.v3 := acc_cap[ai] - acc_spent[ai] - acc_held[ai];
            END IF;

        ELSIF kind = 'report' THEN
            t := (op->>'t')::integer;
            cost := (op->>'c')::bigint;
            SELECT * INTO d FROM decisions WHERE session_id = s.id AND turn = t;
            IF NOT FOUND OR d.status = 'bankrupt' THEN
                r.status := 'unknown_turn';
            ELSIF d.status = 'reported' THEN
                IF d.cost = cost AND d.quality IS NOT DISTINCT FROM (op->>'q')::double precision THEN
                    r.status := 'ok';
                    r.v1 := d.report_spent; r.v2 := d.report_remaining;
                    r.v3 := acc_cap[ai] - acc_spent[ai] - acc_held[ai];
                    r.v4 := s.spent; r.v5 := s.held;
                ELSE
                    r.status := 'conflict';
                    r.v1 := d.cost;
                END IF;
            ELSIF d.status = 'expired' THEN
                r.status := 'expired';
                r.v1 := d.hold;
            ELSE
                -- held: capture up to the hold, release the rest, record any excess as overrun.
                -- released (the session was closed first): nothing is held any more, so the
                -- whole cost is an overrun; the ledger tells the truth about spend.
                IF d.status = 'held' THEN
                    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                    SELECT e.kind, s.account_id, s.id, t, e.amount
                      FROM (VALUES ('capture', least(cost, d.hold)), ('release', d.hold - cost),
                                   ('overrun', cost - d.hold)) AS e (kind, amount)
                     WHERE e.amount > 0;
                    s.held := s.held - d.hold;
                    acc_held[ai] := acc_held[ai] - d.hold;
                ELSIF cost > 0 THEN
                    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                    VALUES ('overrun', s.account_id, s.id, t, cost);
                END IF;
                s.spent := s.spent + cost;
                acc_spent[ai] := acc_spent[ai] + cost;
                UPDATE sessions SET spent = s.spent, held = s.held WHERE id = s.id;
                UPDATE decisions
                   SET status = 'reported', cost = (op->>'c')::bigint, quality = (op->>'q')::double precision,
                       in_tokens = (op->>'i')::integer, out_tokens = (op->>'o')::integer, reported_at = now(),
                       report_spent = s.spent, report_remaining = s.budget - s.spent - s.held
                 WHERE session_id = s.id AND turn = t;
                r.status := 'ok';
                r.v1 := s.spent; r.v2 := s.budget - s.spent - s.held;
                r.v3 := acc_cap[ai] - acc_spent[ai] - acc_held[ai];
                r.v4 := s.spent; r.v5 := s.held;
            END IF;

        ELSIF kind = 'feedback' THEN
            t := (op->>'t')::integer;
            UPDATE decisions SET quality = (op->>'q')::double precision
             WHERE session_id = s.id AND turn = t AND status <> 'bankrupt';
            r.status := CASE WHEN FOUND THEN 'ok' ELSE 'unknown_turn' END;

        ELSIF kind = 'close' THEN
            IF s.closed_at IS NULL THEN
                IF s.held > 0 THEN
                    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                    SELECT 'release', s.account_id, s.id, dd.turn, dd.hold
                      FROM decisions dd WHERE dd.session_id = s.id AND dd.status = 'held' AND dd.hold > 0;
                    UPDATE decisions SET status = 'released' WHERE session_id = s.id AND status = 'held';
                    acc_held[ai] := acc_held[ai] - s.held;
                END IF;
                UPDATE sessions
                   SET held = 0, closed_at = now(),
                       state = CASE WHEN state = 'bankrupt' THEN 'bankrupt' ELSE 'closed' END
                 WHERE id = s.id;
            END IF;
            r.status := 'ok';
            r.v1 := s.spent; r.v2 := s.turns; r.v3 := acc_cap[ai] - acc_spent[ai] - acc_held[ai];

        ELSE
            RAISE EXCEPTION 'seqroute_apply: unknown operation %', kind;
        END IF;
        RETURN NEXT r;
    END LOOP;

    UPDATE accounts a
       SET spent = u.spent, held = u.held, updated_at = now()
      FROM unnest(acc_ids, acc_spent, acc_held) AS u (id, spent, held)
     WHERE a.id = u.id AND (a.spent <> u.spent OR a.held <> u.held);
END $$;

-- Money rule 3: holds not reported within max_age are captured at their full amount.
CREATE FUNCTION seqroute_expire_holds(max_age interval) RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    d   record;
    n   integer := 0;
BEGIN
    PERFORM 1 FROM accounts
     WHERE id IN (SELECT se.account_id FROM sessions se JOIN decisions dd ON dd.session_id = se.id
                   WHERE dd.status = 'held' AND dd.decided_at < now() - max_age)
     ORDER BY id FOR UPDATE;
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
