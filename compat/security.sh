#!/usr/bin/env bash
# weir security check: TLS, SASL, ACLs, users and quotas across clients.
#
# Starts its own broker from $WEIR_BIN in a temporary data directory (the
# broker compat/run starts has no security settings, so BOOTSTRAP is ignored):
# four listeners on free loopback ports -- PLAINTEXT, SSL, SASL_PLAINTEXT,
# SASL_SSL -- with --authorizer acl and --super-users User:admin, a CA, a
# server certificate (localhost, 127.0.0.1) and a client certificate
# (CN=alice,O=Example) made with openssl, and users added with `weir users`.
# Then checks, one "PASS <check>" / "FAIL <check>" line each:
#
#   kcat         Metadata on every listener advertises that listener; produce
#                and consume as admin over SASL_PLAINTEXT and SASL_SSL with
#                PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; ANONYMOUS (SSL,
#                PLAINTEXT) may read Metadata but not produce, and creates no
#                topic; wrong passwords and unknown users are refused; a SASL
#                listener closes a client that does not authenticate
#   weir users   add (--password and stdin), list and delete while the broker
#                runs; users.json holds no clear-text password, mode 0600
#   confluent-kafka (security_acls.py acls)   ACLs for alice on a topic and a
#                group, deny wins, prefixed patterns, filtered Metadata,
#                User:ANONYMOUS, admin APIs refused to other users,
#                Describe/DeleteAcls, Alter/DescribeUserScramCredentials
#   kafka-python + confluent-kafka (security_quotas.py)   AlterClientQuotas,
#                DescribeClientQuotas, precedence, throttling
#   kafkajs (security_kafkajs.js)   SASL_SSL with SCRAM and PLAIN; a wrong
#                password is refused after the failure delay
#   metrics and log   weir_sasl_authentication_failures_total,
#                weir_throttled_responses_total,
#                weir_tls_handshake_failures_total; failed authentications
#                are logged; no password or admin token is
#   restart with --tls-client-ca and --http-tls: the admin API over HTTPS
#                only; mTLS on the SSL listener (with and without a client
#                certificate; the certificate subject is the principal ACLs
#                match, security_acls.py mtls); ACLs survive the restart;
#                SASL_SSL needs no certificate; a replaced server certificate
#                is served without a restart
#
# A missing tool (kcat, node with kafkajs, the compat venv) is a FAIL, never a
# skip. Exits 0 only when every check passed.
#
# Environment:
#   WEIR_BIN         broker binary (required; compat/run exports it)
#   STEP_TIMEOUT     seconds for one client call (default 20)
#   SECURITY_BUDGET  seconds for the whole script (default 280)
#   KEEP_TMP=1       keep the temporary directory (certificates, data)
# The broker's log is compat/logs/security-broker.log.
set -euo pipefail

COMPAT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$COMPAT/.venv/bin/python"
LOGS="$COMPAT/logs"
BROKER_LOG="$LOGS/security-broker.log"
STEP_TIMEOUT="${STEP_TIMEOUT:-20}"
BUDGET="${SECURITY_BUDGET:-280}"
FAILURE_DELAY_MS=500
START=$SECONDS

checks=0
failures=()
pass() { checks=$((checks + 1)); echo "PASS $1"; }
fail() {
  checks=$((checks + 1)); failures+=("$1"); echo "FAIL $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed -n '1,30s/^/      | /p' "$2"; fi
}
summary() {
  echo
  if [ "${#failures[@]}" -eq 0 ]; then
    echo "security: all $checks checks passed"
    return 0
  fi
  echo "security: ${#failures[@]} of $checks checks FAILED:"
  printf '  - %s\n' "${failures[@]}"
  return 1
}
# Stops here: the summary so far, exit 1.
abort() { fail "$1" "${2:-}"; echo "aborting: later checks need this"; summary || true; exit 1; }

# Seconds a step may take: STEP_TIMEOUT (or $1), cut to what is left of the budget.
step_limit() {
  local want="${1:-$STEP_TIMEOUT}" left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -le 0 ]; then return 1; fi
  [ "$left" -lt "$want" ] && want=$left
  echo "$want"
}

