#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test against a real
# PostgreSQL that the tests start themselves (as the postgres user when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build
# The units must pass systemd-analyze verify as installed (it checks the binaries they name).
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
scripts/install.sh --prefix "$units/usr" --sysconfdir "$units/etc" --unitdir "$units/units" \
    --binary .build/debug/seqroute --no-user >/dev/null
systemd-analyze verify "$units"/units/*
echo "systemd-analyze verify: $(ls "$units/units" | tr '\n' ' ')passed"
swift test
