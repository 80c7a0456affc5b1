#!/usr/bin/env bash
# Installs SeqRoute where its systemd units expect it:
#   <prefix>/bin/seqroute, <prefix>/share/seqroute/sql/ (and sql/functions/), <prefix>/share/doc/seqroute/,
#   <sysconfdir>/seqroute/seqroute.toml (kept if present), the units in <unitdir>,
#   and the seqroute system user. Then: systemctl daemon-reload &&
#   systemctl enable --now seqroute.socket seqroute seqroute-refit.timer
#
# Options: --prefix DIR (default /usr/local), --sysconfdir DIR (default /etc),
#          --unitdir DIR (default /etc/systemd/system), --binary FILE (default: a release build),
#          --no-user (do not create the seqroute user).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local sysconfdir=/etc unitdir=/etc/systemd/system binary="" make_user=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --sysconfdir) sysconfdir="$2"; shift 2 ;;
        --unitdir) unitdir="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --no-user) make_user=0; shift ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    swift build -c release
    binary=.build/release/seqroute
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

install -d "$prefix/bin" "$prefix/share/seqroute/sql/functions" "$prefix/share/doc/seqroute" "$sysconfdir/seqroute" "$unitdir"
install -m 0755 "$binary" "$prefix/bin/seqroute"
install -m 0644 sql/*.sql "$prefix/share/seqroute/sql/"
install -m 0644 sql/functions/*.sql "$prefix/share/seqroute/sql/functions/"
install -m 0644 README.md docs/*.md "$prefix/share/doc/seqroute/"
for unit in systemd/*.service systemd/*.socket systemd/*.timer; do
    sed -e "s#/usr/local#$prefix#g" -e "s#/etc/seqroute/#$sysconfdir/seqroute/#g" "$unit" > "$unitdir/$(basename "$unit")"
    chmod 0644 "$unitdir/$(basename "$unit")"
done
config="$sysconfdir/seqroute/seqroute.toml"
if [ -e "$config" ]; then
    install -m 0640 config/seqroute.toml "$config.new"
    echo "kept $config; the shipped one is $config.new"
else
    install -m 0640 config/seqroute.toml "$config"
fi

if [ "$make_user" = 1 ]; then
    if ! id seqroute >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/seqroute --no-create-home --shell /usr/sbin/nologin seqroute
    fi
    chgrp seqroute "$config"
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "installed seqroute in $prefix, units in $unitdir, configuration in $sysconfdir/seqroute"
