#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test against a real
# PostgreSQL that the tests start themselves (as the postgres user when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build
swift test
