#!/usr/bin/env bash
# The run command: installs what is missing, builds the release binary and runs the daemon on
# the embedded default ledger (a private PostgreSQL cluster in .seqroute/, started and stopped
# by the daemon). Extra arguments go to `seqroute serve`. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
mkdir -p .seqroute
exec .build/release/seqroute serve --config config/seqroute.toml \
    --socket "$PWD/.seqroute/seqroute.sock" --data-dir "$PWD/.seqroute" "$@"
