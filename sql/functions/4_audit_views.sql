-- What finance reads: the reconciliation query and the audit views, granted to the read-only
-- role seqroute_auditor (created in 003_audit.sql). Replaced whole (CREATE OR REPLACE) whenever
-- this file changes, and made again after any numbered migration, which may have dropped the
-- views (011 does, to change their columns' types); a view's existing columns keep their names
-- and order, new ones go last.
-- Spend everywhere is captures, expiries, overruns and adjustments (corrections, signed).

-- Money rule 4. spent = captures + expiries + overruns + adjustments; held = holds - captures - releases -
-- expiries, for every session, every account and every decision; no entry without its
-- session; no adjustment but of an earlier entry that exists. Returns no rows when the ledger
-- reconciles.
CREATE OR REPLACE VIEW reconciliation AS
WITH per_session AS (
    SELECT session_id,
           sum(amount) FILTER (WHERE kind IN ('capture', 'expiry', 'overrun', 'adjustment')) AS spent,
           sum(CASE kind WHEN 'hold' THEN amount WHEN 'capture' THEN -amount
                         WHEN 'release' THEN -amount WHEN 'expiry' THEN -amount ELSE 0 END) AS held
      FROM ledger_entries GROUP BY session_id
), per_account AS (
    -- Spend of the account's current period only (all of it for period 'none', whose
    -- period_entry_id stays 0).
    SELECT e.account_id,
           sum(e.amount) FILTER (WHERE e.kind IN ('capture', 'expiry', 'overrun', 'adjustment')
                                   AND e.id > a.period_entry_id) AS spent,
           sum(CASE kind WHEN 'hold' THEN amount WHEN 'capture' THEN -amount
                         WHEN 'release' THEN -amount WHEN 'expiry' THEN -amount ELSE 0 END) AS held
      FROM ledger_entries e JOIN accounts a ON a.id = e.account_id GROUP BY e.account_id
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
 WHERE a.spent <> coalesce(e.spent, 0) OR a.held <> coalesce(e.held, 0)
UNION ALL
SELECT 'decision', d.session_id || '#' || d.turn, NULL, NULL,
       CASE WHEN d.status = 'held' THEN d.hold ELSE 0 END, coalesce(e.held, 0)
  FROM decisions d LEFT JOIN per_decision e ON e.session_id = d.session_id AND e.turn = d.turn
 WHERE CASE WHEN d.status = 'held' THEN d.hold ELSE 0 END <> coalesce(e.held, 0)
UNION ALL
SELECT 'orphan', e.session_id || '#' || e.turn, NULL, e.amount, NULL, NULL
  FROM ledger_entries e LEFT JOIN sessions s ON s.id = e.session_id AND s.account_id = e.account_id
 WHERE s.id IS NULL
UNION ALL
SELECT 'dangling', e.id::text, NULL, e.amount, NULL, NULL
  FROM ledger_entries e
 WHERE e.corrects IS NOT NULL
   AND (e.corrects >= e.id OR NOT EXISTS (SELECT 1 FROM ledger_entries c WHERE c.id = e.corrects));

-- Spend by day, account, user and model (captures, expiries and overruns).
CREATE OR REPLACE VIEW audit_spend_daily AS
SELECT (e.at AT TIME ZONE 'UTC')::date AS day, e.account_id, s.user_id, d.model,
       sum(e.amount) AS spent_micros, count(DISTINCT (e.session_id, e.turn)) AS turns
  FROM ledger_entries e
  JOIN sessions s ON s.id = e.session_id
  LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
 WHERE e.kind IN ('capture', 'expiry', 'overrun', 'adjustment')
 GROUP BY 1, 2, 3, 4;

CREATE OR REPLACE VIEW audit_budget_status AS
SELECT id AS account_id, cap, spent, held, cap - spent - held AS remaining,
       CASE WHEN cap > 0 THEN round(100.0 * (spent + held) / cap, 2) END AS utilisation_pct,
       period, updated_at, time_zone, period_start, period_entry_id
  FROM accounts;

-- Spend per account and budget period (the period of each entry from its time, the account's
-- period and time zone as they are now; one row for all time under period 'none').
CREATE OR REPLACE VIEW audit_spend_by_period AS
SELECT e.account_id, a.period, a.time_zone,
       seqroute_period_start(a.period, a.time_zone, e.at) AS period_start,
       sum(e.amount) AS spent_micros, count(DISTINCT (e.session_id, e.turn)) AS turns
  FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
 WHERE e.kind IN ('capture', 'expiry', 'overrun', 'adjustment')
 GROUP BY 1, 2, 3, 4;

CREATE OR REPLACE VIEW audit_sessions AS
SELECT s.id AS session_id, s.account_id, s.user_id, s.budget, s.spent, s.held, s.turns, s.state,
       s.opened_at, s.closed_at,
       (SELECT count(*) FROM decisions d WHERE d.session_id = s.id AND d.status = 'bankrupt') AS unserved_turns,
       (SELECT avg(d.quality) FROM decisions d WHERE d.session_id = s.id) AS mean_quality
  FROM sessions s;

CREATE OR REPLACE VIEW audit_bankruptcies AS
SELECT s.id AS session_id, s.account_id, s.user_id, s.budget, s.spent,
       min(d.turn) AS first_unserved_turn, s.turns, min(d.decided_at) AS bankrupt_at
  FROM sessions s JOIN decisions d ON d.session_id = s.id AND d.status = 'bankrupt'
 GROUP BY s.id;

CREATE OR REPLACE VIEW audit_ledger AS
SELECT id, at, kind, account_id, session_id, turn, amount, corrects, note FROM ledger_entries;

-- Spend by calendar month (UTC), account and model: the month's captures, expiries and overruns.
CREATE OR REPLACE VIEW audit_spend_monthly AS
SELECT date_trunc('month', e.at AT TIME ZONE 'UTC')::date AS month, e.account_id, d.model,
       sum(e.amount) AS spent_micros, count(DISTINCT (e.session_id, e.turn)) AS turns
  FROM ledger_entries e
  LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
 WHERE e.kind IN ('capture', 'expiry', 'overrun', 'adjustment')
 GROUP BY 1, 2, 3;

-- Per day and policy version: what each policy decided, spent and got (quality as reported).
CREATE OR REPLACE VIEW audit_policy_daily AS
SELECT (d.decided_at AT TIME ZONE 'UTC')::date AS day, d.policy_version,
       count(*) AS decisions,
       count(*) FILTER (WHERE d.status = 'bankrupt') AS unserved,
       sum(d.cost) AS cost_micros,
       round(avg(d.quality)::numeric, 4) AS mean_quality,
       round(avg(d.propensity)::numeric, 4) AS mean_propensity
  FROM decisions d
 GROUP BY 1, 2;

-- Every overrun (cost above the hold) and every expiry (hold never reported, captured whole).
CREATE OR REPLACE VIEW audit_overruns_expiries AS
SELECT e.at, e.kind, e.account_id, s.user_id, e.session_id, e.turn, d.model, d.policy_version,
       d.hold AS hold_micros, d.cost AS reported_cost_micros, e.amount AS amount_micros
  FROM ledger_entries e
  JOIN sessions s ON s.id = e.session_id
  LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
 WHERE e.kind IN ('overrun', 'expiry');

-- What preceded each bankruptcy: every turn of a bankrupt session up to its first unserved
-- turn, with the budget left before it and what each turn cost.
CREATE OR REPLACE VIEW audit_bankruptcy_turns AS
SELECT s.id AS session_id, s.account_id, s.user_id, s.budget AS session_budget_micros,
       d.turn, d.decided_at, d.policy_version, d.model, d.hold AS hold_micros, d.cost AS cost_micros,
       d.quality, (d.budget_state[3] - d.budget_state[4] - d.budget_state[5])::bigint AS remaining_before_micros,
       d.status
  FROM sessions s
  JOIN decisions d ON d.session_id = s.id
 WHERE s.state = 'bankrupt'
   AND d.turn <= (SELECT min(b.turn) FROM decisions b WHERE b.session_id = s.id AND b.status = 'bankrupt');

-- Corrections: each adjustment with the entry it corrects.
CREATE OR REPLACE VIEW audit_adjustments AS
SELECT a.id, a.at, a.account_id, a.session_id, a.turn, a.amount AS amount_micros, a.note,
       a.corrects, c.kind AS corrected_kind, c.amount AS corrected_amount_micros, c.at AS corrected_at
  FROM ledger_entries a JOIN ledger_entries c ON c.id = a.corrects
 WHERE a.kind = 'adjustment';

GRANT SELECT ON reconciliation, audit_spend_daily, audit_budget_status, audit_sessions, audit_bankruptcies,
                audit_ledger, audit_spend_monthly, audit_policy_daily, audit_overruns_expiries,
                audit_bankruptcy_turns, audit_adjustments, audit_spend_by_period
   TO seqroute_auditor;
