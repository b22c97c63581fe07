#!/usr/bin/env bash
# A real Prometheus scrapes a real weir: checks that /metrics parses and that
# the alert rules load. Usage: deploy/check-prometheus.sh [path/to/weir]
set -euo pipefail
cd "$(dirname "$0")/.."
WEIR_BIN="${1:-target/debug/weir}"
command -v prometheus >/dev/null || { echo "prometheus is not installed"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
kport="$(free_port)"; hport="$(free_port)"; pport="$(free_port)"
cleanup() {
  [ -n "${wpid:-}" ] && kill "$wpid" 2>/dev/null || true
  [ -n "${ppid_:-}" ] && kill "$ppid_" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$WEIR_BIN" --listen "127.0.0.1:$kport" --advertised-listener "127.0.0.1:$kport" \
  --http-listen "127.0.0.1:$hport" --data-dir "$work/data" --log-format text >"$work/weir.log" 2>&1 &
wpid=$!
cp deploy/alerts.yml "$work/alerts.yml"
cat >"$work/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $work/alerts.yml
scrape_configs:
  - job_name: weir
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$hport"]
CONF
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$pport" >"$work/prometheus.log" 2>&1 &
ppid_=$!
query() {
  python3 - "$pport" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
port, q = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(q)}"
try:
    data = json.load(urllib.request.urlopen(url, timeout=2))
    res = data["data"]["result"]
    print(res[0]["value"][1] if res else "")
except Exception:
    print("")
PY
}
for _ in $(seq 1 60); do
  up="$(query 'up{job="weir"}')"
  weir_up="$(query 'weir_up')"
  rules="$(python3 -c "import json,urllib.request;print(len(json.load(urllib.request.urlopen('http://127.0.0.1:$pport/api/v1/rules',timeout=2))['data']['groups'][0]['rules']))" 2>/dev/null || true)"
  if [ "$up" = "1" ] && [ "$weir_up" = "1" ] && [ -n "$rules" ]; then
    echo "prometheus scraped weir: up=1 weir_up=1, $rules alert rules loaded"
    exit 0
  fi
  sleep 0.5
done
echo "prometheus did not scrape weir (up='$up' weir_up='$weir_up')"
tail -20 "$work/prometheus.log"
exit 1
