#!/usr/bin/env bash
# Points headless Chromium at weir's admin API from pages of other origins and
# checks that none of them can redrive a dead-letter topic, judged by the
# broker's own state and log, while the same-origin dashboard keeps working:
#  - a page of another origin (another loopback port): two form posts
#    (url-encoded, and text/plain carrying a JSON-looking body), two no-cors
#    fetches (text body, no body) and a CORS fetch with a JSON body;
#  - a DNS-rebinding page: the browser believes the broker is at evil.test
#    (host resolver rule) and posts JSON same-origin; the page's server
#    forwards the browser's bytes to the broker unchanged, as a rebound DNS
#    name would.
# Then `weir dlq redrive` from the command line moves the record, showing that
# the state checked above does move when a redrive happens.
# Usage: deploy/check-cross-origin.sh [path/to/weir]   (needs chromium and kcat)
set -euo pipefail
cd "$(dirname "$0")/.."
WEIR_BIN="${1:-target/debug/weir}"
command -v chromium >/dev/null || { echo "chromium is not installed"; exit 1; }
command -v kcat >/dev/null || { echo "kcat is not installed"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
kport="$(free_port)"; hport="$(free_port)"; aport="$(free_port)"
cleanup() {
  [ -n "${wpid:-}" ] && kill "$wpid" 2>/dev/null || true
  [ -n "${apid:-}" ] && kill "$apid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- weir log (tail)"; tail -n 30 "$work/weir.log"; exit 1; }

"$WEIR_BIN" --listen "127.0.0.1:$kport" --advertised-listener "127.0.0.1:$kport" \
  --http-listen "127.0.0.1:$hport" --data-dir "$work/data" --log-format text >"$work/weir.log" 2>&1 &
wpid=$!
for _ in $(seq 1 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$hport/api/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done

# One dead letter in xo.dlq; nothing in xo.retry until a redrive happens.
echo seed | kcat -b "127.0.0.1:$kport" -P -t xo
echo dead-letter | kcat -b "127.0.0.1:$kport" -P -t xo.dlq
retry_records() {
  python3 - "$hport" <<'PY'
import json, sys, urllib.request
topics = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/topics", timeout=5))["topics"]
print(sum(p["high_watermark"] for t in topics if t["name"] == "xo.retry" for p in t["partitions"]))
PY
}
[ "$(retry_records)" = "0" ] || fail "xo.retry is not empty before the pages run"

# The other origin's pages, served from 127.0.0.1:$aport (and, for the
# rebinding page, under the name evil.test).
target="http://127.0.0.1:$hport/api/dlq/xo/redrive"
cat >"$work/attack.html" <<HTML
<!doctype html><title>attack</title>
<pre id="log"></pre>
<iframe name="f1"></iframe><iframe name="f2"></iframe>
<form id="urlencoded" method="POST" action="$target" target="f1"><input name="to" value="retry"></form>
<form id="textplain" method="POST" action="$target" target="f2" enctype="text/plain"><input name='{"to":"retry","x":"' value='"}'></form>
<script>
function note(s) { document.getElementById('log').textContent += s + '\n'; }
document.getElementById('urlencoded').submit();
document.getElementById('textplain').submit();
Promise.all([
  fetch('$target', {method: 'POST', mode: 'no-cors', body: '{"to":"retry"}'})
    .then(r => note('no-cors text: ' + r.type), e => note('no-cors text: ' + e)),
  fetch('$target', {method: 'POST', mode: 'no-cors'})
    .then(r => note('no-cors empty: ' + r.type), e => note('no-cors empty: ' + e)),
  fetch('$target', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"to":"retry"}'})
    .then(r => note('cors json: ' + r.status), e => note('cors json: blocked')),
]).then(() => note('attack done'));
</script>
HTML
cat >"$work/rebind.html" <<'HTML'
<!doctype html><title>rebind</title>
<pre id="log"></pre>
<script>
function note(s) { document.getElementById('log').textContent += s + '\n'; }
Promise.all([
  fetch('/api/dlq/xo/redrive', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"to":"retry"}'})
    .then(r => r.text().then(t => note('rebind post: ' + r.status + ' ' + t))),
  fetch('/api/dlq/xo').then(r => r.text().then(t => note('rebind read: ' + r.status + ' ' + t))),
]).catch(e => note('rebind: ' + e)).then(() => note('rebind done'));
</script>
HTML
python3 - "$aport" "$hport" "$work" >"$work/pages.log" 2>&1 <<'PY' &
# Serves the two pages; forwards any other request to the broker byte for
# byte (Host and Origin as the browser sent them).
import socket, sys, threading
aport, hport, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def relay(src, dst):
    try:
        while (data := src.recv(65536)):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

def handle(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            conn.close()
            return
        head += chunk
    path = head.split(b" ", 2)[1].decode()
    if path in ("/attack.html", "/rebind.html"):
        body = open(root + path, "rb").read()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        conn.close()
        return
    print("forwarded:", head.split(b"\r\n", 1)[0].decode(), flush=True)
    up = socket.create_connection(("127.0.0.1", hport))
    up.sendall(head)
    threading.Thread(target=relay, args=(up, conn), daemon=True).start()
    relay(conn, up)

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", aport))
srv.listen(64)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
PY
apid=$!
for _ in $(seq 1 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$aport/attack.html', timeout=1)" 2>/dev/null && break
  sleep 0.1
done

dom() {
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --host-resolver-rules="MAP evil.test 127.0.0.1" \
    --user-data-dir="$work/profile-$1" --virtual-time-budget=5000 --run-all-compositor-stages-before-draw \
    --dump-dom "$2" 2>/dev/null
}
attack="$(dom attack "http://127.0.0.1:$aport/attack.html")"
echo "$attack" | grep -q "attack done" || fail "the cross-origin page did not run: $attack"
echo "$attack" | sed -n '/<pre id="log">/,/<\/pre>/p' | sed 's/<[^>]*>//g' | sed '/^$/d; s/^/  cross-origin page: /'
rebind="$(dom rebind "http://evil.test:$aport/rebind.html")"
echo "$rebind" | grep -q "rebind done" || fail "the rebinding page did not run: $rebind"
echo "$rebind" | sed -n '/<pre id="log">/,/<\/pre>/p' | sed 's/<[^>]*>//g' | sed '/^$/d; s/^/  rebinding page: /'
grep -q "forwarded: POST /api/dlq/xo/redrive" "$work/pages.log" || fail "the rebinding page's POST never reached the broker"

# Judged by the broker: nothing moved, and it saw and refused the requests.
sleep 1
[ "$(retry_records)" = "0" ] || fail "a page of another origin redrove the DLQ (xo.retry holds $(retry_records) records)"
cross="$(grep 'refused: cross-origin' "$work/weir.log" | grep -c 'path="/api/dlq/xo/redrive"' || true)"
hosts="$(grep 'refused: Host names another site' "$work/weir.log" | grep -c 'path="/api/dlq/xo' || true)"
[ "$cross" -ge 4 ] || fail "expected the broker to refuse >= 4 cross-origin posts (2 forms, 2 no-cors fetches), it logged $cross"
[ "$hosts" -ge 2 ] || fail "expected the broker to refuse the rebinding page's post and read by Host, it logged $hosts"
echo "broker refused $cross cross-origin posts and $hosts requests with a foreign Host; xo.retry still empty"

# The same-origin dashboard still renders live figures.
page="$(dom dashboard "http://127.0.0.1:$hport/")"
topics="$(echo "$page" | python3 -c "import re,sys; m=re.search(r'id=\"topics\">([^<]*)<', sys.stdin.read()); print(m.group(1) if m else '')")"
[ "$topics" = "2" ] || fail "the dashboard did not render the topic count (got '$topics')"
echo "$page" | grep -q "<td>xo.dlq</td>" || fail "the dashboard does not list xo.dlq"

# The command line still redrives, and the state checked above moves.
"$WEIR_BIN" dlq redrive xo --http-listen "127.0.0.1:$hport" >/dev/null || fail "weir dlq redrive failed"
[ "$(retry_records)" = "1" ] || fail "weir dlq redrive did not move the record"
echo "dashboard renders (topics=$topics); weir dlq redrive moved 1 record to xo.retry"
