-- What finance reads: the reconciliation query and views, for the read-only role
-- seqroute_auditor.

-- Money rule 4. spent = captures + expiries + overruns; held = holds - captures - releases -
-- expiries, for every session, every account and every decision; and no entry without its
-- session. Returns no rows when the ledger reconciles.
CREATE VIEW reconciliation AS
WITH per_session AS (
    SELECT session_id,
           sum(amount) FILTER (WHERE kind IN ('capture', 'expiry', 'overrun')) AS spent,
           sum(CASE kind WHEN 'hold' THEN amount WHEN 'capture' THEN -amount
                         WHEN 'release' THEN -amount WHEN 'expiry' THEN -amount ELSE 0 END) AS held
      FROM ledger_entries GROUP BY session_id
), per_account AS (
    SELECT account_id,
           sum(amount) FILTER (WHERE kind IN ('capture', 'expiry', 'overrun')) AS spent,
           sum(CASE kind WHEN 'hold' THEN amount WHEN 'capture' THEN -amount
                         WHEN 'release' THEN -amount WHEN 'expiry' THEN -amount ELSE 0 END) AS held
      FROM ledger_entries GROUP BY account_id
), per_decision AS (
    SELECT session_id, turn,
           sum(CASE kind WHEN 'hold' THEN amount WHEN 'capture' THEN -amount
                         WHEN 'release' THEN -amount WHEN 'expiry' THEN -amount ELSE 0 END) AS held
      FROM ledger_entries GROUP BY session_id, turn
)
SELECT 'session' AS kind, s.id AS id, s.spent AS recorded_spent, coalesce(e.spent, 0) AS ledger_spent,
       s.held AS recorded_held, coalesce(e.held, 0) AS ledger_held
  FROM sessions s LEFT JOIN per_session e ON e.session_id = s.id
 WHERE s.spent <> coalesce(e.spent, 0) OR s.held <> coalesce(e.held, 0)
UNION ALL
SELECT 'account', a.id, a.spent, coalesce(e.spent, 0), a.held, coalesce(e.held, 0)
  FROM accounts a LEFT JOIN per_account e ON e.account_id = a.id
 WHERE a.period = 'none' AND (a.spent <> coalesce(e.spent, 0) OR a.held <> coalesce(e.held, 0))
UNION ALL
SELECT 'decision', d.session_id || '#' || d.turn, NULL, NULL,
       CASE WHEN d.status = 'held' THEN d.hold ELSE 0 END, coalesce(e.held, 0)
  FROM decisions d LEFT JOIN per_decision e ON e.session_id = d.session_id AND e.turn = d.turn
 WHERE CASE WHEN d.status = 'held' THEN d.hold ELSE 0 END <> coalesce(e.held, 0)
UNION ALL
SELECT 'orphan', e.session_id || '#' || e.turn, NULL, e.amount, NULL, NULL
  FROM ledger_entries e LEFT JOIN sessions s ON s.id = e.session_id AND s.account_id = e.account_id
 WHERE s.id IS NULL;

-- Spend by day, account, user and model (captures, expiries and overruns).
CREATE VIEW audit_spend_daily AS
SELECT (e.at AT TIME ZONE 'UTC')::date AS day, e.account_id, s.user_id, d.model,
       sum(e.amount) AS spent_micros, count(DISTINCT (e.session_id, e.turn)) AS turns
  FROM ledger_entries e
  JOIN sessions s ON s.id = e.session_id
  LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
 WHERE e.kind IN ('capture', 'expiry', 'overrun')
 GROUP BY 1, 2, 3, 4;

CREATE VIEW audit_budget_status AS
SELECT id AS account_id, cap, spent, held, cap - spent - held AS remaining,
       CASE WHEN cap > 0 THEN round(100.0 * (spent + held) / cap, 2) END AS utilisation_pct,
       period, updated_at
  FROM accounts;

CREATE VIEW audit_sessions AS
SELECT s.id AS session_id, s.account_id, s.user_id, s.budget, s.spent, s.held, s.turns, s.state,
       s.opened_at, s.closed_at,
       (SELECT count(*) FROM decisions d WHERE d.session_id = s.id AND d.status = 'bankrupt') AS unserved_turns,
       (SELECT avg(d.quality) FROM decisions d WHERE d.session_id = s.id) AS mean_quality
  FROM sessions s;

CREATE VIEW audit_bankruptcies AS
SELECT s.id AS session_id, s.account_id, s.user_id, s.budget, s.spent,
       min(d.turn) AS first_unserved_turn, s.turns, min(d.decided_at) AS bankrupt_at
  FROM sessions s JOIN decisions d ON d.session_id = s.id AND d.status = 'bankrupt'
 GROUP BY s.id;

CREATE VIEW audit_ledger AS
SELECT id, at, kind, account_id, session_id, turn, amount FROM ledger_entries;

-- Roles belong to the cluster, not the database: another database being migrated at the
-- same moment may create the role first.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'seqroute_auditor') THEN
        CREATE ROLE seqroute_auditor NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
GRANT SELECT ON reconciliation, audit_spend_daily, audit_budget_status, audit_sessions,
                audit_bankruptcies, audit_ledger TO seqroute_auditor;
