# Sourced by the benchmarks that need throwaway ledgers (ledger-floor.sh, batch-cost.sh,
# loadgen-ab.sh): builds the release binary if it is missing and sets `bin` and `pgbin` (the
# newest PostgreSQL, as the daemon picks it; SEQROUTE_PG_BIN overrides both).
# `start_ledger <name> [sql folder] [seqroute binary]` starts `seqroute serve` (this checkout's
# release build by default) on a fresh embedded cluster in a temporary folder named after
# <name>, migrated from the SQL folder (sql/ by default), creates the account `default`, and sets
# `dir`, `dsn`, `sock` (the daemon's socket) and `daemon` (its pid); `stop_ledger` stops the
# last one started and removes its folder. On exit every daemon started and not stopped is
# stopped and its folder removed, showing the logs if the script failed. A
# script that runs pgbench in the background keeps its pid in `bench`, so that it is stopped too.
# Defines `cpu` and `pgbench_backend`, with which they measure the backend that pgbench drives.
bin=.build/release/seqroute
[ -x "$bin" ] || swift build -c release
pgbin=${SEQROUTE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
daemons=() folders=() bench=''
finish() {
    local status=$? d
    [ -n "$bench" ] && kill "$bench" 2>/dev/null || true
    for d in "${daemons[@]}"; do kill -TERM "$d" 2>/dev/null && wait "$d" || true; done
    if [ "$status" -ne 0 ]; then
        echo "failed; the logs:" >&2
        for d in "${folders[@]}"; do tail -n 20 "$d"/*.log "$d"/*.out >&2 2>/dev/null || true; done
    fi
    rm -rf "${folders[@]}"
}
trap finish EXIT
start_ledger() {
    dir=$(mktemp -d "/tmp/seqroute-$1.XXXXXX")
    chmod 755 "$dir"
    folders+=("$dir")
    dsn="host=$dir/pg/run dbname=seqroute user=seqroute"
    sock=$dir/s.sock
    "${3:-$bin}" serve --config config/seqroute.toml --socket "$sock" --data-dir "$dir/pg" --sql-dir "${2:-sql}" \
        2>"$dir/daemon.log" &
    daemon=$!
    daemons+=("$daemon")
    for _ in $(seq 300); do
        [ -S "$sock" ] && break
        kill -0 "$daemon" 2>/dev/null || { echo "the daemon for $1 stopped" >&2; exit 1; }
        sleep 0.1
    done
    "$bin" account set default --cap 100000000000000 --dsn "$dsn" >/dev/null
}
stop_ledger() {
    kill -TERM "$daemon" 2>/dev/null && wait "$daemon" || true
    unset 'daemons[-1]' 'folders[-1]'
    rm -rf "$dir"
}
# The CPU a process has used, user and system, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The pid of the backend serving pgbench's client on the ledger at <dsn>, found by what it runs
# (a LIKE pattern).
pgbench_backend() {
    local pid=''
    for _ in $(seq 50); do
        pid=$(psql -Atq "$1" -c "SELECT pid FROM pg_stat_activity
                                  WHERE application_name = 'pgbench' AND query LIKE '$2' LIMIT 1")
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || { echo "pgbench did not start running $2" >&2; return 1; }
    echo "$pid"
}
