-- The single-column CHECK constraints of the four busy tables become domains. PostgreSQL
-- parses a table's CHECK constraints from their stored text again in every statement that
-- writes the table, and each batch has several such statements on each table (docs/BENCHMARKS.md
-- has what that cost). A domain's
-- constraints are parsed once per connection and kept, and they are checked only on the
-- columns a statement writes. What the ledger refuses does not change.
--
-- The two rules of ledger_entries that join two columns (the amount's sign by kind, and
-- `corrects` set for adjustments only) stay table constraints.
--
-- Each column first takes a domain without a constraint, which changes only its type (no
-- rewrite of the table); the old table constraint is dropped; then the domain gets its
-- constraint, NOT VALID: it binds every value written from now on, and PostgreSQL does not read
-- the rows already there. They all met the same rule as a table constraint until this
-- transaction, which holds the tables, dropped it; validating would read `decisions` once per
-- domain it uses, five times, while the daemons' batches wait.
CREATE DOMAIN money_nonnegative AS bigint;
CREATE DOMAIN turn_number AS integer;
CREATE DOMAIN quality_score AS double precision;
CREATE DOMAIN features_binary32 AS bytea;
CREATE DOMAIN budget_period AS text;
CREATE DOMAIN session_state AS text;
CREATE DOMAIN decision_status AS text;
CREATE DOMAIN entry_kind AS text;

-- A view keeps its columns' types: the views are made again by sql/functions/4_audit_views.sql,
-- which the migrator applies again after every numbered migration.
DROP VIEW IF EXISTS reconciliation, audit_spend_daily, audit_budget_status, audit_spend_by_period, audit_sessions,
    audit_bankruptcies, audit_ledger, audit_spend_monthly, audit_policy_daily, audit_overruns_expiries,
    audit_bankruptcy_turns, audit_adjustments;

ALTER TABLE accounts
    DROP CONSTRAINT accounts_cap_check, DROP CONSTRAINT accounts_held_check, DROP CONSTRAINT accounts_period_check,
    ALTER COLUMN cap TYPE money_nonnegative, ALTER COLUMN held TYPE money_nonnegative,
    ALTER COLUMN period TYPE budget_period;
ALTER TABLE sessions
    DROP CONSTRAINT sessions_budget_check, DROP CONSTRAINT sessions_held_check, DROP CONSTRAINT sessions_state_check,
    ALTER COLUMN budget TYPE money_nonnegative, ALTER COLUMN held TYPE money_nonnegative,
    ALTER COLUMN state TYPE session_state;
ALTER TABLE decisions
    DROP CONSTRAINT decisions_turn_check, DROP CONSTRAINT decisions_hold_check, DROP CONSTRAINT decisions_cost_check,
    DROP CONSTRAINT decisions_quality_check, DROP CONSTRAINT decisions_status_check,
    DROP CONSTRAINT decisions_features_binary32,
    ALTER COLUMN turn TYPE turn_number, ALTER COLUMN hold TYPE money_nonnegative,
    ALTER COLUMN cost TYPE money_nonnegative, ALTER COLUMN quality TYPE quality_score,
    ALTER COLUMN status TYPE decision_status, ALTER COLUMN features TYPE features_binary32;
-- The two rules that name `kind` would be made again by the change of its type, and read the
-- whole table to validate: they are dropped and added back NOT VALID, as the domains are below.
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_kind_check, DROP CONSTRAINT ledger_entries_amount_check,
    DROP CONSTRAINT ledger_entries_adjustment_refers,
    ALTER COLUMN kind TYPE entry_kind,
    ADD CONSTRAINT ledger_entries_amount_check CHECK (amount > 0 OR (kind = 'adjustment' AND amount <> 0)) NOT VALID,
    ADD CONSTRAINT ledger_entries_adjustment_refers CHECK ((kind = 'adjustment') = (corrects IS NOT NULL)) NOT VALID;

ALTER DOMAIN money_nonnegative ADD CONSTRAINT money_nonnegative_check CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN turn_number ADD CONSTRAINT turn_number_check CHECK (VALUE >= 1) NOT VALID;
ALTER DOMAIN quality_score ADD CONSTRAINT quality_score_check CHECK (VALUE >= 0 AND VALUE <= 1) NOT VALID;
ALTER DOMAIN features_binary32 ADD CONSTRAINT features_binary32_check CHECK (length(VALUE) % 4 = 0) NOT VALID;
ALTER DOMAIN budget_period ADD CONSTRAINT budget_period_check
    CHECK (VALUE IN ('none', 'daily', 'weekly', 'monthly')) NOT VALID;
ALTER DOMAIN session_state ADD CONSTRAINT session_state_check CHECK (VALUE IN ('open', 'closed', 'bankrupt')) NOT VALID;
ALTER DOMAIN decision_status ADD CONSTRAINT decision_status_check
    CHECK (VALUE IN ('held', 'reported', 'expired', 'released', 'bankrupt')) NOT VALID;
ALTER DOMAIN entry_kind ADD CONSTRAINT entry_kind_check
    CHECK (VALUE IN ('hold', 'capture', 'release', 'expiry', 'overrun', 'adjustment')) NOT VALID;

-- A change of type drops the columns' planner statistics; ANALYZE reads a sample of each table.
ANALYZE accounts, sessions, decisions, ledger_entries;
