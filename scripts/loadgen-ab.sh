#!/usr/bin/env bash
# Decisions per second at 64 connections, this checkout against another SQL folder or another
# seqroute binary (or both), on fresh embedded clusters, in pairs of runs in ABBA order: this
# checkout, the other, the other, this checkout, and so on. Each run warms up (WARMUP sessions),
# then `seqroute loadgen --connections CONNECTIONS --sessions SESSIONS` (8 turns a session),
# and prints its decisions per second and the CPU per decision of the busiest PostgreSQL backend
# (the one that applies the batches) and of the daemon, from /proc. Then the medians, and in how
# many pairs this checkout made more decisions per second. The load generator is this
# checkout's in every run. The machine's speed drifts by more than most changes are worth; pairs
# taken back to back share most of the drift.
#   COMPARE_SQL=/tmp/before/sql scripts/loadgen-ab.sh
#   COMPARE_BIN=/tmp/before/seqroute PAIRS=4 scripts/loadgen-ab.sh
set -euo pipefail
other_sql='' other_bin=''
if [ -n "${COMPARE_SQL:-}" ]; then
    other_sql=$(realpath "$COMPARE_SQL")
    [ -f "$other_sql/001_schema.sql" ] || { echo "COMPARE_SQL names no SQL folder: $other_sql" >&2; exit 2; }
fi
if [ -n "${COMPARE_BIN:-}" ]; then
    other_bin=$(realpath "$COMPARE_BIN")
    [ -x "$other_bin" ] || { echo "COMPARE_BIN is not an executable: $other_bin" >&2; exit 2; }
fi
[ -n "$other_sql$other_bin" ] || { echo "name what to compare with: COMPARE_SQL=<folder> and/or COMPARE_BIN=<binary>" >&2; exit 2; }
cd "$(dirname "$0")/.."
for v in PAIRS CONNECTIONS SESSIONS WARMUP; do
    [[ "${!v:-1}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive whole number" >&2; exit 2; }
done
pairs=${PAIRS:-8} connections=${CONNECTIONS:-64} sessions=${SESSIONS:-6000} warmup=${WARMUP:-600}
source scripts/throwaway-ledger.sh
ticks=$(getconf CLK_TCK)
run() {  # this or other: sets `result` to "decisions/s backend-µs daemon-µs"
    if [ "$1" = this ]; then start_ledger loadgen-ab; else start_ledger loadgen-ab "${other_sql:-sql}" "${other_bin:-$bin}"; fi
    "$bin" loadgen --socket "$sock" --connections "$connections" --sessions "$warmup" >/dev/null
    local postmaster pids p busiest=0 used d0 d1 out dps decisions
    postmaster=$(pgrep -f -- "-D $dir/pg/pgdata" | head -1 || true)
    [ -n "$postmaster" ] || { echo "cannot find the PostgreSQL of $dir" >&2; exit 1; }
    # The postmaster's children: the backend that applies the batches is the busiest of them.
    # Others (autovacuum workers) may end during the run, and then count as nothing.
    pids=$(pgrep -P "$postmaster" || true)
    declare -A before
    for p in $pids; do before[$p]=$(cpu "$p" 2>/dev/null || echo 0); done
    d0=$(cpu "$daemon")
    out=$("$bin" loadgen --socket "$sock" --connections "$connections" --sessions "$sessions")
    d1=$(cpu "$daemon")
    for p in $pids; do
        used=$(( $(cpu "$p" 2>/dev/null || echo "${before[$p]}") - ${before[$p]} ))
        [ "$used" -gt "$busiest" ] && busiest=$used
    done
    stop_ledger
    dps=$(grep -o 'decisions_per_second=[0-9]*' <<<"$out" | cut -d= -f2 || true)
    decisions=$(grep -o '^decisions=[0-9]*' <<<"$out" | cut -d= -f2 || true)
    [ -n "$dps" ] && [ -n "$decisions" ] || { echo "the load generator printed no rate: $out" >&2; exit 1; }
    grep -q ' errors=0' <<<"$out" || { echo "the load generator saw errors: $out" >&2; exit 1; }
    result=$(python3 -c "print('%s %.1f %.1f' % ($dps, 1e6 * $busiest / $ticks / $decisions, 1e6 * ($d1 - $d0) / $ticks / $decisions))")
}
this=() other=()
for pair in $(seq "$pairs"); do
    if [ $((pair % 2)) = 1 ]; then
        run this; a=$result; run other; b=$result
    else
        run other; b=$result; run this; a=$result
    fi
    this+=("$a") other+=("$b")
    read -r ad ab am <<<"$a"
    read -r bd bb bm <<<"$b"
    echo "pair $pair: this checkout $ad/s (backend $ab us, daemon $am us per decision), the other $bd/s ($bb us, $bm us)"
done
python3 - "${this[@]}" -- "${other[@]}" <<'PY'
import sys, statistics as st
args = sys.argv[1:]
cut = args.index('--')
this = [list(map(float, a.split())) for a in args[:cut]]
other = [list(map(float, a.split())) for a in args[cut + 1:]]
med = lambda rows, i: st.median(r[i] for r in rows)
print('medians: this checkout %.0f/s, backend %.1f us, daemon %.1f us per decision; the other %.0f/s, %.1f us, %.1f us'
      % (med(this, 0), med(this, 1), med(this, 2), med(other, 0), med(other, 1), med(other, 2)))
print('this checkout made more decisions per second in %d of %d pairs; its runs %.0f - %.0f/s, the other\'s %.0f - %.0f/s'
      % (sum(t[0] > o[0] for t, o in zip(this, other)), len(this), min(r[0] for r in this), max(r[0] for r in this),
         min(r[0] for r in other), max(r[0] for r in other)))
PY
