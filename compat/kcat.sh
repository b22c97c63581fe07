#!/usr/bin/env bash
# weir compatibility check: kcat (librdkafka's command-line client).
# Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed.
set -uo pipefail

: "${BOOTSTRAP:?set BOOTSTRAP=host:port}"
B="$BOOTSTRAP"
T="weir-compat-kcat-$$-$(date +%s)"
STEP_TIMEOUT="${STEP_TIMEOUT:-20}"    # seconds for one kcat invocation
BUDGET="${KCAT_BUDGET:-100}"          # seconds for the whole script
START=$SECONDS
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Keep librdkafka from retrying for minutes: failures must surface fast.
COMMON=(-b "$B" -m 10 -X socket.timeout.ms=10000 -X topic.metadata.refresh.interval.ms=1000)
PRODUCER=(-X message.timeout.ms=20000 -X linger.ms=50)

checks=0
failures=()
pass() { checks=$((checks + 1)); echo "ok:   $1"; }
fail() {
  checks=$((checks + 1)); failures+=("$1"); echo "FAIL: $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed -n '1,40s/^/      | /p' "$2"; fi
}
# kcat with the common options, bounded by STEP_TIMEOUT and the overall budget.
# --foreground keeps kcat in our process group, so that killing the group (as
# compat/run's timeout does) reaches it.
kc() {
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -le 0 ]; then
    echo "skipped: the script's ${BUDGET}s time budget is used up" >&2
    return 124
  fi
  [ "$left" -lt "$STEP_TIMEOUT" ] || left=$STEP_TIMEOUT
  timeout --foreground -k 5 "$left" kcat "${COMMON[@]}" "$@"
  local rc=$?
  [ "$rc" -ne 124 ] || echo "kcat timed out after ${left}s" >&2
  return "$rc"
}

echo "kcat: $(kcat -V 2>&1 | sed -n 's/^Version //p')"
echo "bootstrap: $B  topic: $T"

# 1. kcat -L shows the broker --------------------------------------------------
if kc -L >"$TMP/L.out" 2>"$TMP/L.err"; then
  if grep -Eq '^ *[0-9]+ brokers:' "$TMP/L.out" &&
     grep -Eq "^ *broker -?[0-9]+ at [^ ]+:${B##*:}( |$)" "$TMP/L.out"; then
    pass "kcat -L lists the broker ($(grep -E '^ *broker ' "$TMP/L.out" | head -1 | sed 's/^ *//'))"
  else
    fail "kcat -L output does not list a broker on port ${B##*:}" "$TMP/L.out"
  fi
else
  fail "kcat -L exited non-zero" "$TMP/L.err"
fi

# 2. produce 100 keyed records (topic auto-created) ----------------------------
for i in $(seq 0 99); do printf 'key-%d:value-%d\n' "$i" "$i"; done >"$TMP/expected"
if kc -P -t "$T" -K: "${PRODUCER[@]}" <"$TMP/expected" >"$TMP/P.out" 2>"$TMP/P.err" &&
   ! grep -qi 'delivery failed' "$TMP/P.err"; then
  pass "produced 100 keyed records to auto-created topic"
else
  cat "$TMP/P.out" >>"$TMP/P.err"
  fail "kcat -P of 100 keyed records failed" "$TMP/P.err"
fi

# 3. consume them back exactly --------------------------------------------------
if kc -C -t "$T" -o beginning -e -q -f '%k:%s\n' >"$TMP/C.out" 2>"$TMP/C.err"; then
  if diff -u "$TMP/expected" "$TMP/C.out" >"$TMP/C.diff"; then
    pass "consumed 100 records from beginning, keys and values match"
  elif diff -q <(sort "$TMP/expected") <(sort "$TMP/C.out") >/dev/null; then
    fail "consumed the same 100 records but in another order (topic has more than 1 partition?)"
  else
    fail "consumed records differ from produced ($(wc -l <"$TMP/C.out") lines read)" "$TMP/C.diff"
  fi
else
  fail "kcat -C -o beginning -e exited non-zero (or timed out)" "$TMP/C.err"
fi

# 4. offset/count addressing: -p 0 -o 50 -c 10 returns offsets 50..59 -----------
seq 50 59 >"$TMP/off.expected"
if kc -C -t "$T" -p 0 -o 50 -c 10 -e -q -f '%o\n' >"$TMP/O.out" 2>"$TMP/O.err"; then
  if diff -u "$TMP/off.expected" "$TMP/O.out" >"$TMP/O.diff"; then
    pass "-p 0 -o 50 -c 10 returned offsets 50..59"
  else
    fail "-p 0 -o 50 -c 10 returned wrong offsets" "$TMP/O.diff"
  fi
