#!/usr/bin/env bash
# librdkafka's own regression suite (tests/ of its Debian source package) run
# against weir.
#
# Fetches the source with `apt-get source librdkafka` (enabling deb-src when
# needed), builds the library and tests/test-runner once into a cache
# directory, then runs every test that compat/librdkafka-allowlist.txt marks
# `local` or `broker`, one test-runner process per entry, each against a fresh
# weir broker on free loopback ports. Prints one PASS/FAIL/SKIP line per
# sub-test, then "N passed, M failed, K skipped". Exit status 0 only when no
# sub-test failed.
#
# Usage: compat/librdkafka_suite.sh [TEST...]   (default: the whole allow-list;
#        TEST is a 4-digit number from the allow-list, e.g. 0012 0081)
#
# Environment:
#   WEIR_BIN          broker binary (default: target/release/weir, else
#                     target/debug/weir)
#   LIBRDKAFKA_CACHE  where the source is unpacked and built
#                     (default: compat/.cache/librdkafka)
#   TEST_TIMEOUT      seconds allowed per allow-list entry (default 900; the
#                     tests have their own, shorter, timeouts)
#   TEST_KAFKA_VERSION  broker version the tests assume (default 3.7.0); an
#                     entry's `ver=` overrides it
#   LIBRDKAFKA_QUICK  1: run test-runner with -Q (fewer messages and
#                     iterations, sub-tests not marked quick are left out);
#                     0 (default): full runs
#   TEST_DEBUG        passed on: librdkafka debug contexts, e.g. protocol,cgrp
#   BUILD_NICE        nice level of the build (default 10)
#   LIBRDKAFKA_ALLOWLIST  another allow-list file (default compat/librdkafka-allowlist.txt)
#   LIBRDKAFKA_SOURCE  a librdkafka source tree to build and run instead of
#                     Debian's (e.g. the one the rdkafka crate vendors,
#                     librdkafka 2.12.1: ~/.cargo/registry/src/*/rdkafka-sys-*/librdkafka);
#                     copied into compat/.cache/librdkafka-src/ and built there
#   TEST_CONSUMER_GROUP_PROTOCOL  passed on: `consumer` runs the group tests
#                     with the KIP-848 protocol (librdkafka 2.4+ sources only);
#                     results are labelled (consumer)
set -uo pipefail

COMPAT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$COMPAT/.." && pwd)"
ALLOWLIST="${LIBRDKAFKA_ALLOWLIST:-$COMPAT/librdkafka-allowlist.txt}"
CACHE="${LIBRDKAFKA_CACHE:-$COMPAT/.cache/librdkafka}"
SOURCE="${LIBRDKAFKA_SOURCE:-}"
[ -n "$SOURCE" ] && CACHE="${LIBRDKAFKA_CACHE:-$COMPAT/.cache/librdkafka-src}"
PROTOCOL="${TEST_CONSUMER_GROUP_PROTOCOL:-}"
LOGS="$COMPAT/logs/librdkafka"
TEST_TIMEOUT="${TEST_TIMEOUT:-900}"
KAFKA_VERSION_DEFAULT="${TEST_KAFKA_VERSION:-3.7.0}"
QUICK="${LIBRDKAFKA_QUICK:-0}"
BUILD_NICE="${BUILD_NICE:-10}"

mkdir -p "$LOGS" "$CACHE"
SETUP_LOG="$LOGS/setup.log"
: >"$SETUP_LOG"

