#!/usr/bin/env bash
# How fast one PostgreSQL backend can write what the SPEC requires per decision, when nothing
# else is done: floor_batch() of scripts/ledger-floor.sql called by pgbench (one client, so one
# backend) on a fresh embedded cluster, for batches of 8, 16 and 32 decisions (a batch of 16
# decisions is 32 operations, what 64 loadgen connections give). Prints decisions per second
# and the backend's CPU per decision (from /proc), the figure to set against the daemon's
# PostgreSQL share in docs/BENCHMARKS.md.
#   SECONDS_PER_RUN=10 scripts/ledger-floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-10}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 4 ]] || { echo "SECONDS_PER_RUN must be a whole number of at least 4" >&2; exit 2; }
source scripts/throwaway-ledger.sh
start_ledger floor
psql -q -v ON_ERROR_STOP=1 "$dsn" -f scripts/ledger-floor.sql
printf '%s\n' '\set s random(0, 160000 / :batch - 1)' 'SELECT floor_batch(:s, :batch);' >"$dir/bench.sql"
run() {  # batch, seconds: pgbench in the background, its pid in $bench
    "$pgbin/pgbench" -n -M prepared -D batch="$1" -f "$dir/bench.sql" -T "$2" -c 1 "$dsn" >"$dir/pgbench.out" 2>&1 &
    bench=$!
}
# A warm-up, so that the first measured size does not pay for cold caches, then fresh statistics.
run 16 3
wait "$bench"
bench=''
psql -q -v ON_ERROR_STOP=1 "$dsn" -c "ANALYZE"
ticks=$(getconf CLK_TCK)
for batch in 8 16 32; do
    run "$batch" "$seconds"
    backend=$(pgbench_backend "$dsn" '%floor_batch%')
    sleep 1
    c0=$(cpu "$backend")
    t0=$(date +%s.%N)
    sleep $((seconds - 3))
    c1=$(cpu "$backend")
    t1=$(date +%s.%N)
    wait "$bench"
    bench=''
    tps=$(grep -o "tps = [0-9.]*" "$dir/pgbench.out" | cut -d' ' -f3)
    python3 -c "
b, tps = $batch, $tps
cpu = ($c1 - $c0) / $ticks / ($t1 - $t0)
print('batch of %2d decisions: %6.0f decisions/s, backend %3.0f%% of a core, %5.1f us of backend CPU per decision'
      % (b, b * tps, 100 * cpu, 1e6 * cpu / (b * tps)))"
done
