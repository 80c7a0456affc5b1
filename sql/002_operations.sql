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

CREATE FUNCTION seqroute_apply(ops jsonb) RETURNS SETOF seqroute_result
LANGUAGE plpgsql AS $$
DECLARE
    op      jsonb;
    s       sessions%ROWTYPE;
    a       accounts%ROWTYPE;
    d       decisions%ROWTYPE;
    r       seqroute_result;
    kind    text;
    hold    bigint;
    cost    bigint;
    t       integer;
BEGIN
    PERFORM 1 FROM accounts
     WHERE id IN (SELECT se.account_id FROM sessions se
                   WHERE se.id IN (SELECT x->>'s' FROM jsonb_array_elements(ops) x)
                  UNION
                  SELECT x->>'a' FROM jsonb_array_elements(ops) x WHERE x->>'k' = 'open')
     ORDER BY id FOR UPDATE;
    PERFORM 1 FROM sessions
     WHERE id IN (SELECT x->>'s' FROM jsonb_array_elements(ops) x)
     ORDER BY id FOR UPDATE;

    FOR op IN SELECT value FROM jsonb_array_elements(ops) LOOP
        r := ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::seqroute_result;
        kind := op->>'k';

        IF kind = 'open' THEN
            IF EXISTS (SELECT 1 FROM sessions WHERE id = op->>'s') THEN
                r.status := 'exists';
            ELSE
                SELECT * INTO a FROM accounts WHERE id = op->>'a';
                IF NOT FOUND THEN
                    r.status := 'unknown_account';
                ELSE
                    INSERT INTO sessions (id, account_id, user_id, budget, horizon, lambda)
                    VALUES (op->>'s', a.id, op->>'u', (op->>'b')::bigint, (op->>'h')::integer,
                            (op->>'l')::double precision);
                    r.status := 'ok';
                    r.v1 := (op->>'b')::bigint;
                    r.v2 := a.cap - a.spent - a.held;
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
        SELECT * INTO a FROM accounts WHERE id = s.account_id;

        IF kind = 'status' THEN
            r.status := 'ok';
            r.v1 := s.budget; r.v2 := s.spent; r.v3 := s.held; r.v4 := s.turns;
            r.v5 := a.cap - a.spent - a.held; r.v6 := s.horizon; r.d1 := s.lambda;
            r.info := s.state; r.closed := s.closed_at IS NOT NULL;

        ELSIF kind = 'route' THEN
            t := (op->>'t')::integer;
            hold := coalesce((op->>'hd')::bigint, 0);
            IF s.closed_at IS NOT NULL THEN
                r.status := 'closed';
            ELSIF s.turns + 1 <> t
               OR (s.state = 'open' AND op->>'m' IS NOT NULL
                   AND (s.spent + s.held + hold > s.budget OR a.spent + a.held + hold > a.cap))
               OR (s.state = 'open' AND op->>'m' IS NULL
                   AND s.spent + s.held + (op->>'mh')::bigint <= s.budget
                   AND a.spent + a.held + (op->>'mh')::bigint <= a.cap) THEN
                -- The daemon decided on an outdated view (another request or daemon moved
                -- money): send the current figures back so that it decides again.
                r.status := 'stale';
                r.v1 := s.budget; r.v2 := s.spent; r.v3 := s.held; r.v4 := s.turns;
                r.v5 := a.cap - a.spent - a.held; r.v6 := s.horizon; r.d1 := s.lambda;
                r.info := s.state; r.closed := false;
            ELSE
                INSERT INTO decisions (session_id, turn, policy_version, lambda, pool_id, task, prompt_tokens,
                                       features, budget_state, holds, feasible, model, propensity, scores,
                                       hold, status)
                VALUES (s.id, t, op->>'pv', (op->>'l')::double precision, op->>'pool', op->>'task',
                        (op->>'pt')::integer, (op->>'f')::real[], (op->>'bs')::double precision[],
                        (op->>'hs')::bigint[], (op->>'fe')::boolean[],
                        CASE WHEN s.state = 'open' THEN op->>'m' END,
                        CASE WHEN s.state = 'open' THEN (op->>'p')::double precision END,
                        CASE WHEN s.state = 'open' THEN (op->>'sc')::double precision[] END,
                        CASE WHEN s.state = 'open' AND op->>'m' IS NOT NULL THEN hold ELSE 0 END,
                        CASE WHEN s.state = 'open' AND op->>'m' IS NOT NULL THEN 'held' ELSE 'bankrupt' END);
                IF s.state = 'open' AND op->>'m' IS NOT NULL THEN
                    IF hold > 0 THEN
                        INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                        VALUES ('hold', a.id, s.id, t, hold);
                    END IF;
                    UPDATE sessions SET held = held + hold, turns = t WHERE id = s.id;
                    UPDATE accounts SET held = held + hold, updated_at = now() WHERE id = a.id;
                    r.status := 'ok';
                    r.v1 := t;
                    r.v2 := s.budget - s.spent - s.held - hold;
                    r.v3 := a.cap - a.spent - a.held - hold;
                    r.v4 := hold;
                ELSE
                    UPDATE sessions SET state = 'bankrupt', turns = t WHERE id = s.id;
                    r.status := 'bankrupt';
                    r.v1 := t;
                    r.v2 := s.budget - s.spent - s.held;
                    r.v3 := a.cap - a.spent - a.held;
                END IF;
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
                    r.v1 := d.report_spent; r.v2 := d.report_remaining; r.v3 := a.cap - a.spent - a.held;
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
                    IF least(cost, d.hold) > 0 THEN
                        INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                        VALUES ('capture', a.id, s.id, t, least(cost, d.hold));
                    END IF;
                    IF d.hold > cost THEN
                        INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                        VALUES ('release', a.id, s.id, t, d.hold - cost);
                    END IF;
                    IF cost > d.hold THEN
                        INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                        VALUES ('overrun', a.id, s.id, t, cost - d.hold);
                    END IF;
                    s.held := s.held - d.hold;
                    a.held := a.held - d.hold;
                ELSIF cost > 0 THEN
                    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                    VALUES ('overrun', a.id, s.id, t, cost);
                END IF;
                s.spent := s.spent + cost;
                a.spent := a.spent + cost;
                UPDATE sessions SET spent = s.spent, held = s.held WHERE id = s.id;
                UPDATE accounts SET spent = a.spent, held = a.held, updated_at = now() WHERE id = a.id;
                UPDATE decisions
                   SET status = 'reported', cost = (op->>'c')::bigint, quality = (op->>'q')::double precision,
                       in_tokens = (op->>'i')::integer, out_tokens = (op->>'o')::integer, reported_at = now(),
                       report_spent = s.spent, report_remaining = s.budget - s.spent - s.held
                 WHERE session_id = s.id AND turn = t;
                r.status := 'ok';
                r.v1 := s.spent; r.v2 := s.budget - s.spent - s.held; r.v3 := a.cap - a.spent - a.held;
                r.v4 := s.spent; r.v5 := s.held;
            END IF;

        ELSIF kind = 'feedback' THEN
            t := (op->>'t')::integer;
            UPDATE decisions SET quality = (op->>'q')::double precision
             WHERE session_id = s.id AND turn = t AND status <> 'bankrupt';
            r.status := CASE WHEN FOUND THEN 'ok' ELSE 'unknown_turn' END;

        ELSIF kind = 'close' THEN
            IF s.closed_at IS NULL THEN
                INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
                SELECT 'release', a.id, s.id, dd.turn, dd.hold
                  FROM decisions dd WHERE dd.session_id = s.id AND dd.status = 'held' AND dd.hold > 0;
                UPDATE decisions SET status = 'released' WHERE session_id = s.id AND status = 'held';
                UPDATE accounts SET held = held - s.held, updated_at = now() WHERE id = a.id;
                a.held := a.held - s.held;
                UPDATE sessions
                   SET held = 0, closed_at = now(),
                       state = CASE WHEN state = 'bankrupt' THEN 'bankrupt' ELSE 'closed' END
                 WHERE id = s.id;
            END IF;
            r.status := 'ok';
            r.v1 := s.spent; r.v2 := s.turns; r.v3 := a.cap - a.spent - a.held;

        ELSE
            RAISE EXCEPTION 'seqroute_apply: unknown operation %', kind;
        END IF;
        RETURN NEXT r;
    END LOOP;
END $$;

-- Money rule 3: holds not reported within max_age are captured at their full amount.
CREATE FUNCTION seqroute_expire_holds(max_age interval) RETURNS integer
LANGUAGE plpgsql AS $$
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
