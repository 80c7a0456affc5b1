#!/usr/bin/env bash
# Installs the Debian packages SeqRoute needs, if any is missing: libpq-dev, libopenblas-dev and pkg-config to
# build, the postgresql server for the embedded ledger and the tests, systemd's tools for the
# socket-activation test. Swift itself is assumed.
set -euo pipefail

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
pkg-config --exists openblas 2>/dev/null || missing+=(libopenblas-dev)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
