-- The money rules of SPEC section 4, applied to a batch of requests in one transaction
-- (group commit). The daemon sends an array of operations; seqroute_apply() answers one
-- row per operation, tagged with the operation's position n. How a batch is worked is told
-- in sql/functions/2_operations.sql and docs/LEDGER.md.

CREATE TYPE seqroute_result AS (
    n                 integer,
    status            text,
    turn              integer,
    budget            bigint,
    spent             bigint,
    held              bigint,
    hold              bigint,
    horizon           integer,
    lambda            double precision,
    state             text,
    closed            boolean,
    -- What a REPORT answers: as the first report of that turn was answered, so that a
    -- repeat answers the same.
    answer_spent      bigint,
    answer_remaining  bigint,
    account_remaining bigint
);

-- seqroute_apply() and seqroute_expire_holds() are defined in sql/functions/2_operations.sql,
-- which `seqroute migrate` (and the daemon at start) applies after the numbered migrations
-- whenever its text changed, so that the functions can change without a copy per migration.
