#!/usr/bin/env bash
# Benchmarks coord's Redis backend against the plainest correct Redis lock written directly
# on the redis crate (coord-redis/examples/raw_lock_loop.rs: SET NX PX, then a Lua
# compare-and-delete), on ONE temporary redis-server, alternating the two sides, so the
# ratio compares like with like on a noisy machine.
#
#   scripts/bench-redis.sh
#
# Starts `redis-server` (no persistence) on a free loopback port in a temp dir, builds
# `coord` (release, feature redis) and the example, then runs:
#   lock-loop      ROUNDS rounds of coord and raw (order alternating), LOCK_N ops each;
#                  prints per_op_ns and p50_ns of both and the median ratios coord/raw
#   round trips    the commands coord sends (MONITOR) for LOCK_N lock+unlocks, minus the
#                  session's own, per lock+unlock
#   contend        coord bench contend --workers 8: the counter must be exact
#
# Sizes (environment): LOCK_N (1000), ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "unknown argument: $1" >&2
    exit 2
    ;;
esac

LOCK_N="${LOCK_N:-1000}"
ROUNDS="${ROUNDS:-5}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"

command -v redis-server >/dev/null || {
  echo "redis-server not found (Debian package redis-server)" >&2
  exit 1
}

echo "== building coord and raw_lock_loop (release)"
cargo build --release --quiet -p coord-cli --features redis
cargo build --release --quiet -p coord-redis --example raw_lock_loop
target="${CARGO_TARGET_DIR:-$root/target}"
coord_bin="$target/release/coord"
raw_bin="$target/release/examples/raw_lock_loop"

work="$(mktemp -d -t coord-bench-redis.XXXXXX)"
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
cli() { redis-cli -p "$port" "$@"; }
for _ in $(seq 100); do
  [ "$(cli ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
[ "$(cli ping 2>/dev/null)" = PONG ] || {
  echo "redis-server did not start" >&2
  tail -20 "$work/redis.log" >&2
  exit 1
}
url="redis://127.0.0.1:$port"
echo "== $(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port; $(nproc) cores"

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
run_coord() { timeout "$RUN_TIMEOUT" "$coord_bin" --backend "$url" bench "$@"; }
run_raw() { timeout "$RUN_TIMEOUT" "$raw_bin" "$url" "$LOCK_N"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "== lock-loop (-n $LOCK_N), $ROUNDS rounds, alternating"
ratios_mean=()
ratios_p50=()
for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then
    c="$(run_coord lock-loop --name bench-loop -n "$LOCK_N")"
    r="$(run_raw)"
  else
    r="$(run_raw)"
    c="$(run_coord lock-loop --name bench-loop -n "$LOCK_N")"
  fi
  printf '  coord  %s\n  raw    %s\n' "$c" "$r"
  ratios_mean+=("$(awk -v c="$(field "$c" per_op_ns)" -v r="$(field "$r" per_op_ns)" 'BEGIN { printf "%.2f", c / r }')")
  ratios_p50+=("$(awk -v c="$(field "$c" p50_ns)" -v r="$(field "$r" p50_ns)" 'BEGIN { printf "%.2f", c / r }')")
done
mean_ratio="$(printf '%s\n' "${ratios_mean[@]}" | median)"
p50_ratio="$(printf '%s\n' "${ratios_p50[@]}" | median)"
echo "  ratios per_op coord/raw: ${ratios_mean[*]}; p50: ${ratios_p50[*]}"

echo "== round trips per lock+unlock (MONITOR)"
# Commands sent by clients: MONITOR marks those a script runs itself with "lua", and INFO
# commandstats would count them too. Each script run and each plain command is one round
# trip (coord pipelines nothing).
client_commands() {
  redis-cli -p "$port" monitor >"$work/monitor" &
  local monitor=$!
  sleep 0.3
  run_coord lock-loop --name bench-rt -n "$1" >/dev/null
  sleep 0.3
  kill "$monitor"
  wait "$monitor" 2>/dev/null || true
  grep -c '^[0-9.]* \[[0-9]* [0-9.]*:[0-9]*\]' "$work/monitor" || true
}
session_calls="$(client_commands 0)"
loop_calls="$(client_commands "$LOCK_N")"
per_op="$(awk -v a="$loop_calls" -v s="$session_calls" -v n="$LOCK_N" 'BEGIN { printf "%.2f", (a - s) / n }')"
echo "  session alone $session_calls commands; session + $LOCK_N lock+unlock $loop_calls: $per_op per lock+unlock"
sed -n 's/^[0-9.]* \[[0-9]* [0-9.]*:[0-9]*\] "\([A-Za-z]*\)".*/\1/p' "$work/monitor" | sort | uniq -c | sed 's/^/   /'

echo "== contend --workers 8"
status=0
line="$(run_coord contend --name bench-contend --key bench-counter --workers 8 -n 50)" || status=1
echo "  coord  $line"

echo "== summary (one server, one run)"
echo "  lock-loop per_op coord/raw (median of $ROUNDS) = $mean_ratio; p50 = $p50_ratio"
echo "  round trips per uncontended lock+unlock = $per_op"
echo "  contend 8 workers: $(field "$line" counter)/$(field "$line" expected)"
exit "$status"
