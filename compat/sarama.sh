#!/usr/bin/env bash
# weir compatibility check: sarama (Go) from Debian's packages, built offline.
#
# Installs Debian's Go toolchain (golang-go) and sarama
# (golang-github-shopify-sarama-dev, which puts the library and its
# dependencies under /usr/share/gocode) when missing, builds
# compat/sarama/main.go in GOPATH mode against /usr/share/gocode (no network,
# no module download) and runs it against BOOTSTRAP=host:port.
# Exits 0 only when every check of the program passed.
set -uo pipefail

: "${BOOTSTRAP:?set BOOTSTRAP=host:port}"
COMPAT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GOCODE=/usr/share/gocode
SARAMA_PKG=github.com/Shopify/sarama

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi
}

if ! command -v go >/dev/null 2>&1 || [ ! -d "$GOCODE/src/$SARAMA_PKG" ]; then
  echo "== installing golang-go and golang-github-shopify-sarama-dev (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
  # Newer Debian releases may package sarama under IBM's name instead.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      golang-go golang-github-shopify-sarama-dev >/dev/null 2>&1 ||
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      golang-go golang-github-ibm-sarama-dev >/dev/null 2>&1
fi
command -v go >/dev/null 2>&1 || { echo "go not found after installing golang-go"; exit 1; }
if [ ! -d "$GOCODE/src/$SARAMA_PKG" ]; then
  if [ -d "$GOCODE/src/github.com/IBM/sarama" ]; then
    echo "sarama is packaged as github.com/IBM/sarama here: adjust the import in compat/sarama/main.go"
  else
    echo "sarama not found under $GOCODE/src"
  fi
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/weir-sarama.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "== $(go version); sarama $(dpkg-query -W -f='${Version}' golang-github-shopify-sarama-dev 2>/dev/null)"
# GOPATH mode: imports resolve from Debian's tree; nothing is downloaded.
if ! (cd "$COMPAT/sarama" &&
      env GO111MODULE=off GOPATH="$GOCODE" GOFLAGS= GOPROXY=off GOCACHE="$WORK/gocache" \
        CGO_CFLAGS="-g -O2 -Wno-deprecated-declarations" \
        nice -n 10 go build -p 1 -o "$WORK/sarama-check" main.go); then
  echo "go build of compat/sarama/main.go failed"
  exit 1
fi
exec "$WORK/sarama-check"