else
  fail "kcat -C -p 0 -o 50 -c 10 exited non-zero (or timed out)" "$TMP/O.err"
fi
if kc -C -t "$T" -p 0 -o 50 -c 10 -e -q -f '%k:%s\n' >"$TMP/O2.out" 2>"$TMP/O2.err" &&
   diff -u <(sed -n '51,60p' "$TMP/expected") "$TMP/O2.out" >"$TMP/O2.diff"; then
  pass "records at offsets 50..59 have the expected keys and values"
else
  cat "$TMP/O2.err" >>"$TMP/O2.diff" 2>/dev/null
  fail "records at offsets 50..59 have wrong keys/values" "$TMP/O2.diff"
fi

# 4b. an offset past the end is reset by the client (auto.offset.reset): the
# broker's OFFSET_OUT_OF_RANGE must reach librdkafka (an error partition
# carries an empty record set, never a null one) -------------------------------
seq 0 4 >"$TMP/reset.expected"
if kc -C -t "$T" -p 0 -o 100000 -c 5 -e -q -X topic.auto.offset.reset=earliest -f '%o\n' \
     >"$TMP/R.out" 2>"$TMP/R.err" &&
   diff -u "$TMP/reset.expected" "$TMP/R.out" >"$TMP/R.diff"; then
  pass "-o past the end is reset to the earliest offset by auto.offset.reset"
else
  cat "$TMP/R.err" >>"$TMP/R.diff" 2>/dev/null
  fail "-o past the end was not reset to the earliest offset" "$TMP/R.diff"
fi

# 5. kcat -L -t T shows the topic with 1 partition ------------------------------
if kc -L -t "$T" >"$TMP/LT.out" 2>"$TMP/LT.err"; then
  if grep -Fq "topic \"$T\" with 1 partitions:" "$TMP/LT.out" &&
     grep -Eq '^ *partition 0, leader -?[0-9]+' "$TMP/LT.out" &&
     ! grep -Eq '^ *partition 0, leader -1' "$TMP/LT.out"; then
    pass "kcat -L -t shows the topic with 1 partition and a leader"
  else
    fail "kcat -L -t does not show the topic with exactly 1 partition and a leader" "$TMP/LT.out"
  fi
else
  fail "kcat -L -t exited non-zero" "$TMP/LT.err"
fi

# 6. compressed produce + read back, one topic per codec, all in partition 0 ---
pad="$(printf 'x%.0s' $(seq 1 60))"
for codec in gzip snappy lz4 zstd; do
  ct="$T-$codec"
  for i in $(seq 0 49); do printf '%s-key-%d:%s-value-%d-%s\n' "$codec" "$i" "$codec" "$i" "$pad"; done >"$TMP/$codec.expected"
  if ! kc -P -t "$ct" -p 0 -K: -z "$codec" "${PRODUCER[@]}" <"$TMP/$codec.expected" \
        >"$TMP/$codec.P.out" 2>"$TMP/$codec.P.err" ||
     grep -qi 'delivery failed' "$TMP/$codec.P.err"; then
    fail "$codec: kcat -P -z $codec failed" "$TMP/$codec.P.err"
    continue
  fi
  if ! kc -C -t "$ct" -p 0 -o beginning -e -q -f '%k:%s\n' >"$TMP/$codec.C.out" 2>"$TMP/$codec.C.err"; then
    fail "$codec: consuming back failed (or timed out)" "$TMP/$codec.C.err"
    continue
  fi
  if diff -u "$TMP/$codec.expected" "$TMP/$codec.C.out" >"$TMP/$codec.diff"; then
    pass "$codec: 50 compressed records read back intact"
  else
    fail "$codec: records read back differ ($(wc -l <"$TMP/$codec.C.out") lines read)" "$TMP/$codec.diff"
  fi
done

# -------------------------------------------------------------------------------
echo
if [ "${#failures[@]}" -eq 0 ]; then
  echo "kcat: all $checks checks passed"
  exit 0
fi
echo "kcat: ${#failures[@]} of $checks checks FAILED:"
printf '  - %s\n' "${failures[@]}"
exit 1
