-- SeqRoute ledger schema. Money is bigint micro-units (1 USD = 1,000,000); never floating point.

CREATE TABLE accounts (
    id          text PRIMARY KEY,
    cap         bigint NOT NULL CHECK (cap >= 0),
    period      text NOT NULL DEFAULT 'none' CHECK (period IN ('none', 'daily', 'weekly', 'monthly')),
    spent       bigint NOT NULL DEFAULT 0,
    held        bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The model pools decisions were made with, so that a decision row can refer to its pool
-- (model names in order) instead of repeating it.
CREATE TABLE model_pools (
    id          text PRIMARY KEY,
    models      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id          text PRIMARY KEY,
    account_id  text NOT NULL REFERENCES accounts (id),
    user_id     text,
    budget      bigint NOT NULL CHECK (budget >= 0),
    horizon     integer,
    lambda      double precision,
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'bankrupt')),
    spent       bigint NOT NULL DEFAULT 0,
    held        bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    turns       integer NOT NULL DEFAULT 0,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX sessions_account ON sessions (account_id);

-- decisions and ledger_entries carry no foreign keys: they are written only by
-- seqroute_apply() and seqroute_expire_holds() (002), which take their ids from locked rows,
-- and a per-row foreign-key check would cost every request a query. The reconciliation view
-- (003) reports any row whose session is missing.

-- The trajectory log: one row per ROUTE. Status: held (hold open), reported, expired,
-- released (session closed before a report), bankrupt (no model was feasible).
CREATE TABLE decisions (
    session_id      text NOT NULL,
    turn            integer NOT NULL CHECK (turn >= 1),
    decided_at      timestamptz NOT NULL DEFAULT now(),
    policy_version  text NOT NULL,
    lambda          double precision NOT NULL,
    pool_id         text NOT NULL,
    task            text,
    prompt_tokens   integer NOT NULL,
    features        real[] NOT NULL,
    -- turn, horizon (0 when unknown), session budget, spent, held, account remaining,
    -- all before this decision.
    budget_state    double precision[] NOT NULL,
    holds           bigint[] NOT NULL,
    feasible        boolean[] NOT NULL,
    model           text,
    propensity      double precision,
    scores          double precision[],
    hold            bigint NOT NULL DEFAULT 0 CHECK (hold >= 0),
    status          text NOT NULL CHECK (status IN ('held', 'reported', 'expired', 'released', 'bankrupt')),
    cost            bigint CHECK (cost >= 0),
    -- The latest quality known: from REPORT, or from a later FEEDBACK.
    quality         double precision CHECK (quality >= 0 AND quality <= 1),
    -- The quality the REPORT itself carried, so that a repeat is recognised after FEEDBACK.
    reported_quality double precision,
    in_tokens       integer,
    out_tokens      integer,
    reported_at     timestamptz,
    -- What the first REPORT answered, so that a repeated REPORT answers the same.
    report_spent    bigint,
    report_remaining bigint,
    PRIMARY KEY (session_id, turn)
);
CREATE INDEX decisions_open_holds ON decisions (decided_at) WHERE status = 'held';
CREATE INDEX decisions_time ON decisions (decided_at);

-- Append-only: one row per money movement.
--   hold     money set aside for a routed turn (adds to held)
--   capture  part of a hold turned into spend (held -> spent)
--   release  part of a hold given back (leaves held)
--   expiry   a whole unreported hold turned into spend (held -> spent)
--   overrun  spend beyond the hold, recorded as it is (adds to spent)
CREATE TABLE ledger_entries (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (kind IN ('hold', 'capture', 'release', 'expiry', 'overrun')),
    account_id  text NOT NULL,
    session_id  text NOT NULL,
    turn        integer NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0)
);
CREATE INDEX ledger_entries_session ON ledger_entries (session_id, turn);
CREATE INDEX ledger_entries_account_at ON ledger_entries (account_id, at);

CREATE FUNCTION ledger_entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change();

-- Every trained policy.
CREATE TABLE policies (
    version         text PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    data_from       timestamptz,
    data_to         timestamptz,
    training        jsonb NOT NULL DEFAULT '{}',
    evaluation      jsonb NOT NULL DEFAULT '{}',
    file_path       text,
    file_sha256     text,
    status          text NOT NULL CHECK (status IN ('candidate', 'active', 'retired'))
);
CREATE UNIQUE INDEX policies_one_active ON policies (status) WHERE status = 'active';
