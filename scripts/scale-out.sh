#!/usr/bin/env bash
# Several daemons share one PostgreSQL ledger and one account's budget, under load: the long
# form of ScaleOutTests. Starts DAEMONS daemons (the first starts a private embedded cluster that
# the others share), gives account `shared` a cap of CAP micro-units, and runs CONNECTIONS
# concurrent sessions (SESSIONS in all, 8 turns each) spread over the daemons, while loadgen
# samples the account's spent + held against its cap. Then checks the reconciliation view.
# Exits non-zero on any error, any sample over the cap, or any reconciliation row.
#   DAEMONS=3 CONNECTIONS=1000 SESSIONS=3000 CAP=200000000 scripts/scale-out.sh
set -euo pipefail
cd "$(dirname "$0")/.."
daemons=${DAEMONS:-3} connections=${CONNECTIONS:-1000} sessions=${SESSIONS:-3000} cap=${CAP:-200000000}
bin=.build/release/seqroute
[ -x "$bin" ] || swift build -c release
dir=$(mktemp -d /tmp/seqroute-scale.XXXXXX)
chmod 755 "$dir"
dsn="host=$dir/pg/run dbname=seqroute user=seqroute"
pids=()
stop() {
    # The first daemon owns the embedded cluster: stop it last.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null && wait "${pids[$i]}" || true; done
}
trap stop EXIT
wait_for() { for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; exit 1; }

"$bin" serve --config config/seqroute.toml --socket "$dir/s1.sock" --data-dir "$dir/pg" 2>"$dir/daemon1.log" &
pids+=($!)
wait_for "$dir/s1.sock"
sockets=(--socket "$dir/s1.sock")
for ((k = 2; k <= daemons; k++)); do
    "$bin" serve --config config/seqroute.toml --dsn "$dsn" --socket "$dir/s$k.sock" --data-dir "$dir/d$k" \
        2>"$dir/daemon$k.log" &
    pids+=($!)
    wait_for "$dir/s$k.sock"
    sockets+=(--socket "$dir/s$k.sock")
done
"$bin" account set shared --cap "$cap" --dsn "$dsn"
"$bin" loadgen "${sockets[@]}" --connections "$connections" --sessions "$sessions" --turns 8 \
    --account shared --watch-dsn "$dsn"
echo "account shared: $("$bin" account show shared --dsn "$dsn")"
rows=$(psql "$dsn" -Atc "SELECT count(*) FROM reconciliation")
echo "reconciliation rows: $rows"
[ "$rows" = 0 ]
