#!/usr/bin/env bash
# weir cluster check: clients of four families produce and consume through
# the kill -9 of a partition leader.
#
# Starts its own three-node cluster from $WEIR_BIN (free loopback ports, one
# data directory each, --controller-quorum-voters), then for each client --
# kcat, confluent-kafka, kafka-python, kafkajs -- on a topic of its own with
# one partition, replication factor 3 and min.insync.replicas=2:
#
#   1. produces records 0..99 with acks=all;
#   2. kills -9 the partition's leader (found with `weir topics describe`);
#   3. produces records 100..199 through the surviving brokers (the client
#      finds the new leader itself);
#   4. consumes the partition from the beginning: exactly the 200 records,
#      in order, each once;
#   5. restarts the killed node and waits until it is back in the ISR.
#
# Then confluent-kafka's AdminClient asks (ElectLeaders) for the preferred
# leader of the last topic, whose first replica was the killed leader: it
# must lead again.
#
# One "PASS <client>" / "FAIL <client>" line each; exits 0 only when all
# passed. BOOTSTRAP from compat/run is ignored (this needs its own brokers).
#
# Environment:
#   WEIR_BIN       broker binary (required; compat/run exports it)
#   STEP_TIMEOUT   seconds for one client call (default 60)
#   CLUSTER_CLIENTS  the clients to run (default: all four)
# Node logs: compat/logs/cluster-node{1,2,3}.log.
set -uo pipefail

COMPAT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$COMPAT/.venv/bin/python"
LOGS="$COMPAT/logs"
export STEP_TIMEOUT="${STEP_TIMEOUT:-60}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/weir-cluster.XXXXXX")"
: "${WEIR_BIN:?set WEIR_BIN to the broker binary}"

PIDS=("" "" "")
cleanup() {
  for pid in "${PIDS[@]}"; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

read -r -a PORTS <<<"$(python3 - <<'PYEOF'
import socket
socks = []
for _ in range(9):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
)"
kport() { echo "${PORTS[$(($1 * 3))]}"; }
hport() { echo "${PORTS[$(($1 * 3 + 1))]}"; }
cport() { echo "${PORTS[$(($1 * 3 + 2))]}"; }
VOTERS="1@127.0.0.1:$(cport 0),2@127.0.0.1:$(cport 1),3@127.0.0.1:$(cport 2)"
ALL="127.0.0.1:$(kport 0),127.0.0.1:$(kport 1),127.0.0.1:$(kport 2)"

start_node() {  # index 0..2
  local i=$1
  "$WEIR_BIN" --node-id $((i + 1)) --controller-quorum-voters "$VOTERS" \
    --listen "127.0.0.1:$(kport "$i")" --advertised-listener "127.0.0.1:$(kport "$i")" \
    --http-listen "127.0.0.1:$(hport "$i")" --data-dir "$WORK/d$i" \
    --log-format text >>"$LOGS/cluster-node$((i + 1)).log" 2>&1 </dev/null &
  PIDS[$i]=$!
}

for i in 0 1 2; do : >"$LOGS/cluster-node$((i + 1)).log"; start_node "$i"; done

weir() { timeout 20 "$WEIR_BIN" "$@" --bootstrap "$ALL"; }

# The cluster is up when the tools see three brokers.
deadline=$((SECONDS + 60))
until [ "$(curl -s "127.0.0.1:$(hport 0)/api/status" | python3 -c 'import json,sys; c=json.load(sys.stdin)["cluster"]; print(len(c["brokers"]) if c and c["controller"] else 0)' 2>/dev/null)" = 3 ]; do
  if [ "$SECONDS" -gt "$deadline" ]; then
    echo "FAIL cluster did not form within 60 s (see compat/logs/cluster-node*.log)"
    exit 1
  fi
  sleep 0.3
done
echo "cluster formed: $ALL"

# Every node sees all three brokers unfenced (after a restart).
wait_live() {
  local deadline=$((SECONDS + 30)) i n
  while [ "$SECONDS" -lt "$deadline" ]; do
    n=0
    for i in 0 1 2; do
      if curl -s "127.0.0.1:$(hport "$i")/api/status" | python3 -c '
import json, sys
c = json.load(sys.stdin)["cluster"]
sys.exit(0 if c and sum(not b["fenced"] for b in c["brokers"]) == 3 else 1)' 2>/dev/null; then
        n=$((n + 1))
      fi
    done
    [ "$n" = 3 ] && return 0
    sleep 0.3
  done
  echo "  not every node sees three live brokers"
  return 1
}

# describe -> "leader isr-count" of partition 0
placement() {
  weir topics describe "$1" --json 2>/dev/null | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitions"][0]
print(p["leader"], len(p["isr"]))' 2>/dev/null
}

