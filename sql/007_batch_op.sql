-- One operation of a batch, as seqroute_apply() reads it: the daemon sends an array of these
-- in binary; daemons of earlier releases sent JSON objects with these keys (decoded with
-- json_populate_recordset). The names are short because every ROUTE sends its features:
--   n position in the batch (1-based), k kind, s session;
--   OPEN:     a account, u user, b budget, h horizon, l λ;
--   ROUTE:    t turn, m model (absent: record a bankrupt turn), hd hold, mh cheapest hold,
--             pv policy version, l λ, pool pool id, task, pt prompt tokens, f features,
--             bs budget state, hs holds, fe feasibility, p propensity, sc scores, pu peer uid;
--   REPORT:   t turn, c cost, q quality, i input tokens, o output tokens;
--   FEEDBACK: t turn, q quality.
CREATE TYPE seqroute_op AS (
    n integer, k text, s text,
    a text, u text, b bigint, h integer, l double precision,
    t integer, m text, hd bigint, mh bigint, pv text, pool text, task text, pt integer,
    f real[], bs double precision[], hs bigint[], fe boolean[], p double precision, sc double precision[], pu bigint,
    c bigint, q double precision, i integer, o integer
);
