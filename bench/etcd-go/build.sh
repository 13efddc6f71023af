#!/usr/bin/env bash
# Builds etcd-go-bench (main.go beside this script) with Debian's Go toolchain and etcd v3.4
# client sources, in GOPATH mode: no module proxy, no network beyond Debian's archive.
#
#   bench/etcd-go/build.sh [OUTPUT]     (default: bench/etcd-go/etcd-go-bench)
#
# Installs golang-go and golang-etcd-server-dev with apt-get when they are missing (as
# root, or through sudo -n).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/etcd-go-bench}"
case "$out" in /*) ;; *) out="$(pwd)/$out" ;; esac
gocode=/usr/share/gocode
if ! command -v go >/dev/null 2>&1 || [ ! -d "$gocode/src/go.etcd.io/etcd/clientv3/concurrency" ]; then
  echo "installing golang-go and golang-etcd-server-dev (Debian)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    golang-go golang-etcd-server-dev </dev/null >/dev/null
fi
# GOPATH mode needs the program inside a GOPATH tree; Debian's packages are the other one.
gopath="$(mktemp -d -t etcd-go-bench.XXXXXX)"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/etcd-go-bench" "$(dirname "$out")"
cp "$here/main.go" "$gopath/src/etcd-go-bench/"
# The build cache is kept between builds (Go's default place) unless GOCACHE says otherwise.
(cd "$gopath/src/etcd-go-bench" &&
  GOPATH="$gopath:$gocode" GO111MODULE=off go build -o "$out" .)
echo "built $out ($(go version | cut -d' ' -f3))" >&2
