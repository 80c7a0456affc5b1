-- Stored batches for scripts/batch-cost.sh: what one backend spends applying a batch with
-- seqroute_apply(), apart from the commit. Loaded into a throwaway ledger whose account
-- `default` exists. Sessions bench-<g>-<i> (g in 0 … 399, i in 1 … 28) are opened and routed
-- four turns, each reported but turn 4 of i ≤ 13, which stays held: halfway through sessions
-- of 8 turns, as the load generator's are by default. Each stored batch of group g then holds,
-- as 64 loadgen connections make them, 13 REPORTs (turn 4 of i 1 … 13), 13 ROUTEs (turn 5 of
-- i 14 … 26), 2 CLOSEs (i 27, 28) and 1 OPEN; the script applies one and rolls it back, so every
-- batch finds the ledger's figures as they were (dead row versions do pile up).
CREATE FUNCTION bench_op(n integer, o json) RETURNS seqroute_op LANGUAGE sql AS $$
    SELECT json_populate_record(NULL::seqroute_op, (o::jsonb || jsonb_build_object('n', n))::json)
$$;
CREATE FUNCTION bench_open(n integer, s text) RETURNS seqroute_op LANGUAGE sql AS $$
    SELECT bench_op(n, json_build_object('k', 'open', 's', s, 'a', 'default', 'b', 1000000000, 'h', 8, 'l', 0.5))
$$;
-- A ROUTE as the daemon logs one: 64 features, a pool of 11 models.
CREATE FUNCTION bench_route(n integer, s text, t integer) RETURNS seqroute_op LANGUAGE sql AS $$
    SELECT bench_op(n, json_build_object(
        'k', 'route', 's', s, 'a', 'default', 't', t, 'm', 'gpt-4', 'hd', 1000 + n, 'mh', 10, 'pv', 'bench',
        'l', 0.5, 'pool', 'bench', 'task', 'mmlu', 'pt', 100, 'fb', '\x' || repeat('3f000000', 64),
        'bs', json_build_array(t, 8, 1000000000, 0, 0, 1e14), 'hs', json_build_array(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
        'fe', json_build_array(true, true, true, true, true, true, true, true, true, true, false), 'p', 0.9,
        'sc', json_build_array(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1), 'pu', 0))
$$;
CREATE FUNCTION bench_report(n integer, s text, t integer) RETURNS seqroute_op LANGUAGE sql AS $$
    SELECT bench_op(n, json_build_object('k', 'report', 's', s, 'a', 'default', 't', t, 'c', 800, 'q', 0.7,
                                         'i', 100, 'o', 200))
$$;
CREATE FUNCTION bench_close(n integer, s text) RETURNS seqroute_op LANGUAGE sql AS $$
    SELECT bench_op(n, json_build_object('k', 'close', 's', s, 'a', 'default'))
$$;

DO $$
DECLARE
    refused integer;
BEGIN
    FOR g IN 0..399 LOOP
        SELECT count(*) INTO refused
          FROM seqroute_apply(array(SELECT bench_open(i, 'bench-' || g || '-' || i) FROM generate_series(1, 28) i)) r
         WHERE r.status <> 'ok';
        FOR t IN 1..4 LOOP
            refused := refused + (SELECT count(*)
                FROM seqroute_apply(array(SELECT bench_route(i, 'bench-' || g || '-' || i, t)
                                            FROM generate_series(1, 28) i)) r WHERE r.status <> 'ok');
            refused := refused + (SELECT count(*)
                FROM seqroute_apply(array(SELECT bench_report(i, 'bench-' || g || '-' || i, t)
                                            FROM generate_series(CASE WHEN t < 4 THEN 1 ELSE 14 END, 28) i)) r
               WHERE r.status <> 'ok');
        END LOOP;
        IF refused > 0 THEN
            RAISE EXCEPTION 'setting up group %: % operations refused', g, refused;
        END IF;
    END LOOP;
END $$;

-- mixed-29: one group's batch; mixed-58: two groups' (g and (g + 200) mod 400), renumbered;
-- mixed-2: one REPORT and one ROUTE, where the part paid once per batch dominates; routes-29 and
-- reports-29: 29 operations of which the 26 ROUTEs or REPORTs are of one side only (two groups'),
-- with group g's 2 CLOSEs and OPEN.
CREATE TABLE bench_batches (mix text, g integer, ops seqroute_op[] NOT NULL, PRIMARY KEY (mix, g));
CREATE FUNCTION bench_group(g integer, base integer, kinds text[]) RETURNS SETOF seqroute_op LANGUAGE sql AS $$
    SELECT op FROM (
        SELECT i, bench_report(base + i, 'bench-' || g || '-' || i, 4) FROM generate_series(1, 13) i
        UNION ALL SELECT i, bench_route(base + i, 'bench-' || g || '-' || i, 5) FROM generate_series(14, 26) i
        UNION ALL SELECT i, bench_close(base + i, 'bench-' || g || '-' || i) FROM generate_series(27, 28) i
        UNION ALL SELECT 29, bench_open(base + 29, 'bench-' || g || '-new')) AS z (i, op)
     WHERE (op).k = ANY (kinds) ORDER BY i
$$;
INSERT INTO bench_batches
SELECT 'mixed-29', g, array(SELECT bench_group(g, 0, '{report,route,close,open}')) FROM generate_series(0, 399) g
UNION ALL
SELECT 'mixed-58', g, array(SELECT bench_group(g, 0, '{report,route,close,open}'))
                      || array(SELECT bench_group((g + 200) % 400, 29, '{report,route,close,open}'))
  FROM generate_series(0, 399) g
UNION ALL
SELECT 'mixed-2', g, array(SELECT op FROM bench_group(g, 0, '{report,route}') op WHERE (op).n IN (1, 14))
  FROM generate_series(0, 399) g
UNION ALL
SELECT 'routes-29', g, array(SELECT bench_group(g, 0, '{route,close,open}'))
                       || array(SELECT bench_group((g + 200) % 400, 29, '{route}'))
  FROM generate_series(0, 399) g
UNION ALL
SELECT 'reports-29', g, array(SELECT bench_group(g, 0, '{report,close,open}'))
                        || array(SELECT bench_group((g + 200) % 400, 29, '{report}'))
  FROM generate_series(0, 399) g;
-- The benchmarked statement draws one number per batch applied: unlike the statistics, which a
-- backend publishes about once a second, a sequence counts them exactly, rolled back or not.
CREATE SEQUENCE bench_calls;
ANALYZE;
