-- More of what finance reads (issue: finance and operations). Views only; the auditor role
-- gets SELECT on each.

-- Spend by calendar month (UTC), account and model: the month's captures, expiries and overruns.
CREATE VIEW audit_spend_monthly AS
SELECT date_trunc('month', e.at AT TIME ZONE 'UTC')::date AS month, e.account_id, d.model,
       sum(e.amount) AS spent_micros, count(DISTINCT (e.session_id, e.turn)) AS turns
  FROM ledger_entries e
  LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
 WHERE e.kind IN ('capture', 'expiry', 'overrun')
 GROUP BY 1, 2, 3;

-- Per day and policy version: what each policy decided, spent and got (quality as reported).
CREATE VIEW audit_policy_daily AS
SELECT (d.decided_at AT TIME ZONE 'UTC')::date AS day, d.policy_version,
       count(*) AS decisions,
       count(*) FILTER (WHERE d.status = 'bankrupt') AS unserved,
       sum(d.cost) AS cost_micros,
       round(avg(d.quality)::numeric, 4) AS mean_quality,
       round(avg(d.propensity)::numeric, 4) AS mean_propensity
  FROM decisions d
 GROUP BY 1, 2;

-- Every overrun (cost above the hold) and every expiry (hold never reported, captured whole).
CREATE VIEW audit_overruns_expiries AS
SELECT e.at, e.kind, e.account_id, s.user_id, e.session_id, e.turn, d.model, d.policy_version,
       d.hold AS hold_micros, d.cost AS reported_cost_micros, e.amount AS amount_micros
  FROM ledger_entries e
  JOIN sessions s ON s.id = e.session_id
  LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
 WHERE e.kind IN ('overrun', 'expiry');

-- What preceded each bankruptcy: every turn of a bankrupt session up to its first unserved
-- turn, with the budget left before it and what each turn cost.
CREATE VIEW audit_bankruptcy_turns AS
SELECT s.id AS session_id, s.account_id, s.user_id, s.budget AS session_budget_micros,
       d.turn, d.decided_at, d.policy_version, d.model, d.hold AS hold_micros, d.cost AS cost_micros,
       d.quality, (d.budget_state[3] - d.budget_state[4] - d.budget_state[5])::bigint AS remaining_before_micros,
       d.status
  FROM sessions s
  JOIN decisions d ON d.session_id = s.id
 WHERE s.state = 'bankrupt'
   AND d.turn <= (SELECT min(b.turn) FROM decisions b WHERE b.session_id = s.id AND b.status = 'bankrupt');

GRANT SELECT ON audit_spend_monthly, audit_policy_daily, audit_overruns_expiries, audit_bankruptcy_turns
   TO seqroute_auditor;