# ---------------------------------------------------------------- tools
mkdir -p "$LOGS"
: "${WEIR_BIN:=}"
if [ -z "$WEIR_BIN" ] || [ ! -x "$WEIR_BIN" ]; then
  abort "broker binary: WEIR_BIN is unset or not executable (${WEIR_BIN:-unset})"
fi
for tool in openssl curl python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || abort "$tool is not installed (needed to set up the check)"
done

HAVE_KCAT=0
if command -v kcat >/dev/null 2>&1; then
  HAVE_KCAT=1
  pass "kcat available ($(kcat -V 2>&1 | sed -n 's/^Version //p' | cut -c1-60))"
else
  fail "kcat is not installed (compat/run installs the Debian package kcat)"
fi
HAVE_PY=0
if [ -x "$PY" ] && "$PY" -c 'import confluent_kafka, kafka' >/dev/null 2>&1; then
  HAVE_PY=1
  pass "compat venv with confluent-kafka and kafka-python available"
else
  fail "compat venv missing or without confluent-kafka / kafka-python ($PY; compat/run creates it)"
fi
HAVE_NODE=0
if command -v node >/dev/null 2>&1 && [ -f "$COMPAT/node_modules/kafkajs/package.json" ]; then
  HAVE_NODE=1
  pass "node $(node --version) with kafkajs available"
else
  fail "node or compat/node_modules/kafkajs missing (compat/run installs kafkajs with npm)"
fi

# ---------------------------------------------------------------- scratch space
TMP="$(mktemp -d "${TMPDIR:-/tmp}/weir-security.XXXXXX")"
CERTS="$TMP/tls"
DATA="$TMP/data"
mkdir -p "$CERTS" "$DATA"
BROKER_PID=""
stop_broker() {
  [ -n "$BROKER_PID" ] || return 0
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}
cleanup() {
  stop_broker
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Passwords are distinctive so that the log can be searched for them.
ADMIN_PW="admin-pw-$$-$RANDOM"
ALICE_PW="alice-pw-$$-$RANDOM"
BOB_PW="bob-pw-$$-$RANDOM"
CAROL_PW="carol-pw-$$-$RANDOM"
QUOTA_PW="quota-pw-$$-$RANDOM"
BAD_PW="wrong-pw-$$-$RANDOM"
ADMIN_TOKEN="admin-token-$$-$RANDOM$RANDOM"
MTLS_PRINCIPAL="User:CN=alice,O=Example"

# ---------------------------------------------------------------- certificates
# server_cert NAME: a certificate for localhost and 127.0.0.1 signed by the CA.
server_cert() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$CERTS/$1.key" -out "$CERTS/$1.csr" &&
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$CERTS/server.ext" &&
  openssl x509 -req -sha256 -days 2 -in "$CERTS/$1.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -extfile "$CERTS/server.ext" -out "$CERTS/$1.pem"
}
make_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=weir-compat-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" &&
  server_cert server &&
  openssl req -newkey rsa:2048 -nodes -subj "/O=Example/CN=alice" \
    -keyout "$CERTS/client.key" -out "$CERTS/client.csr" &&
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" >"$CERTS/client.ext" &&
  openssl x509 -req -sha256 -days 2 -in "$CERTS/client.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -extfile "$CERTS/client.ext" -out "$CERTS/client.pem"
}
if make_certs >"$TMP/openssl.log" 2>&1 &&
   openssl verify -CAfile "$CERTS/ca.pem" "$CERTS/server.pem" "$CERTS/client.pem" >>"$TMP/openssl.log" 2>&1; then
  pass "openssl: CA, server certificate (DNS:localhost, IP:127.0.0.1) and client certificate ($MTLS_PRINCIPAL)"
else
  abort "openssl could not make the certificates" "$TMP/openssl.log"
fi

# ---------------------------------------------------------------- users (broker not running yet)
# weir_users ARGS...: `weir users ARGS --data-dir DATA`, bounded in time.
weir_users() { timeout -k 5 20 "$WEIR_BIN" users "$@" --data-dir "$DATA"; }
added=()
for u in admin:"$ADMIN_PW" alice:"$ALICE_PW" quota:"$QUOTA_PW"; do
  if weir_users add "${u%%:*}" --password "${u#*:}" >"$TMP/users.out" 2>&1; then
    added+=("${u%%:*}")
  else
    abort "weir users add ${u%%:*} --password ... --data-dir DIR failed" "$TMP/users.out"
  fi