wait_isr() {  # topic count seconds
  local deadline=$((SECONDS + $3)) got
  while [ "$SECONDS" -lt "$deadline" ]; do
    got="$(placement "$1")"
    [ "${got#* }" = "$2" ] && [ "${got% *}" -gt 0 ] 2>/dev/null && return 0
    sleep 0.3
  done
  echo "  ISR of $1 did not reach $2 (last: $got)"
  return 1
}

produce() {  # client topic from count
  local c=$1 t=$2 from=$3 n=$4
  case "$c" in
    kcat)
      seq "$from" $((from + n - 1)) | sed 's/^/kcat-/' |
        timeout "$STEP_TIMEOUT" kcat -P -b "$ALL" -t "$t" -p 0 -X acks=all \
          -X enable.idempotence=true -X message.timeout.ms=45000 -X broker.address.family=v4 ;;
    confluent-kafka|kafka-python)
      BOOTSTRAP="$ALL" timeout "$STEP_TIMEOUT" "$PY" -u "$COMPAT/cluster_clients.py" "$c" produce "$t" "$from" "$n" ;;
    kafkajs)
      BOOTSTRAP="$ALL" timeout "$STEP_TIMEOUT" node "$COMPAT/cluster_kafkajs.js" produce "$t" "$from" "$n" ;;
  esac
}

consume() {  # client topic count -> values on stdout
  local c=$1 t=$2 n=$3
  case "$c" in
    kcat)
      timeout "$STEP_TIMEOUT" kcat -C -b "$ALL" -t "$t" -p 0 -o beginning -c "$n" -e -q \
        -X broker.address.family=v4 ;;
    confluent-kafka|kafka-python)
      BOOTSTRAP="$ALL" timeout "$STEP_TIMEOUT" "$PY" -u "$COMPAT/cluster_clients.py" "$c" consume "$t" "$n" ;;
    kafkajs)
      BOOTSTRAP="$ALL" timeout "$STEP_TIMEOUT" node "$COMPAT/cluster_kafkajs.js" consume "$t" "$n" ;;
  esac
}

failed=0
for client in ${CLUSTER_CLIENTS:-kcat confluent-kafka kafka-python kafkajs}; do
  topic="cluster-$client"
  why=""
  echo "== $client"
  if ! wait_live; then
    why="the cluster did not heal after the last restart"
  elif ! weir topics create "$topic" --partitions 1 --replication-factor 3 \
       --config min.insync.replicas=2 >/dev/null; then
    why="could not create $topic"
  elif ! wait_isr "$topic" 3 20; then
    why="$topic never had three in-sync replicas"
  elif ! produce "$client" "$topic" 0 100; then
    why="producing records 0..99 failed"
  else
    leader="$(placement "$topic")"; leader="${leader% *}"
    echo "  kill -9 leader $leader"
    t0=$(date +%s.%N)
    kill -KILL "${PIDS[$((leader - 1))]}"; wait "${PIDS[$((leader - 1))]}" 2>/dev/null
    PIDS[$((leader - 1))]=""
    if ! produce "$client" "$topic" 100 100; then
      why="producing records 100..199 after the leader's kill failed"
    else
      echo "  records 100..199 acknowledged $(python3 -c "import time; print(round(time.time() - $t0, 1))") s after the kill"
      want="$(seq 0 199 | sed "s/^/$client-/")"
      got="$(consume "$client" "$topic" 200)"
      if [ "$got" != "$want" ]; then
        why="read back $(printf '%s\n' "$got" | grep -c . ) records, not records 0..199 in order once each"
        diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | head -5
      fi
    fi
    start_node $((leader - 1))
    if ! wait_isr "$topic" 3 30 && [ -z "$why" ]; then
      why="the restarted node did not rejoin the ISR"
    fi
  fi
  if [ -z "$why" ]; then
    echo "PASS $client"
  else
    echo "FAIL $client: $why"
    failed=$((failed + 1))
  fi
done
echo "== elect-leaders (confluent-kafka)"
topic="cluster-kafkajs"
got=""
if [ -z "${CLUSTER_CLIENTS:-}" ] && wait_live; then
  first="$(weir topics describe "$topic" --json 2>/dev/null | python3 -c '
import json, sys
print(json.load(sys.stdin)["partitions"][0]["replicas"][0])' 2>/dev/null)"
  if BOOTSTRAP="$ALL" timeout "$STEP_TIMEOUT" "$PY" -u "$COMPAT/cluster_elect.py" "$topic" &&
     got="$(placement "$topic")" && [ "${got% *}" = "$first" ]; then
    echo "PASS elect-leaders"
  else
    echo "FAIL elect-leaders: the preferred replica ($first) does not lead $topic (${got:-?})"
    failed=$((failed + 1))
  fi
fi
exit "$failed"
