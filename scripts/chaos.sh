#!/usr/bin/env bash
# A chaos run on one backend: 8 clients doing random lock / try_lock / rw / semaphore /
# campaign / proclaim / resign operations under random client, proxy, lease and server
# faults, with the recorded history checked. Prints the report (operations, faults,
# holds, violations, replay line) and exits non-zero on any violation.
#
# usage: scripts/chaos.sh [--backend memory|etcd|etcd-cluster|redis|redis-cluster]
#                         [--seconds N] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '7,8p' "$0" | sed 's/^# //; s/^#//'
}

backend=memory
seconds=60
seed=""
while (($#)); do
  case "$1" in
    --backend) backend=${2:?--backend needs a value}; shift 2 ;;
    --backend=*) backend=${1#*=}; shift ;;
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    --seed=*) seed=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "chaos.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

case "$backend" in
  memory) pkg=coord-memory test=chaos_run_on_memory_keeps_every_promise ;;
  etcd) pkg=coord-etcd test=chaos_run_on_etcd_keeps_every_promise ;;
  etcd-cluster) pkg=coord-etcd test=chaos_run_on_an_etcd_cluster_keeps_every_promise ;;
  redis) pkg=coord-redis test=chaos_run_on_redis_keeps_every_promise ;;
  redis-cluster) pkg=coord-redis test=chaos_run_on_a_redis_cluster_keeps_every_promise ;;
  *)
    echo "chaos.sh: --backend '$backend': expected memory, etcd, etcd-cluster, redis or redis-cluster" >&2
    exit 2
    ;;
esac
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "chaos.sh: --seconds '$seconds': expected a whole number of seconds >= 1" >&2
  exit 2
fi
if [ -n "$seed" ] && ! [[ "$seed" =~ ^([0-9]+|0[xX][0-9a-fA-F]+)$ ]]; then
  echo "chaos.sh: --seed '$seed': expected a decimal or 0x-prefixed hex number" >&2
  exit 2
fi

export COORD_CHAOS_SECONDS=$seconds
if [ -n "$seed" ]; then
  export COORD_CHAOS_SEED=$seed
else
  unset COORD_CHAOS_SEED
fi
# A missing server binary fails the run instead of skipping it.
export COORD_TEST_REQUIRE_BACKENDS=${COORD_TEST_REQUIRE_BACKENDS:-1}
exec cargo test -p "$pkg" --test chaos -- --exact "$test" --nocapture