done
pass "weir users add ${added[*]} (--password) before the broker starts"

# ---------------------------------------------------------------- broker
ports="$(python3 - <<'EOF'
import socket
socks = []
for _ in range(5):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)" || abort "could not pick free ports"
read -r P_PLAIN P_SSL P_SASL P_SASL_SSL HPORT <<<"$ports"
LISTEN="PLAINTEXT://127.0.0.1:$P_PLAIN,SSL://127.0.0.1:$P_SSL,SASL_PLAINTEXT://127.0.0.1:$P_SASL,SASL_SSL://127.0.0.1:$P_SASL_SSL"
ADVERTISED="127.0.0.1:$P_PLAIN,127.0.0.1:$P_SSL,127.0.0.1:$P_SASL,127.0.0.1:$P_SASL_SSL"
HTTP="127.0.0.1:$HPORT"
HTTP_SCHEME=http

# start_broker LABEL [FLAGS...]: the broker with the common flags plus FLAGS.
# The admin token goes through the environment, so that it appears in no
# command line and nothing here writes it to the log.
start_broker() {
  local label=$1; shift
  echo "== $(date -u +%FT%TZ) $label: listeners $LISTEN, http $HTTP, data $DATA, extra flags: $*" >>"$BROKER_LOG"
  WEIR_ADMIN_TOKEN="$ADMIN_TOKEN" "$WEIR_BIN" --listen "$LISTEN" --advertised-listener "$ADVERTISED" \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" --tls-reload-interval-ms 500 \
    --authorizer acl --super-users User:admin --sasl-failure-delay-ms "$FAILURE_DELAY_MS" \
    --http-listen "$HTTP" --data-dir "$DATA" --log-format text \
    --group-initial-rebalance-delay-ms 500 "$@" >>"$BROKER_LOG" 2>&1 </dev/null &
  BROKER_PID=$!
}
health() {
  local opts=(-sf -o /dev/null --max-time 2)
  [ "$HTTP_SCHEME" = https ] && opts+=(--cacert "$CERTS/ca.pem")
  curl "${opts[@]}" "$HTTP_SCHEME://$HTTP/api/health"
}
wait_ready() {
  local deadline=$((SECONDS + 30)) p
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      wait "$BROKER_PID" 2>/dev/null || true
      BROKER_PID=""
      return 1
    fi
    if health; then
      for p in "$P_PLAIN" "$P_SSL" "$P_SASL" "$P_SASL_SSL"; do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || continue 2
      done
      return 0
    fi
    sleep 0.2
  done
  return 1
}

: >"$BROKER_LOG"
start_broker "phase 1"
if wait_ready; then
  pass "broker up: PLAINTEXT :$P_PLAIN, SSL :$P_SSL, SASL_PLAINTEXT :$P_SASL, SASL_SSL :$P_SASL_SSL, http :$HPORT, --authorizer acl"
else
  tail -n 30 "$BROKER_LOG" >"$TMP/broker.tail"
  abort "broker did not become healthy within 30 s (see compat/logs/security-broker.log)" "$TMP/broker.tail"
fi

