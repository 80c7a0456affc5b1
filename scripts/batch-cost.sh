#!/usr/bin/env bash
# What one PostgreSQL backend spends applying a batch with seqroute_apply(), without the
# daemon, the clients or the commit: pgbench (one client, so one backend) applies batches
# stored by scripts/batch-cost.sql, each in a transaction that it rolls back, on a fresh
# embedded cluster. Prints the backend's CPU per batch for each kind of stored batch (MIXES;
# by default batches of 2, 29 and 58 operations, and routes-29 and reports-29 on request), and
# from the 29 and 58 the part per operation and the part paid once per batch. Each kind is
# measured twice, the second time in the reverse order, and the two are averaged. The figures
# include pgbench's own round trips (BEGIN, the call, ROLLBACK). A quieter measure than the
# load generator's for a change to the batch function: run it before and after.
#   SECONDS_PER_RUN=8 scripts/batch-cost.sh
#   MIXES="mixed-29 routes-29 reports-29" scripts/batch-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-8}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 4 ]] || { echo "SECONDS_PER_RUN must be a whole number of at least 4" >&2; exit 2; }
read -r -a mixes <<<"${MIXES:-mixed-2 mixed-29 mixed-58}"
[ "${#mixes[@]}" -gt 0 ] || { echo "MIXES names no batch" >&2; exit 2; }
[ "$(printf '%s\n' "${mixes[@]}" | sort | uniq -d)" = "" ] || { echo "MIXES names a batch twice" >&2; exit 2; }
for mix in "${mixes[@]}"; do
    case "$mix" in
    mixed-2 | mixed-29 | mixed-58 | routes-29 | reports-29) ;;
    *) echo "unknown mix $mix: mixed-2, mixed-29, mixed-58, routes-29 or reports-29" >&2; exit 2 ;;
    esac
done
source scripts/throwaway-ledger.sh batch-cost
psql -q -v ON_ERROR_STOP=1 "$dsn" -f scripts/batch-cost.sql
# Every operation of a stored batch must be answered ok, or the figures would be of other paths
# (a missing or empty batch would time empty calls). Groups 0 and 399 are checked; the setup
# makes every group alike.
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
calls() { psql -Atq "$dsn" -c "SELECT last_value FROM bench_calls"; }
ticks=$(getconf CLK_TCK)
measure() {  # mix, seconds: sets `result`, the backend's CPU per batch in µs
    "$pgbin/pgbench" -n -M prepared -D mix="$1" -f "$dir/bench.sql" -T "$2" -c 1 "$dsn" >"$dir/pgbench.out" 2>&1 &
    bench=$!
    local backend c0 c1 n0 n1
    backend=$(pgbench_backend '%seqroute_apply%')
    sleep 1
    c0=$(cpu "$backend")
    n0=$(calls)
    sleep $(($2 - 3))
    c1=$(cpu "$backend")
    n1=$(calls)
    wait "$bench"
    bench=''
    [ "$n1" -gt "$n0" ] || { echo "no batch was applied while measuring $1" >&2; exit 1; }
    result=$(python3 -c "print(1e6 * ($c1 - $c0) / $ticks / ($n1 - $n0))")
}
measure mixed-29 4  # warms the caches and the function's plans
declare -A cost
for mix in "${mixes[@]}"; do cost[$mix]=0; done
for round in 1 2; do
    order=("${mixes[@]}")
    [ "$round" = 2 ] && order=($(printf '%s\n' "${mixes[@]}" | tac))
    for mix in "${order[@]}"; do
        measure "$mix" "$seconds"
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
