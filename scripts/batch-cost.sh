#!/usr/bin/env bash
# What one PostgreSQL backend spends applying a batch with seqroute_apply(), without the
# daemon, the clients or the commit: pgbench (one client, so one backend) applies batches
# stored by scripts/batch-cost.sql, each in a transaction that it rolls back, on a fresh
# embedded cluster. Prints the backend's CPU per batch for batches of 2, 29 and 58 operations,
# and from the last two the part per operation and the part paid once per batch. The figures
# include pgbench's own round trips (BEGIN, the call, ROLLBACK). A quieter measure than the
# load generator's for a change to the batch function: run it before and after.
#   SECONDS_PER_RUN=8 scripts/batch-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-8}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 4 ]] || { echo "SECONDS_PER_RUN must be a whole number of at least 4" >&2; exit 2; }
bin=.build/release/seqroute
[ -x "$bin" ] || swift build -c release
# The newest PostgreSQL, as the daemon picks it (SEQROUTE_PG_BIN overrides both).
pgbin=${SEQROUTE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
dir=$(mktemp -d /tmp/seqroute-batch-cost.XXXXXX)
chmod 755 "$dir"
dsn="host=$dir/pg/run dbname=seqroute user=seqroute"
daemon='' bench=''
finish() {
    local status=$?
    [ -n "$bench" ] && kill "$bench" 2>/dev/null || true
    [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" || true
    if [ "$status" -ne 0 ]; then
        echo "failed; the logs:" >&2
        tail -n 20 "$dir"/*.log "$dir"/*.out 2>/dev/null >&2 || true
    fi
    rm -rf "$dir"
}
trap finish EXIT
"$bin" serve --config config/seqroute.toml --socket "$dir/s.sock" --data-dir "$dir/pg" 2>"$dir/daemon.log" &
daemon=$!
for _ in $(seq 300); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done
"$bin" account set default --cap 100000000000000 --dsn "$dsn" >/dev/null
psql -q -v ON_ERROR_STOP=1 "$dsn" -f scripts/batch-cost.sql
# The stored batches must be answered ok, or the figures would be of other paths.
for mix in mixed-2 mixed-29 mixed-58; do
    for g in 0 399; do
        refused=$(psql -Atq -v ON_ERROR_STOP=1 "$dsn" -c "BEGIN" -c "
            SELECT count(*) FROM seqroute_apply((SELECT ops FROM bench_batches WHERE mix = '$mix' AND g = $g)) r
             WHERE r.status <> 'ok'" -c "ROLLBACK")
        [ "$refused" = 0 ] || { echo "batch $mix of group $g: $refused operations answered other than ok" >&2; exit 1; }
    done
done
printf '%s\n' '\set g random(0, 399)' 'BEGIN;' \
    "SELECT count(*) FROM seqroute_apply((SELECT ops FROM bench_batches WHERE mix = :mix AND g = :g));" \
    'ROLLBACK;' >"$dir/bench.sql"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system, in clock ticks
ticks=$(getconf CLK_TCK)
measure() {  # mix, seconds: prints the backend's CPU per batch in µs
    "$pgbin/pgbench" -n -M prepared -D mix="$1" -f "$dir/bench.sql" -T "$2" -c 1 "$dsn" >"$dir/pgbench.out" 2>&1 &
    bench=$!
    local backend='' c0 c1 n0 n1
    for _ in $(seq 50); do
        backend=$(psql -Atq "$dsn" -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'")
        [ -n "$backend" ] && break
        sleep 0.1
    done
    [ -n "$backend" ] || { echo "pgbench did not connect" >&2; exit 1; }
    sleep 1
    rolled() { psql -Atq "$dsn" -c "SELECT xact_rollback FROM pg_stat_database WHERE datname = 'seqroute'"; }
    c0=$(cpu "$backend") n0=$(rolled)
    sleep $(($2 - 3))
    c1=$(cpu "$backend") n1=$(rolled)
    wait "$bench"
    bench=''
    python3 -c "print(round(1e6 * ($c1 - $c0) / $ticks / ($n1 - $n0)))"
}
measure mixed-29 4 >/dev/null  # warms the caches and the function's plans
declare -A cost
for mix in mixed-2 mixed-29 mixed-58; do
    cost[$mix]=$(measure "$mix" "$seconds")
    echo "${mix#mixed-} operations: ${cost[$mix]} us of backend CPU per batch"
done
python3 -c "
per_op = (${cost[mixed-58]} - ${cost[mixed-29]}) / 29
print('per operation %.1f us, paid once per batch of the usual mix %.0f us' % (per_op, ${cost[mixed-29]} - 29 * per_op))"