# ---------------------------------------------------------------- kcat helpers
# kc ARGS...: kcat with bounded timeouts; KC_META sets -m (metadata timeout, s).
kc() {
  if [ "$HAVE_KCAT" -ne 1 ]; then echo "kcat is not installed" >&2; return 127; fi
  local limit rc=0
  limit="$(step_limit)" || { echo "the ${BUDGET}s budget is used up" >&2; return 124; }
  timeout --foreground -k 5 "$limit" kcat -m "${KC_META:-10}" -X socket.timeout.ms=10000 \
    -X topic.metadata.refresh.interval.ms=1000 -X broker.address.family=v4 "$@" || rc=$?
  [ "$rc" -ne 124 ] || echo "kcat timed out after ${limit}s" >&2
  return "$rc"
}
# Client settings: AUTH is set to the -X options for PROTOCOL [MECHANISM USER PASSWORD].
TLS_OPTS=(-X "ssl.ca.location=$CERTS/ca.pem" -X ssl.endpoint.identification.algorithm=https)
auth() {
  AUTH=(-X "security.protocol=$1")
  case "$1" in SSL | SASL_SSL) AUTH+=("${TLS_OPTS[@]}") ;; esac
  case "$1" in SASL_*) AUTH+=(-X "sasl.mechanisms=$2" -X "sasl.username=$3" -X "sasl.password=$4") ;; esac
}
port_of() {
  case "$1" in PLAINTEXT) echo "$P_PLAIN" ;; SSL) echo "$P_SSL" ;; SASL_PLAINTEXT) echo "$P_SASL" ;; SASL_SSL) echo "$P_SASL_SSL" ;; esac
}
# as_admin: AUTH for admin over SASL_PLAINTEXT with SCRAM-SHA-256.
as_admin() { auth SASL_PLAINTEXT SCRAM-SHA-256 admin "$ADMIN_PW"; }
# topic_listed TOPIC: the super user's full Metadata lists TOPIC.
topic_listed() {
  as_admin
  kc -b "127.0.0.1:$P_SASL" "${AUTH[@]}" -L >"$TMP/admin-L.out" 2>"$TMP/admin-L.err" &&
    grep -Fq "topic \"$1\"" "$TMP/admin-L.out"
}
# What librdkafka prints when the broker refuses the credentials
# (SaslAuthenticate answered SASL_AUTHENTICATION_FAILED), as opposed to a
# client-side SASL setup error.
AUTH_FAILED_RE='SASL authentication error|Authentication failed'
# expect_auth_failure LABEL PORT: kcat -L with AUTH fails, reporting an
# authentication error.
expect_auth_failure() {
  local label=$1 port=$2 rc=0
  KC_META=5 kc -b "127.0.0.1:$port" "${AUTH[@]}" -L >"$TMP/af.out" 2>"$TMP/af.err" || rc=$?
  if [ "$rc" -eq 0 ]; then
    fail "$label: kcat -L succeeded" "$TMP/af.out"
  elif [ "$rc" -eq 124 ]; then
    fail "$label: kcat did not give up in time" "$TMP/af.err"
  elif grep -Eqi "$AUTH_FAILED_RE" "$TMP/af.err"; then
    pass "$label (kcat exit $rc: $(grep -Eio -m1 "($AUTH_FAILED_RE)[^(]*" "$TMP/af.err" | cut -c1-110))"
  else
    fail "$label: kcat failed (exit $rc) but the broker did not refuse the credentials" "$TMP/af.err"
  fi
}
# expect_produce_denied LABEL PORT TOPIC: a produce with AUTH is refused with
# an authorization error, and the topic is not created.
expect_produce_denied() {
  local label=$1 port=$2 topic=$3 rc=0
  echo "denied-record" >"$TMP/denied.in"
  kc -b "127.0.0.1:$port" "${AUTH[@]}" -P -t "$topic" -X message.timeout.ms=10000 \
    <"$TMP/denied.in" >"$TMP/denied.out" 2>"$TMP/denied.err" || rc=$?
  cat "$TMP/denied.out" >>"$TMP/denied.err"
  if grep -Eqi 'authori[sz]ation failed' "$TMP/denied.err"; then
    pass "$label: produce refused (exit $rc: $(grep -Ei -m1 -o '[^:]*authori[sz]ation failed' "$TMP/denied.err" | sed 's/^ *//'))"
  elif [ "$rc" -ne 0 ] || grep -qi 'delivery failed' "$TMP/denied.err"; then
    fail "$label: produce failed (exit $rc) but not with an authorization error" "$TMP/denied.err"
  else
    fail "$label: produce succeeded" "$TMP/denied.err"
  fi
  if topic_listed "$topic"; then
    fail "$label: the refused produce created topic $topic"
  elif [ -s "$TMP/admin-L.out" ]; then
    pass "$label: no topic $topic was created"
  else
    fail "$label: could not list topics as admin to see whether $topic was created" "$TMP/admin-L.err"
  fi
}

# expect_metric NAME MIN WHAT: GET /metrics; the counter NAME (summed over
# its labels) is at least MIN.
expect_metric() {
  local name=$1 min=$2 what=$3 opts=(-sf --max-time 5) n
  [ "$HTTP_SCHEME" = https ] && opts+=(--cacert "$CERTS/ca.pem")
  if ! curl "${opts[@]}" "$HTTP_SCHEME://$HTTP/metrics" >"$TMP/metrics" 2>"$TMP/metrics.err"; then
    fail "GET /metrics for $name failed" "$TMP/metrics.err"
    return 0
  fi
  n="$(awk -v m="$name" '$1 == m || index($1, m "{") == 1 { s += $NF } END { print s + 0 }' "$TMP/metrics")"
  if [ "${n%.*}" -ge "$min" ]; then
    pass "metric $name counts $what ($n)"
  else
    grep -F "$name" "$TMP/metrics" >"$TMP/metrics.sel" || true
    fail "metric $name is $n, expected at least $min ($what)" "$TMP/metrics.sel"
  fi
}

# ---------------------------------------------------------------- 1. Metadata per listener
for proto in PLAINTEXT SSL SASL_PLAINTEXT SASL_SSL; do
  port="$(port_of "$proto")"
  case "$proto" in SASL_*) auth "$proto" SCRAM-SHA-256 admin "$ADMIN_PW"; who="admin" ;; *) auth "$proto"; who="ANONYMOUS" ;; esac
  if kc -b "127.0.0.1:$port" "${AUTH[@]}" -L >"$TMP/L.out" 2>"$TMP/L.err"; then
    if grep -Eq "broker -?[0-9]+ at 127\.0\.0\.1:$port( |$)" "$TMP/L.out"; then
      pass "$proto: kcat -L as $who lists the broker at this listener's address 127.0.0.1:$port"
    else
      fail "$proto: kcat -L does not list the broker at 127.0.0.1:$port" "$TMP/L.out"
    fi
  else
    fail "$proto: kcat -L as $who failed" "$TMP/L.err"
  fi
