#!/usr/bin/env bash
# Fuzzes the line protocol's parser and request validation with libFuzzer (docs/PROTOCOL.md, "Fuzzing the parser").
# Usage: scripts/fuzz.sh [seconds, default 600] [extra libFuzzer flags...]
# Builds .build/fuzz/protocol-fuzzer (SeqRouteCore's sources and Fuzz/ProtocolFuzzer.swift in one
# module, with coverage instrumentation and AddressSanitizer), then runs it on a working copy of
# the seed corpus Fuzz/corpus in .build/fuzz/corpus. A crash leaves its input in .build/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
mkdir -p .build/fuzz/corpus
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name ProtocolFuzzer \
    Sources/SeqRouteCore/*.swift Fuzz/ProtocolFuzzer.swift -o .build/fuzz/protocol-fuzzer
cp -n Fuzz/corpus/* .build/fuzz/corpus/ 2>/dev/null || true
cd .build/fuzz
exec ./protocol-fuzzer -max_total_time="$seconds" -max_len=4096 -dict=../../Fuzz/protocol.dict \
    -print_final_stats=1 "$@" corpus
