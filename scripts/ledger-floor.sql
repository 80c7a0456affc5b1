-- The least PostgreSQL can do for one batch of decisions: the rows the SPEC requires (a decision
-- row, its hold, capture and release entries, the session's and the account's totals, the
-- decision's outcome), written by plain statements with constants, in one function call and one
-- transaction as the daemon's batch is. No JSON to decode, no checks, no answers. Loaded by
-- scripts/ledger-floor.sh into a throwaway cluster; floor_batch(s, n) routes and reports turn t
-- of sessions floor-(s·n + 1) … floor-(s·n + n).
CREATE SEQUENCE floor_turn;
INSERT INTO sessions (id, account_id, budget)
SELECT 'floor-' || g, 'default', 1000000000000 FROM generate_series(1, 160000) g;

CREATE FUNCTION floor_batch(s integer, n integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t   integer := nextval('floor_turn');
    ids text[] := array(SELECT 'floor-' || (s * n + g) FROM generate_series(1, n) g);
BEGIN
    INSERT INTO decisions (session_id, turn, policy_version, lambda, pool_id, task, prompt_tokens, features,
                           budget_state, holds, feasible, model, propensity, scores, hold, status)
    SELECT id, t, 'floor', 0.1, 'floor', 'qa', 300, decode(repeat('3e000000', 64), 'hex'),
           '{1,4,50000,0,0,1e12}'::float8[], '{192,1332,13312,13312,1152,16640,497,576,128,384,512}'::bigint[],
           array_fill(true, ARRAY[11]), 'gpt-4-1106-preview', 0.9, array_fill(0.5::float8, ARRAY[11]), 5000, 'held'
      FROM unnest(ids) id;
    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
    SELECT 'hold', 'default', id, t, 5000 FROM unnest(ids) id;
    UPDATE sessions SET held = held + 5000, turns = turns + 1 WHERE id = ANY (ids);
    UPDATE accounts SET held = held + 5000 * n WHERE id = 'default';
    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount)
    SELECT k, 'default', id, t, a FROM unnest(ids) id, (VALUES ('capture', 3000), ('release', 2000)) v (k, a);
    UPDATE decisions SET status = 'reported', cost = 3000, quality = 1, reported_quality = 1, in_tokens = 300,
           out_tokens = 40, reported_at = now(), report_spent = 3000, report_remaining = 100
     WHERE session_id = ANY (ids) AND turn = t;
    UPDATE sessions SET held = held - 5000, spent = spent + 3000 WHERE id = ANY (ids);
    UPDATE accounts SET held = held - 5000 * n, spent = spent + 3000 * n WHERE id = 'default';
END $$;
