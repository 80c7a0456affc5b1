#!/usr/bin/env bash
# What one PostgreSQL backend spends applying a batch with seqroute_apply(), without the
# daemon, the clients or the commit: pgbench (one client, so one backend) applies batches
# stored by scripts/batch-cost.sql, each in a transaction that it rolls back, on a fresh
# embedded cluster. Prints the backend's CPU per batch for each kind of stored batch (MIXES;
# by default batches of 2, 29 and 58 operations, and routes-29 and reports-29 on request), and
# from the 29 and 58 the part per operation and the part paid once per batch. Each kind is
# measured twice, the second time in the reverse order, and the two are averaged. The figures
# include pgbench's own round trips (BEGIN, the call, ROLLBACK).
#   SECONDS_PER_RUN=8 scripts/batch-cost.sh
#   MIXES="mixed-29 routes-29 reports-29" scripts/batch-cost.sh
#
# To compare this checkout's sql/ with another SQL folder (an earlier release's, from 010 on, as
# the daemon's batch type must match), name it in COMPARE_SQL: a ledger migrated from each runs
# side by side, and pgbench works on one, then the other, for SECONDS_PER_RUN each (5 by
# default), over ROUNDS rounds (12 by default) that alternate which goes first. The machine's speed drifts by more than a change to the batch
# function is worth; alternating every few seconds leaves both sides the same drift. Prints
# each round, the medians, and the median of the rounds' ratios (this checkout / the other).
#   COMPARE_SQL=/tmp/before/sql MIXES=mixed-29 scripts/batch-cost.sh
set -euo pipefail
compare=''
if [ -n "${COMPARE_SQL:-}" ]; then
    compare=$(realpath "$COMPARE_SQL")
    [ -f "$compare/001_schema.sql" ] || { echo "COMPARE_SQL names no SQL folder: $compare" >&2; exit 2; }
fi
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-$([ -n "$compare" ] && echo 5 || echo 8)}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 4 ]] || { echo "SECONDS_PER_RUN must be a whole number of at least 4" >&2; exit 2; }
rounds=${ROUNDS:-12}
[[ "$rounds" =~ ^[0-9]+$ && "$rounds" -ge 2 ]] || { echo "ROUNDS must be a whole number of at least 2" >&2; exit 2; }
read -r -a mixes <<<"${MIXES:-$([ -n "$compare" ] && echo mixed-29 || echo mixed-2 mixed-29 mixed-58)}"
[ "${#mixes[@]}" -gt 0 ] || { echo "MIXES names no batch" >&2; exit 2; }
[ "$(printf '%s\n' "${mixes[@]}" | sort | uniq -d)" = "" ] || { echo "MIXES names a batch twice" >&2; exit 2; }
for mix in "${mixes[@]}"; do
    case "$mix" in
    mixed-2 | mixed-29 | mixed-58 | routes-29 | reports-29) ;;
    *) echo "unknown mix $mix: mixed-2, mixed-29, mixed-58, routes-29 or reports-29" >&2; exit 2 ;;
    esac