done

# ---------------------------------------------------------------- 2. SASL produce / consume
printf 'k1:v1\nk2:v2\nk3:v3\n' >"$TMP/expected"
for proto in SASL_PLAINTEXT SASL_SSL; do
  port="$(port_of "$proto")"
  for mech in PLAIN SCRAM-SHA-256 SCRAM-SHA-512; do
    label="$proto $mech"
    topic="sec-$(echo "$proto-$mech" | tr 'A-Z_' 'a-z-')"
    auth "$proto" "$mech" admin "$ADMIN_PW"
    if ! kc -b "127.0.0.1:$port" "${AUTH[@]}" -P -t "$topic" -K: -X message.timeout.ms=15000 \
          <"$TMP/expected" >"$TMP/P.out" 2>"$TMP/P.err" || grep -qi 'delivery failed' "$TMP/P.err"; then
      cat "$TMP/P.out" >>"$TMP/P.err"
      fail "$label: kcat -P of 3 records as admin failed" "$TMP/P.err"
      continue
    fi
    if kc -b "127.0.0.1:$port" "${AUTH[@]}" -C -t "$topic" -o beginning -e -q -f '%k:%s\n' \
         >"$TMP/C.out" 2>"$TMP/C.err"; then
      if diff -u "$TMP/expected" "$TMP/C.out" >"$TMP/C.diff"; then
        pass "$label: 3 records produced and consumed back as admin"
      else
        fail "$label: records consumed back differ" "$TMP/C.diff"
      fi
    else
      fail "$label: kcat -C as admin failed" "$TMP/C.err"
    fi
  done
done

# ---------------------------------------------------------------- 3. ANONYMOUS
auth SSL
expect_produce_denied "SSL (server authentication only, User:ANONYMOUS)" "$P_SSL" sec-anon-ssl
auth PLAINTEXT
expect_produce_denied "PLAINTEXT (User:ANONYMOUS)" "$P_PLAIN" sec-anon-plaintext

# ---------------------------------------------------------------- 4. failed authentication
auth SASL_PLAINTEXT PLAIN admin "$BAD_PW"
expect_auth_failure "SASL_PLAINTEXT PLAIN: a wrong password is refused" "$P_SASL"
auth SASL_PLAINTEXT SCRAM-SHA-256 admin "$BAD_PW"
expect_auth_failure "SASL_PLAINTEXT SCRAM-SHA-256: a wrong password is refused" "$P_SASL"
auth SASL_SSL SCRAM-SHA-512 nobody "$BAD_PW"
expect_auth_failure "SASL_SSL SCRAM-SHA-512: an unknown user is refused" "$P_SASL_SSL"