die() { echo "librdkafka_suite: $*" >&2; exit 2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- source
# deb-src entries are usually absent: derive them from the deb entries.
enable_deb_src() {
  if apt-get source --print-uris librdkafka >/dev/null 2>&1 &&
     [ -n "$(apt-get source --print-uris librdkafka 2>/dev/null | grep -m1 "\.dsc'")" ]; then
    return 0
  fi
  echo "== enabling deb-src" >>"$SETUP_LOG"
  local f
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      | as_root tee /etc/apt/sources.list.d/weir-compat-deb-src.sources >/dev/null
  else
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      grep -E '^deb ' "$f" | sed 's/^deb /deb-src /'
    done | sort -u | as_root tee /etc/apt/sources.list.d/weir-compat-deb-src.list >/dev/null
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$SETUP_LOG" 2>&1
}

BUILD_DEPS=(build-essential dpkg-dev python3 liblz4-dev libsasl2-dev libssl-dev
            libzstd-dev zlib1g-dev rapidjson-dev)

install_deps() {
  local missing=() p
  for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "== apt-get install ${missing[*]}" >>"$SETUP_LOG"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$SETUP_LOG" 2>&1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >>"$SETUP_LOG" 2>&1
}

# A given source tree, copied once into the cache as librdkafka-X.Y.Z.
copy_source() {
  [ -f "$SOURCE/tests/test.c" ] || return 1
  local hex ver
  hex="$(grep -oE 'define RD_KAFKA_VERSION +0x[0-9a-fA-F]+' "$SOURCE/src/rdkafka.h" | grep -oE '0x[0-9a-fA-F]+$')"
  [ -n "$hex" ] || return 1
  ver="$(( (hex >> 24) & 0xff )).$(( (hex >> 16) & 0xff )).$(( (hex >> 8) & 0xff ))"
  SRC="$CACHE/librdkafka-$ver"
  if [ ! -f "$SRC/tests/test.c" ]; then
    echo "== copy $SOURCE to $SRC" >>"$SETUP_LOG"
    cp -a "$SOURCE" "$SRC" && chmod -R u+w "$SRC" || return 1
  fi
}

fetch_source() {
  if [ -n "$SOURCE" ]; then copy_source; return; fi
  SRC="$(find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name 'librdkafka-*' | sort | tail -n1)"
  if [ -n "$SRC" ] && [ -f "$SRC/tests/test.c" ]; then return 0; fi
  enable_deb_src || return 1
  echo "== apt-get source librdkafka" >>"$SETUP_LOG"
  # apt's sandbox user cannot write to a root-owned cache dir: download as is.
  (cd "$CACHE" && apt-get source librdkafka) >>"$SETUP_LOG" 2>&1 || return 1
  SRC="$(find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name 'librdkafka-*' | sort | tail -n1)"
  [ -n "$SRC" ] && [ -f "$SRC/tests/test.c" ]
}

build() {
  if [ -x "$SRC/tests/test-runner" ] && [ -f "$SRC/.weir-built" ]; then return 0; fi
  echo "== build in $SRC" >>"$SETUP_LOG"
  local start=$SECONDS
  (
    cd "$SRC" &&
    { [ -f Makefile.config ] || nice -n "$BUILD_NICE" ./configure --disable-curl; } &&
    nice -n "$BUILD_NICE" make -j1 libs &&
    nice -n "$BUILD_NICE" make -j1 -C tests build
  ) >>"$SETUP_LOG" 2>&1 || return 1
  echo "== build took $((SECONDS - start)) s" >>"$SETUP_LOG"
  touch "$SRC/.weir-built"
}

install_deps || die "could not install the build dependencies (see $SETUP_LOG)"
fetch_source || die "apt-get source librdkafka failed (see $SETUP_LOG)"
build || die "building librdkafka and its tests failed (see $SETUP_LOG)"
TESTS_DIR="$SRC/tests"

# ---------------------------------------------------------------- broker
bin="${WEIR_BIN:-}"
if [ -z "$bin" ]; then
  if [ -x "$REPO/target/release/weir" ]; then bin="$REPO/target/release/weir"
  elif [ -x "$REPO/target/debug/weir" ]; then bin="$REPO/target/debug/weir"
  else die "no broker binary: set WEIR_BIN or build target/release/weir"; fi
fi
[ -x "$bin" ] || die "broker binary $bin is missing or not executable"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/weir-rdkafka.XXXXXX")"
# Tests that shell out to $KAFKA_PATH/bin/kafka-topics.sh (0045, 0052, 0077)
# get a stand-in that speaks the Kafka protocol (compat/librdkafka/).
mkdir -p "$WORK/kafka/bin"
printf '#!/bin/sh\nexec python3 %q "$@"\n' "$COMPAT/librdkafka/kafka_topics.py" >"$WORK/kafka/bin/kafka-topics.sh"
chmod +x "$WORK/kafka/bin/kafka-topics.sh"
BROKER_PIDS=()
RUN_PID=""
stop_broker() {
  local pid
  for pid in "${BROKER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${BROKER_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  BROKER_PIDS=()
}
cleanup() {
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null
  fi
  stop_broker
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {
  python3 - "${1:-2}" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# start_broker NAME AUTOCREATE PARTITIONS: a fresh broker with its own data dir.
start_broker() {
  local name="$1" autocreate="$2" partitions="$3" ports port hport
  ports="$(free_ports)" || return 1
  port="${ports% *}"; hport="${ports#* }"
  rm -rf "$WORK/data"
  "$bin" --listen "127.0.0.1:$port" --advertised-listener "127.0.0.1:$port" \
    --http-listen "127.0.0.1:$hport" --data-dir "$WORK/data" --log-format text \
    --group-initial-rebalance-delay-ms 500 --auto-create-topics "$autocreate" --default-partitions "$partitions" \
    >"$LOGS/$name.broker.log" 2>&1 </dev/null &
  BROKER_PIDS=($!)
  local deadline=$((SECONDS + 30))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "${BROKER_PIDS[0]}" 2>/dev/null || { BROKER_PIDS=(); return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      BOOTSTRAP="127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# start_cluster NAME PARTITIONS: three brokers on loopback, each with its own
# data dir, in one metadata quorum (the suite's trivup clusters have three);
# ready once every node names the same controller and knows all three.
start_cluster() {
  local name="$1" partitions="$2" ports i voters="" kafka=() http=()
  read -r -a ports <<<"$(free_ports 9)" || return 1
  for i in 0 1 2; do
    kafka+=("${ports[$((i * 3))]}"); http+=("${ports[$((i * 3 + 1))]}")
    voters="${voters:+$voters,}$((i + 1))@127.0.0.1:${ports[$((i * 3 + 2))]}"
  done
  BROKER_PIDS=()
  for i in 0 1 2; do
    rm -rf "$WORK/data$i"
    "$bin" --node-id "$((i + 1))" --controller-quorum-voters "$voters" \
      --listen "127.0.0.1:${kafka[$i]}" --advertised-listener "127.0.0.1:${kafka[$i]}" \
      --http-listen "127.0.0.1:${http[$i]}" --data-dir "$WORK/data$i" --log-format text \
      --group-initial-rebalance-delay-ms 500 --default-partitions "$partitions" \
      --default-replication-factor 3 \
      >"$LOGS/$name.broker$((i + 1)).log" 2>&1 </dev/null &
    BROKER_PIDS+=($!)
  done
  BOOTSTRAP="127.0.0.1:${kafka[0]},127.0.0.1:${kafka[1]},127.0.0.1:${kafka[2]}"
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    for i in 0 1 2; do kill -0 "${BROKER_PIDS[$i]}" 2>/dev/null || return 1; done
    if python3 "$COMPAT/librdkafka/cluster_ready.py" "${http[@]}"; then return 0; fi
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------- tests
# Allow-list lines: NNNN MODE [ver=X.Y.Z] [sub=NAME] [# reason]
#   ver=X.Y.Z  TEST_KAFKA_VERSION for this entry
#   sub=NAME   only the sub-tests whose name contains NAME (SUBTESTS); a test
#              may have several such lines
#   MODE local            only the test's local (no broker) parts: test-runner -l
#   MODE broker           every part, against weir (default scenario)
#   MODE broker:SCENARIO  the parts of that trivup scenario (noautocreate: the
#                         broker is started with --auto-create-topics false)
#   MODE cluster          every part, against three weir brokers in one
#                         cluster (tests that create topics with replication
#                         factor 3)
#   MODE skip             left out; the comment says why
ENTRIES=()
while IFS= read -r line; do
  line="${line%%#*}"
  read -r num mode extra <<<"$line" || true
  [ -n "${num:-}" ] || continue
  [ "$mode" = skip ] && continue
  ENTRIES+=("$num|$mode|${extra:-}")
done <"$ALLOWLIST"

if [ "$#" -gt 0 ]; then
  sel=()
  for want in "$@"; do
    found=0
    for e in "${ENTRIES[@]}"; do
      [ "${e%%|*}" = "$want" ] && { sel+=("$e"); found=1; }
    done
    [ "$found" -eq 1 ] || die "test $want is not run by $ALLOWLIST"
  done
  ENTRIES=("${sel[@]}")
fi

QFLAG=()
[ "$QUICK" = 1 ] && QFLAG=(-Q)

passed=0; failed=0; skipped=0
RESULTS="$LOGS/results.txt"
: >"$RESULTS"
suite_start=$SECONDS
for e in "${ENTRIES[@]}"; do
  num="${e%%|*}"; rest="${e#*|}"; mode="${rest%%|*}"; extra="${rest#*|}"
  ver="$KAFKA_VERSION_DEFAULT"; subtests=""
  for x in $extra; do
    case "$x" in ver=*) ver="${x#ver=}" ;; sub=*) subtests="${x#sub=}" ;; esac
  done
  scenario=default; args=("${QFLAG[@]}"); autocreate=true
  case "$mode" in
    local) args+=(-l) ;;
    broker|cluster) ;;
    broker:*) scenario="${mode#broker:}"; args+=(-s "$scenario")
              [ "$scenario" = noautocreate ] && autocreate=false ;;
    *) die "allow-list: unknown mode '$mode' for $num" ;;
  esac
  name="$num"; [ "$scenario" != default ] && name="$name-$scenario"
  [ -n "$PROTOCOL" ] && name="$name-$PROTOCOL"
  [ "$mode" = cluster ] && name="$name-cluster"
  [ -n "$subtests" ] && name="$name-$subtests"
  log="$LOGS/$name.log"
  # The suite's scenarios (tests/scenarios/*.json, trivup cluster settings)
  # give auto-created topics 4 partitions; several tests rely on it.
  partitions="$(grep -o '"num_partitions": *[0-9]*' "$TESTS_DIR/scenarios/$scenario.json" 2>/dev/null | grep -o '[0-9]*$')"

  if [ "$mode" = cluster ]; then
    if ! start_cluster "$name" "${partitions:-4}"; then
      stop_broker
      echo "FAIL $name (the cluster did not start: see compat/logs/librdkafka/$name.broker*.log)"
      failed=$((failed + 1)); continue
    fi
  elif ! start_broker "$name" "$autocreate" "${partitions:-4}"; then
    echo "FAIL $name (the broker did not start: see compat/logs/librdkafka/$name.broker.log)"
    failed=$((failed + 1)); continue
  fi
  printf 'bootstrap.servers=%s\ntest.topic.random=true\n' "$BOOTSTRAP" >"$WORK/test.conf"
  t0=$SECONDS
  (
    cd "$TESTS_DIR" &&
    RDKAFKA_TEST_CONF="$WORK/test.conf" TEST_KAFKA_VERSION="$ver" TESTS="$num" \
      TEST_SCENARIO="$scenario" RDKAFKA_GITVER=debian BROKERS="$BOOTSTRAP" KAFKA_PATH="$WORK/kafka" \
      SUBTESTS="$subtests" LD_LIBRARY_PATH="../src:../src-cpp" \
      timeout -k 10 "$TEST_TIMEOUT" ./test-runner "${args[@]}"; exit $?
  ) >"$log" 2>&1 </dev/null &
  RUN_PID=$!
  wait "$RUN_PID"; rc=$?; RUN_PID=""
  stop_broker
  secs=$((SECONDS - t0))

  # The summary table: "| 0012_produce_consume   |     PASSED |   1.234s |".
  # A failed assertion aborts test-runner before it prints one: then take the
  # sub-tests from the "Running test"/"Test ... PASSED|FAILED" lines.
  plain="$(sed 's/\x1b\[[0-9;]*m//g' "$log")"
  # A SKIPPED row without a reason is a sub-test of another scenario: left out.
  summary="$(grep -E '^\|\s*[0-9]{4}_' <<<"$plain" |
             awk -F'|' '{gsub(/ /,"",$2); gsub(/ /,"",$3); r=$5; gsub(/^ +| +$/,"",r);
                         if ($3 == "SKIPPED" && r == "") next; print $2, $3, r}')"
  if [ -z "$summary" ]; then
    why="exit code $rc"
    [ "$secs" -ge "$TEST_TIMEOUT" ] && why="timed out after ${TEST_TIMEOUT}s"
    grep -qE 'timed out \(timeout set to' <<<"$plain" && why="the test's own timeout expired (exit code $rc)"
    summary="$(grep -oE '=+ Running test [0-9]{4}_[A-Za-z0-9_]+' <<<"$plain" | awk '{print $NF}' |
      while read -r sub; do
        if grep -qE "=+ Test $sub PASSED" <<<"$plain"; then echo "$sub PASSED"
        elif grep -qE "=+ Test $sub SKIPPED" <<<"$plain"; then echo "$sub SKIPPED"
        else echo "$sub FAILED $why"; fi
      done)"
    [ -n "$summary" ] || summary="$name FAILED $why"
  fi
  while read -r sub state reason; do
    [ -n "$sub" ] || continue
    # With a sub-test filter, a test none of whose sub-tests matched "passes"
    # without doing anything: leave it out of the results.
    if [ -n "$subtests" ] && [ "$state" = PASSED ]; then
      mine="$(grep -F "[$sub" <<<"$plain" | grep -F "[ " | grep -F "$subtests")"
      if ! grep -qF ': PASS (' <<<"$mine"; then
        # A sub-test that skipped itself: report it as a skip, with its reason.
        why="$(grep -oE ': SKIP: .*' <<<"$mine" | head -n1 | sed 's/^: SKIP: //; s/ *\]* *$//')"
        [ -n "$why" ] || continue
        state=SKIPPED; reason="$why"
      fi
    fi
    case "$state" in
      PASSED) passed=$((passed + 1)); tag=PASS ;;
      SKIPPED) skipped=$((skipped + 1)); tag=SKIP ;;
      *) failed=$((failed + 1)); tag=FAIL ;;
    esac
    [ "$scenario" != default ] && sub="$sub ($scenario)"
    [ "$mode" = cluster ] && sub="$sub (cluster)"
    [ -n "$PROTOCOL" ] && sub="$sub ($PROTOCOL)"
    [ -n "$subtests" ] && sub="$sub [$subtests]"
    line="$tag $sub"
    [ "$tag" = SKIP ] && [ -n "$reason" ] && line="$line: $reason"
    [ "$tag" = FAIL ] && line="$line [$state${reason:+: $reason}] (see compat/logs/librdkafka/$name.log)"
    echo "$line"
    echo "$line ${secs}s" >>"$RESULTS"
  done <<<"$summary"
done

echo "librdkafka $(basename "$SRC") suite: $passed passed, $failed failed, $skipped skipped" \
     "in $((SECONDS - suite_start)) s"
[ "$failed" -eq 0 ]
