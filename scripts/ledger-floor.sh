#!/usr/bin/env bash
# How fast one PostgreSQL backend can write what the SPEC requires per decision, when nothing
# else is done: floor_batch() of scripts/ledger-floor.sql called by pgbench (one client, so one
# backend) on a fresh embedded cluster, for batches of 8, 16 and 32 decisions (a batch of 16 decisions is 32
# operations, what 64 loadgen connections give). Prints decisions per second and the backend's
# CPU per decision (from /proc), the figure to set against the daemon's PostgreSQL share in
# docs/BENCHMARKS.md.
#   SECONDS_PER_RUN=10 scripts/ledger-floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-10}
bin=.build/release/seqroute
[ -x "$bin" ] || swift build -c release
pgbench=$(ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
dir=$(mktemp -d /tmp/seqroute-floor.XXXXXX)
chmod 755 "$dir"
dsn="host=$dir/pg/run dbname=seqroute user=seqroute"
"$bin" serve --config config/seqroute.toml --socket "$dir/s.sock" --data-dir "$dir/pg" 2>"$dir/daemon.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null && wait $daemon || true; rm -rf "$dir"' EXIT
for _ in $(seq 300); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done
"$bin" account set default --cap 100000000000000 --dsn "$dsn" >/dev/null
psql -q "$dsn" -f scripts/ledger-floor.sql
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system, in clock ticks
ticks=$(getconf CLK_TCK)
printf '%s\n' '\set s random(0, 160000 / :batch - 1)' 'SELECT floor_batch(:s, :batch);' >"$dir/bench.sql"
for batch in 8 16 32; do
    "$pgbench" -n -M prepared -D batch="$batch" -f "$dir/bench.sql" -T "$seconds" -c 1 "$dsn" >"$dir/pgbench.out" 2>&1 &
    bench=$!
    # The backend is the newest one of the seqroute role that is not the daemon's committer.
    sleep 1
    backend=$(pgrep -n -f "postgres: seqroute seqroute")
    c0=$(cpu "$backend") t0=$(date +%s.%N)
    sleep $((seconds - 2))
    c1=$(cpu "$backend") t1=$(date +%s.%N)
    wait $bench
    tps=$(grep -o "tps = [0-9.]*" "$dir/pgbench.out" | cut -d' ' -f3)
    python3 -c "
b, tps = $batch, $tps
cpu = ($c1 - $c0) / $ticks / ($t1 - $t0)
print('batch of %2d decisions: %6.0f decisions/s, backend %3.0f%% of a core, %5.1f us of backend CPU per decision'
      % (b, b * tps, 100 * cpu, 1e6 * cpu / (b * tps)))"
done