auth PLAINTEXT
rc=0
KC_META=5 kc -b "127.0.0.1:$P_SASL" "${AUTH[@]}" -L >"$TMP/noauth.out" 2>"$TMP/noauth.err" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ! grep -Eq '^ *[0-9]+ topics:' "$TMP/noauth.out"; then
  pass "SASL_PLAINTEXT listener refuses a client that does not authenticate (kcat exit $rc)"
else
  fail "SASL_PLAINTEXT listener served a client that did not authenticate (kcat exit $rc)" "$TMP/noauth.out"
fi

# ---------------------------------------------------------------- 5. weir users while running
# can_login USER PASSWORD: kcat -L as USER (SCRAM-SHA-256, SASL_PLAINTEXT) succeeds.
can_login() {
  auth SASL_PLAINTEXT SCRAM-SHA-256 "$1" "$2"
  KC_META=4 kc -b "127.0.0.1:$P_SASL" "${AUTH[@]}" -L >"$TMP/login.out" 2>"$TMP/login.err"
}
# eventually WANT USER PASSWORD: poll for up to 15 s until the login is WANT:
# ok, or refused with an authentication error.
eventually() {
  local want=$1 deadline=$((SECONDS + 15)) got
  while :; do
    if can_login "$2" "$3"; then
      got=ok
    elif grep -Eqi "$AUTH_FAILED_RE" "$TMP/login.err"; then
      got=refused
    else
      got=failed
    fi
    [ "$got" = "$want" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
if printf '%s\n' "$BOB_PW" | weir_users add bob >"$TMP/users.out" 2>&1; then
  pass "weir users add bob, password from stdin, while the broker runs"
  if eventually ok bob "$BOB_PW"; then
    pass "bob authenticates (SCRAM-SHA-256) without a broker restart"
  else
    fail "bob cannot authenticate within 15 s of weir users add" "$TMP/login.err"
  fi
else
  fail "weir users add bob (password on stdin) failed" "$TMP/users.out"
fi
if weir_users add carol --password "$CAROL_PW" >"$TMP/users.out" 2>&1 && eventually ok carol "$CAROL_PW"; then
  pass "weir users add carol while running: carol authenticates"
else
  fail "weir users add carol while running: carol cannot authenticate" "$TMP/login.err"
fi
if weir_users list >"$TMP/list.out" 2>&1 &&
   grep -qw admin "$TMP/list.out" && grep -qw alice "$TMP/list.out" &&
   grep -qw bob "$TMP/list.out" && grep -qw carol "$TMP/list.out"; then
  pass "weir users list shows admin, alice, bob, carol"
else
  fail "weir users list does not show admin, alice, bob and carol" "$TMP/list.out"
fi
if weir_users delete carol >"$TMP/users.out" 2>&1; then
  if weir_users list >"$TMP/list.out" 2>&1 && ! grep -qw carol "$TMP/list.out"; then
    pass "weir users delete carol: gone from weir users list"
  else
    fail "weir users list still shows carol after weir users delete" "$TMP/list.out"
  fi
  if eventually refused carol "$CAROL_PW"; then
    pass "carol can no longer authenticate after weir users delete"
  else
    fail "carol is not refused with an authentication error 15 s after weir users delete" "$TMP/login.err"
  fi
else
  fail "weir users delete carol failed" "$TMP/users.out"
fi
if [ -s "$DATA/users.json" ]; then
  leaked=""
  for name in ADMIN_PW ALICE_PW BOB_PW QUOTA_PW; do
    if grep -Fq -- "${!name}" "$DATA/users.json"; then leaked="$leaked $name"; fi
  done
  if [ -z "$leaked" ]; then
    pass "users.json holds no clear-text password"
  else
    fail "users.json holds clear-text passwords:$leaked"
  fi
  mode="$(stat -c %a "$DATA/users.json")"
  if [ "$mode" = 600 ]; then
    pass "users.json has mode 0600"
  else
    fail "users.json has mode $mode, not 0600"
  fi
else
  fail "no users.json in the data directory"
fi

# ---------------------------------------------------------------- sub-scripts
export BOOTSTRAP_PLAINTEXT="127.0.0.1:$P_PLAIN" BOOTSTRAP_SSL="127.0.0.1:$P_SSL"
export BOOTSTRAP_SASL_SSL="127.0.0.1:$P_SASL_SSL"
export CA_FILE="$CERTS/ca.pem" CLIENT_CERT="$CERTS/client.pem" CLIENT_KEY="$CERTS/client.key"
export ADMIN_PASSWORD="$ADMIN_PW" ALICE_PASSWORD="$ALICE_PW" BOB_PASSWORD="$BOB_PW"
export QUOTA_PASSWORD="$QUOTA_PW" MTLS_PRINCIPAL SASL_FAILURE_DELAY_MS="$FAILURE_DELAY_MS"
# run_sub LABEL SECONDS COMMAND...: runs a check program (ok:/FAIL: lines) and
# reports each of its checks as PASS/FAIL LABEL: ...; its whole output goes to
# compat/logs/security-<label>.log, and the first lines of anything else it
# printed (client logs, notes) are shown here.
run_sub() {
  local label=$1 want=$2 limit rc=0 line n_ok=0 n_fail=0 shown=0 log
  shift 2
  log="$LOGS/security-$(echo "$label" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//').log"
  if ! limit="$(step_limit "$want")"; then
    fail "$label: not run, the ${BUDGET}s budget is used up"
    return 0
  fi
  (cd "$COMPAT" && OVERALL_TIMEOUT=$((limit > 10 ? limit - 5 : limit)) PYTHONUNBUFFERED=1 \
    timeout --foreground -k 5 "$limit" "$@") >"$log" 2>&1 </dev/null || rc=$?
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      "ok:   "*) pass "$label: ${line#ok:   }"; n_ok=$((n_ok + 1)) ;;
      "FAIL: "*) fail "$label: ${line#FAIL: }"; n_fail=$((n_fail + 1)) ;;
      *)
        shown=$((shown + 1))
        if [ "$shown" -le 25 ]; then
          printf '      | %s\n' "$line" | cut -c1-240
        elif [ "$shown" -eq 26 ]; then
          echo "      | ... (the rest is in compat/logs/${log##*/})"
        fi
        ;;
    esac
  done <"$log"
  if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
    fail "$label: exited with status $rc$([ "$rc" -eq 124 ] && echo " (timed out after ${limit}s)")"
  elif [ "$rc" -eq 0 ] && [ "$n_ok" -eq 0 ]; then
    fail "$label: reported no checks"
  fi
}

