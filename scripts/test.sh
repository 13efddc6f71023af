#!/usr/bin/env bash
# The project's test command: installs what is missing, then fmt, clippy and every test.
#
# Tests against etcd and Redis start their own servers (coord-testkit) on free loopback
# ports. With COORD_TEST_REQUIRE_BACKENDS=1 (as in CI) a missing server binary fails the
# run instead of skipping those tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the server tests need: command -> package.
declare -A needed=(
  [protoc]=protobuf-compiler
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [redis-server]=redis-server
  [redis-cli]=redis-tools
)
missing=()
for cmd in "${!needed[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
# protoc alone lacks the well-known types (google/protobuf/descriptor.proto) that etcd-client's
# protos import; Debian ships them in libprotobuf-dev, only a "Recommends" of protobuf-compiler.
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if ((${#missing[@]})); then
  echo "installing missing packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

echo "== cargo fmt"
cargo fmt --all -- --check
# --all-features: the CLI tests against etcd (coord-cli/tests/cli_etcd.rs) need coord-cli's `etcd`
# feature, and the code behind every feature has to be linted.
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo test"
# The chaos runs (tests/chaos.rs of coord-memory, coord-etcd and coord-redis) last 10 s in a
# bare `cargo test`; here each of the five runs 60 s (about 6 minutes in all).
COORD_CHAOS_SECONDS="${COORD_CHAOS_SECONDS:-60}" cargo test --workspace --all-features --locked
# The library's examples on the memory backend; the fencing ones assert that a stale
# holder's write is refused.
echo "== examples"
for example in mutex rwmutex semaphore fenced_write fenced_resource; do
  cargo run --quiet --locked -p coord --example "$example" >/dev/null
done
