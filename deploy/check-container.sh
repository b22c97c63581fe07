#!/usr/bin/env bash
# Builds the Dockerfile with podman and checks what the image promises: a
# non-root process, a HEALTHCHECK that turns healthy, produce and consume
# through the published port, SIGTERM stopping it cleanly within the grace
# period, and the data surviving a container restart on its volume.
#
# No public registry is reachable here, so the base images are made locally:
# Debian bookworm root filesystems from mmdebstrap (minbase for the runtime;
# minbase plus build-essential, perl, pkg-config and libssl-dev for the
# build), imported with `podman import` and passed as RUST_IMAGE and
# RUNTIME_IMAGE. The build stage uses this machine's stable Rust toolchain,
# mounted read-only into the build, with this machine's CA bundle (its path
# to crates.io may pass a TLS proxy); crates come from crates.io.
#
# Needs root, Debian's podman, runc, mmdebstrap, kcat, curl; ports 9092 and
# 9644 free (the container shares the host's network).
# usage: deploy/check-container.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in podman runc mmdebstrap kcat curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed"; exit 1; }
done
work="${WEIR_CONTAINER_WORK:-/tmp/weir-container}"
mkdir -p "$work"
# The sandbox refuses setrlimit; crun refuses its cgroup layout: no default
# ulimits, and runc.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
# Podman schedules periodic health checks as systemd timers, and there is
# no systemd here; it says so at error level on every run, start and stop.
# `podman healthcheck run` below runs the image's HEALTHCHECK on demand.
run() { podman --log-level fatal --runtime runc "$@"; }
name=weir-check
volume=weir-check-data
cleanup() {
  run rm -f "$name" >/dev/null 2>&1 || true
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

echo "== base images"
if ! podman image exists localhost/weir-base-runtime:bookworm; then
  mmdebstrap --quiet --variant=minbase --mode=root bookworm "$work/runtime.tar"
  podman import --quiet "$work/runtime.tar" localhost/weir-base-runtime:bookworm >/dev/null
fi
if ! podman image exists localhost/weir-base-build:bookworm; then
  mmdebstrap --quiet --variant=minbase --mode=root \
    --include=build-essential,perl,pkg-config,libssl-dev,ca-certificates bookworm "$work/build.tar"
  podman import --quiet \
    --change 'ENV PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/build.tar" localhost/weir-base-build:bookworm >/dev/null
fi
toolchain="$(rustc --print sysroot)"
echo "build toolchain: $("$toolchain/bin/rustc" --version)"

echo "== podman build"
start=$(date +%s)
podman build --isolation=chroot --network=host --format docker \
  --volume "$toolchain:/opt/rust:ro" \
  --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg RUST_IMAGE=localhost/weir-base-build:bookworm \
  --build-arg RUNTIME_IMAGE=localhost/weir-base-runtime:bookworm \
  -t localhost/weir:check . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
grep -E "Finished" "$work/build.log" || true
echo "built localhost/weir:check in $(( $(date +%s) - start )) s (log: $work/build.log)"
podman image inspect localhost/weir:check \
  --format 'user={{.Config.User}} healthcheck={{.Config.Healthcheck.Test}} entrypoint={{.Config.Entrypoint}}'

echo "== run"
podman volume create "$volume" >/dev/null
run run -d --name "$name" --network=host -v "$volume:/var/lib/weir/data" \
  -e WEIR_ADVERTISED_LISTENER=127.0.0.1:9092 -e WEIR_SHUTDOWN_GRACE_MS=5000 \
  localhost/weir:check >/dev/null
healthy() {
  for _ in $(seq 1 60); do
    if run healthcheck run "$name" >/dev/null 2>&1; then
      echo "health: $(run inspect "$name" --format '{{.State.Health.Status}}')"
      return 0
    fi
    sleep 0.5
  done
  echo "the HEALTHCHECK never passed"; run logs "$name" | tail -20; exit 1
}
healthy
uid="$(run exec "$name" id -u)"
echo "process user: $(run exec "$name" id -un) (uid $uid)"
[ "$uid" != 0 ] || { echo "runs as root"; exit 1; }

echo "== produce and consume through the published port"
printf 'k1:one\nk2:two\nk3:three\n' | kcat -b 127.0.0.1:9092 -P -t container-check -K:
kcat -b 127.0.0.1:9092 -C -t container-check -o beginning -e -q -f '%o %k %s\n'

echo "== SIGTERM"
start=$(date +%s%N)
run stop -t 15 "$name" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
code="$(run inspect "$name" --format '{{.State.ExitCode}}')"
echo "stopped in $ms ms with exit code $code"
[ "$code" = 0 ] || { echo "unclean exit"; run logs "$name" | tail -20; exit 1; }
[ "$ms" -lt 15000 ] || { echo "SIGTERM did not stop it within the grace period"; exit 1; }
run logs "$name" 2>&1 | grep -o '"message":"weir stopped"' | head -1

echo "== restart on the same volume"
run start "$name" >/dev/null
healthy
got="$(kcat -b 127.0.0.1:9092 -C -t container-check -o beginning -e -q -f '%k=%s ')"
echo "after the restart: $got"
[ "$got" = "k1=one k2=two k3=three " ] || { echo "records lost across the restart"; exit 1; }
echo "container check passed"
