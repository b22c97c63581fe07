#!/usr/bin/env bash
# Opens the dashboard in headless Chromium and checks that it renders live
# figures that change after records are produced.
# Usage: deploy/check-dashboard.sh [path/to/weir]   (needs chromium and kcat)
set -euo pipefail
cd "$(dirname "$0")/.."
WEIR_BIN="${1:-target/debug/weir}"
command -v chromium >/dev/null || { echo "chromium is not installed"; exit 1; }
command -v kcat >/dev/null || { echo "kcat is not installed"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
kport="$(free_port)"; hport="$(free_port)"
cleanup() {
  [ -n "${wpid:-}" ] && kill "$wpid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$WEIR_BIN" --listen "127.0.0.1:$kport" --advertised-listener "127.0.0.1:$kport" \
  --http-listen "127.0.0.1:$hport" --data-dir "$work/data" --log-format text >"$work/weir.log" 2>&1 &
wpid=$!
for _ in $(seq 1 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$hport/api/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
dom() {
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile-$1" --virtual-time-budget=5000 --run-all-compositor-stages-before-draw \
    --dump-dom "http://127.0.0.1:$hport/" 2>/dev/null
}
cell() { python3 -c "import re,sys; m=re.search(r'id=\"$1\">([^<]*)<', sys.stdin.read()); print(m.group(1) if m else '')"; }
before="$(dom 1)"
[ "$(echo "$before" | cell topics)" = "0" ] || { echo "dashboard did not render the topic count"; echo "$before" | head -40; exit 1; }
seq 1 25 | kcat -b "127.0.0.1:$kport" -P -t dashboard-check
after="$(dom 2)"
topics="$(echo "$after" | cell topics)"
records="$(echo "$after" | cell records)"
if ! { [ "$topics" = "1" ] && [ "$records" = "25" ] && echo "$after" | grep -q "<td>dashboard-check</td>"; }; then
  echo "dashboard figures did not change as expected (topics='$topics' records='$records')"
  echo "$after" | head -60
  exit 1
fi
echo "dashboard rendered live figures: topics 0 -> $topics, records in -> $records"
if echo "$after" | grep -q '<div id="cluster">'; then
  echo "a single broker's dashboard shows a cluster section"
  exit 1
fi

# A broker of a cluster (a quorum of one): the cluster section shows it.
kill "$wpid"; wait "$wpid" 2>/dev/null || true
cport="$(free_port)"
"$WEIR_BIN" --listen "127.0.0.1:$kport" --advertised-listener "127.0.0.1:$kport" \
  --http-listen "127.0.0.1:$hport" --data-dir "$work/cluster" --log-format text \
  --node-id 1 --controller-quorum-voters "1@127.0.0.1:$cport" >"$work/weir-cluster.log" 2>&1 &
wpid=$!
for _ in $(seq 1 100); do
  python3 -c "import urllib.request, json; c = json.load(urllib.request.urlopen('http://127.0.0.1:$hport/api/status', timeout=1))['cluster']; assert c['controller'] == 1 and c['brokers']" 2>/dev/null && break
  sleep 0.1
done
clustered="$(dom 3)"
role="$(echo "$clustered" | cell role)"
controller="$(echo "$clustered" | cell controller)"
if echo "$clustered" | grep -q '<div id="cluster">' && [ "$role" = "leader" ] && [ "$controller" = "1" ] &&
   echo "$clustered" | grep -q "<td>127.0.0.1:$kport</td>"; then
  echo "dashboard shows the cluster: role $role, controller $controller, broker 127.0.0.1:$kport"
  exit 0
fi
echo "dashboard did not show the cluster (role='$role' controller='$controller')"
echo "$clustered" | head -60
exit 1