if [ "$HAVE_PY" -eq 1 ]; then
  run_sub "ACLs" 90 "$PY" -u security_acls.py acls
  run_sub "quotas" 75 "$PY" -u security_quotas.py
  expect_metric weir_throttled_responses_total 1 "responses throttled by the quota"
else
  fail "ACLs: not run, the compat venv is missing"
  fail "quotas: not run, the compat venv is missing"
fi
if [ "$HAVE_NODE" -eq 1 ]; then
  run_sub "kafkajs" 60 node security_kafkajs.js
else
  fail "kafkajs: not run, node or kafkajs is missing"
fi

# ---------------------------------------------------------------- failed authentications, counted and logged
# (kcat, kafkajs and confluent-kafka have each been refused by now)
expect_metric weir_sasl_authentication_failures_total 3 "the failed authentications"
if grep -Eqi 'authentication[ _]fail' "$BROKER_LOG"; then
  pass "the broker log reports failed authentications ($(grep -Ei -m1 -o 'authentication[ _]fail.{0,80}' "$BROKER_LOG"))"
else
  fail "the broker log has no line with 'authentication failed' / 'authentication failure'"
fi

# ---------------------------------------------------------------- 6. restart: mTLS, HTTPS
stop_broker
HTTP_SCHEME=https
start_broker "phase 2" --tls-client-ca "$CERTS/ca.pem" --http-tls
if wait_ready; then
  pass "broker restarted with --tls-client-ca and --http-tls: GET https://$HTTP/api/health verifies against the CA"
  if curl -sf -o /dev/null --max-time 3 "http://$HTTP/api/health" 2>/dev/null; then
    fail "with --http-tls the admin API still answers plain HTTP"
  else
    pass "with --http-tls the admin API does not answer plain HTTP"
  fi

  auth SSL
  cert_opts=(-X "ssl.certificate.location=$CERTS/client.pem" -X "ssl.key.location=$CERTS/client.key")
  if kc -b "127.0.0.1:$P_SSL" "${AUTH[@]}" "${cert_opts[@]}" -L >"$TMP/L.out" 2>"$TMP/L.err"; then
    pass "mTLS: kcat -L with the client certificate succeeds"
  else
    fail "mTLS: kcat -L with the client certificate failed" "$TMP/L.err"
  fi
  rc=0
  KC_META=5 kc -b "127.0.0.1:$P_SSL" "${AUTH[@]}" -L >"$TMP/L.out" 2>"$TMP/L.err" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then
    pass "mTLS: kcat -L without a client certificate is refused (exit $rc)"
  else
    fail "mTLS: kcat -L without a client certificate was not refused (exit $rc)" "$TMP/L.out"
  fi
  expect_metric weir_tls_handshake_failures_total 1 "the handshake without a client certificate"
  auth SASL_SSL SCRAM-SHA-512 alice "$ALICE_PW"
  if kc -b "127.0.0.1:$P_SASL_SSL" "${AUTH[@]}" -L >"$TMP/L.out" 2>"$TMP/L.err"; then
    pass "SASL_SSL needs no client certificate with --tls-client-ca; users survive the restart"
  else
    fail "SASL_SSL as alice failed after the restart with --tls-client-ca" "$TMP/L.err"
  fi
  if [ "$HAVE_PY" -eq 1 ]; then
    run_sub "mTLS principals" 45 "$PY" -u security_acls.py mtls
  else
    fail "mTLS principals: not run, the compat venv is missing"
  fi

  # A new server certificate (new serial) is served without a restart.
  serial() {
    timeout 10 openssl s_client -connect "127.0.0.1:$P_SASL_SSL" -CAfile "$CERTS/ca.pem" </dev/null 2>/dev/null |
      openssl x509 -noout -serial 2>/dev/null
  }
  before="$(serial || true)"
  if server_cert server-next >"$TMP/openssl.log" 2>&1; then
    cp "$CERTS/server-next.key" "$CERTS/server.key.new" && mv -f "$CERTS/server.key.new" "$CERTS/server.key"
    cp "$CERTS/server-next.pem" "$CERTS/server.pem.new" && mv -f "$CERTS/server.pem.new" "$CERTS/server.pem"
    want="$(openssl x509 -noout -serial -in "$CERTS/server.pem")"
    deadline=$((SECONDS + 10))
    now="$before"
    while [ "$now" != "$want" ] && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.5
      now="$(serial || true)"
    done
    if [ -n "$before" ] && [ "$now" = "$want" ] && [ "$before" != "$want" ]; then
      pass "certificate reload: the replaced server certificate is served without a restart ($before -> $want)"
    else
      fail "certificate reload: served ${now:-nothing}, expected $want (was ${before:-nothing}) 10 s after replacing the files"
    fi
    auth SASL_SSL SCRAM-SHA-256 admin "$ADMIN_PW"
    if kc -b "127.0.0.1:$P_SASL_SSL" "${AUTH[@]}" -L >"$TMP/L.out" 2>"$TMP/L.err"; then
      pass "certificate reload: kcat connects over SASL_SSL with the new certificate"
    else
      fail "certificate reload: kcat over SASL_SSL fails with the new certificate" "$TMP/L.err"
    fi
  else
    fail "openssl could not make the replacement server certificate" "$TMP/openssl.log"
  fi
else
  tail -n 30 "$BROKER_LOG" >"$TMP/broker.tail"
  fail "broker did not become healthy over HTTPS within 30 s after the restart with --tls-client-ca --http-tls" "$TMP/broker.tail"
fi

# ---------------------------------------------------------------- 7. secrets in the log
leaked=""
for name in ADMIN_TOKEN ADMIN_PW ALICE_PW BOB_PW CAROL_PW QUOTA_PW BAD_PW; do
  if grep -Fq -- "${!name}" "$BROKER_LOG"; then leaked="$leaked $name"; fi
done
if [ -z "$leaked" ]; then
  pass "the broker log contains no password and not the admin token"
else
  fail "the broker log contains secrets:$leaked"
fi

stop_broker
summary