done
source scripts/throwaway-ledger.sh
# Stores the batches in the ledger just started, checks them, and writes pgbench's script.
store_batches() {
    psql -q -v ON_ERROR_STOP=1 "$dsn" -f scripts/batch-cost.sql
    # Every operation of a stored batch must be answered ok, or the figures would be of other
    # paths (a missing or empty batch would time empty calls). Groups 0 and 399 are checked; the
    # setup makes every group alike.
    local mix g ok
    for mix in "${mixes[@]}"; do
        for g in 0 399; do
            ok=$(psql -Atq -v ON_ERROR_STOP=1 "$dsn" -c "BEGIN" -c "
                SELECT cardinality(b.ops) > 0 AND count(*) FILTER (WHERE r.status = 'ok') = cardinality(b.ops)
                  FROM bench_batches b LEFT JOIN LATERAL seqroute_apply(b.ops) r ON true
                 WHERE b.mix = '$mix' AND b.g = $g GROUP BY b.mix, b.g" -c "ROLLBACK")
            [ "$ok" = t ] || { echo "batch $mix of group $g is missing or not answered ok throughout" >&2; exit 1; }
        done
    done
    # Under -M prepared, :mix is a bound parameter, so it needs no quotes.
    printf '%s\n' '\set g random(0, 399)' 'BEGIN;' \
        "SELECT count(*), nextval('bench_calls') FROM seqroute_apply((SELECT ops FROM bench_batches WHERE mix = :mix AND g = :g));" \
        'ROLLBACK;' >"$dir/bench.sql"
}
start_ledger batch-cost
store_batches
here_dsn=$dsn here_dir=$dir
if [ -n "$compare" ]; then
    start_ledger batch-cost-other "$compare"
    store_batches
    other_dsn=$dsn other_dir=$dir
fi
ticks=$(getconf CLK_TCK)
calls() { psql -Atq "$1" -c "SELECT last_value FROM bench_calls"; }  # batches applied so far
measure() {  # dsn, folder, mix, seconds: sets `result`, the backend's CPU per batch in µs
    local backend c0 c1 n0 n1
    "$pgbin/pgbench" -n -M prepared -D mix="$3" -f "$2/bench.sql" -T "$4" -c 1 "$1" >"$2/pgbench.out" 2>&1 &
    bench=$!
    backend=$(pgbench_backend "$1" '%seqroute_apply%')
    sleep 1
    c0=$(cpu "$backend")
    n0=$(calls "$1")
    sleep $(($4 - 3))
    c1=$(cpu "$backend")
    n1=$(calls "$1")
    wait "$bench"
    bench=''
    [ "$n1" -gt "$n0" ] || { echo "no batch was applied while measuring $3" >&2; exit 1; }
    result=$(python3 -c "print(1e6 * ($c1 - $c0) / $ticks / ($n1 - $n0))")
}

if [ -n "$compare" ]; then
    measure "$here_dsn" "$here_dir" mixed-29 4  # warms the caches and the function's plans
    measure "$other_dsn" "$other_dir" mixed-29 4
    for mix in "${mixes[@]}"; do
        here=() other=()
        for round in $(seq "$rounds"); do
            if [ $((round % 2)) = 1 ]; then
                measure "$here_dsn" "$here_dir" "$mix" "$seconds"; h=$result
                measure "$other_dsn" "$other_dir" "$mix" "$seconds"; o=$result
            else
                measure "$other_dsn" "$other_dir" "$mix" "$seconds"; o=$result
                measure "$here_dsn" "$here_dir" "$mix" "$seconds"; h=$result
            fi
            here+=("$h") other+=("$o")
            printf '%s round %d: this checkout %.0f us, the other %.0f us per batch\n' "$mix" "$round" "$h" "$o"
        done
        python3 -c "
import statistics as st
here, other = [$(IFS=,; echo "${here[*]}")], [$(IFS=,; echo "${other[*]}")]
ratios = [h / o for h, o in zip(here, other)]
print('%s: medians %.0f us (this checkout) and %.0f us (the other) of backend CPU per batch; ratio %.3f,'
      ' this checkout cheaper in %d of %d rounds' % ('$mix', st.median(here), st.median(other), st.median(ratios),
                                                  sum(r < 1 for r in ratios), len(ratios)))"
    done
    exit 0
fi

measure "$here_dsn" "$here_dir" mixed-29 4  # warms the caches and the function's plans
declare -A cost
for mix in "${mixes[@]}"; do cost[$mix]=0; done
for round in 1 2; do
    order=("${mixes[@]}")
    [ "$round" = 2 ] && order=($(printf '%s\n' "${mixes[@]}" | tac))
    for mix in "${order[@]}"; do
        measure "$here_dsn" "$here_dir" "$mix" "$seconds"
        cost[$mix]=$(python3 -c "print(${cost[$mix]} + $result / 2)")
    done
done
for mix in "${mixes[@]}"; do
    printf '%s: %.0f us of backend CPU per batch\n' "$mix" "${cost[$mix]}"
done
if [ -n "${cost[mixed-29]:-}" ] && [ -n "${cost[mixed-58]:-}" ]; then
    python3 -c "
per_op = (${cost[mixed-58]} - ${cost[mixed-29]}) / 29
print('per operation %.1f us; paid once per batch of the usual mix %.0f us' % (per_op, ${cost[mixed-29]} - 29 * per_op))"
fi
