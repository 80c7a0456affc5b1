# Sourced by the backend benchmarks (ledger-floor.sh, batch-cost.sh), with a name for the
# temporary folder: builds the release binary if it is missing, starts `seqroute serve` on a
# fresh embedded cluster in that folder, creates the account `default`, and on exit stops the
# daemon and removes the folder, showing the logs if the script failed. Sets `bin`, `pgbin` (the
# newest PostgreSQL, as the daemon picks it; SEQROUTE_PG_BIN overrides both), `dir` and `dsn`. A
# script that runs pgbench in the background keeps its pid in `bench`, so that it is stopped too.
# Defines `cpu` and `pgbench_backend`, with which they measure the backend that pgbench drives.
bin=.build/release/seqroute
[ -x "$bin" ] || swift build -c release
pgbin=${SEQROUTE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
dir=$(mktemp -d "/tmp/seqroute-$1.XXXXXX")
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
# The CPU a process has used, user and system, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The pid of the backend serving pgbench's client, found by what it runs (a LIKE pattern).
pgbench_backend() {
    local pid=''
    for _ in $(seq 50); do
        pid=$(psql -Atq "$dsn" -c "SELECT pid FROM pg_stat_activity
                                    WHERE application_name = 'pgbench' AND query LIKE '$1' LIMIT 1")
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || { echo "pgbench did not start running $1" >&2; return 1; }
    echo "$pid"
}
