#!/usr/bin/env bash
# Checks deploy/weir.service with systemd-analyze verify, against the given
# binary in place of /usr/local/bin/weir. Any warning fails the check (an
# unknown or misspelt setting is only a warning to systemd).
# usage: deploy/check-systemd.sh path/to/weir
set -euo pipefail
bin="$(realpath "$1")"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed "s#/usr/local/bin/weir#$bin#" "$here/weir.service" > "$work/weir.service"
out="$(systemd-analyze verify "$work/weir.service" 2>&1)" || {
  echo "$out"
  echo "systemd-analyze verify failed"
  exit 1
}
if [ -n "$out" ]; then
  echo "$out"
  echo "systemd-analyze verify printed warnings"
  exit 1
fi
echo "deploy/weir.service: systemd-analyze verify clean"
