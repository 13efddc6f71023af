#!/usr/bin/env bash
# Benchmarks coord against etcd's own Go recipes (a Go program driving clientv3/concurrency,
# whose source GO_PEER_SRC names; it is not in this repository yet) on ONE temporary
# etcd server, in one run, so the ratios compare like with like.
#
#   scripts/bench.sh [--build-go] [--coord-only]
#
# Starts `etcd` (default settings, default fsync) on free loopback ports in a temp dir,
# builds `coord` in release with the etcd backend, then runs:
#   lock-loop             Go vs coord, per_op_ns
#   contend -workers W    W = 1, 2, 8, Go vs coord, ops_per_s
#   hammer, mixed         one Go and one coord hammer on the same name and key at the
#                         same time; the counter must equal the sum of their ops
# Go runs only if target/etcd-go-peer exists (or --build-go builds it, which installs
# Debian's golang-go and golang-etcd-server-dev); otherwise only coord runs.
#
# Sizes (environment): LOCK_N (lock-loop ops, 1000), CONTEND_TOTAL (total ops of each
# contend run, split over the workers, 400), HAMMER_N (ops of each hammer, 300).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

build_go=0
coord_only=0
for arg in "$@"; do
  case "$arg" in
    --build-go) build_go=1 ;;
    --coord-only) coord_only=1 ;;
    -h | --help)
      sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

LOCK_N="${LOCK_N:-1000}"
CONTEND_TOTAL="${CONTEND_TOTAL:-400}"
HAMMER_N="${HAMMER_N:-300}"
# Every run is bounded: Go at 2 workers manages about 20 ops/s, so 400 ops take ~20 s.
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"

command -v etcd >/dev/null || {
  echo "etcd not found (Debian package etcd-server)" >&2
  exit 1
}
command -v etcdctl >/dev/null || {
  echo "etcdctl not found (Debian package etcd-client)" >&2
  exit 1
}

go_peer="$root/target/etcd-go-peer"
if ((coord_only)); then
  go_peer=""
elif [ ! -x "$go_peer" ]; then
  if ((build_go)); then
    if [ -z "${GO_PEER_SRC:-}" ]; then
      echo "--build-go needs GO_PEER_SRC: the directory of the Go peer's source and build.sh" >&2
      exit 1
    fi
    bash "$GO_PEER_SRC/build.sh" "$go_peer"
  else
    echo "note: $go_peer not found (use --build-go); running coord only" >&2
    go_peer=""
  fi
fi

echo "== building coord (release, features etcd)"
cargo build --release --quiet -p coord-cli --features etcd
coord_bin="$root/target/release/coord"

work="$(mktemp -d -t coord-bench.XXXXXX)"
etcd_pid=""
cleanup() {
  if [ -n "$etcd_pid" ]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
client_port="$(free_port)"
peer_port="$(free_port)"
while [ "$peer_port" = "$client_port" ]; do peer_port="$(free_port)"; done
ep="127.0.0.1:$client_port"

etcd --name bench --data-dir "$work/data" \
  --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!

ctl() { ETCDCTL_API=3 etcdctl --endpoints="$ep" --command-timeout=5s "$@"; }
for _ in $(seq 100); do
  ctl endpoint health >/dev/null 2>&1 && break
  kill -0 "$etcd_pid" 2>/dev/null || {
    cat "$work/etcd.log" >&2
    exit 1
  }
  sleep 0.1
done
ctl endpoint health >/dev/null 2>&1 || {
  echo "etcd did not become healthy" >&2
  tail -20 "$work/etcd.log" >&2
  exit 1
}
echo "== etcd $(etcd --version | sed -n 's/^etcd Version: //p') on $ep (data in $work, default fsync)"
echo "== $(nproc) cores; go peer: ${go_peer:-none}"

# The value of field $2 in the key=value line $1.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
# The field names of line $1, in order.
field_names() { tr ' ' '\n' <<<"$1" | sed 's/=.*//' | paste -sd' '; }
status=0
# coord bench promises Go's fields exactly, so a line compares field for field.
same_fields() {
  if [ "$(field_names "$1")" != "$(field_names "$2")" ]; then
    echo "  FIELDS DIFFER: go [$(field_names "$1")] coord [$(field_names "$2")]"
    status=1
  fi
}

run_go() { timeout "$RUN_TIMEOUT" "$go_peer" "$@" -endpoints "$ep"; }
run_coord() { timeout "$RUN_TIMEOUT" "$coord_bin" --backend "etcd://$ep" bench "$@"; }

# Runs one workload on both sides (Go first) with the same flags; prints both lines and
# the ratio of field $3, where $2 says which way is better ("higher" or "lower"). $1 labels
# the summary line.
compare() {
  local label="$1" better="$2" metric="$3" workload="$4"
  shift 4
  local go_line="" coord_line ratio
  if [ -n "$go_peer" ]; then
    go_line="$(run_go "$workload" "$@")"
    printf '  go     %s\n' "$go_line"
  fi
  coord_line="$(run_coord "$workload" "$@")"
  printf '  coord  %s\n' "$coord_line"
  if [ -n "$go_line" ]; then
    local g c
    same_fields "$go_line" "$coord_line"
    g="$(field "$go_line" "$metric")"
    c="$(field "$coord_line" "$metric")"
    if [ "$better" = higher ]; then
      ratio="$(awk -v g="$g" -v c="$c" 'BEGIN { printf "%.2f", c / g }')"
      printf '  ratio  %s coord/go = %s (%s vs %s; >1: coord faster)\n' "$metric" "$ratio" "$c" "$g"
    else
      ratio="$(awk -v g="$g" -v c="$c" 'BEGIN { printf "%.2f", g / c }')"
      printf '  ratio  %s go/coord = %s (%s vs %s; >1: coord faster)\n' "$metric" "$ratio" "$g" "$c"
    fi
    summary+=("$(printf '%-22s %-10s go=%-12s coord=%-12s ratio=%s' "$label" "$metric" "$g" "$c" "$ratio")")
  else
    summary+=("$(printf '%-22s %-10s coord=%s' "$label" "$metric" "$(field "$coord_line" "$metric")")")
  fi
}

summary=()
echo "== lock-loop (-n $LOCK_N): one session, Lock+Unlock"
compare lock-loop lower per_op_ns lock-loop --name bench-loop -n "$LOCK_N"

for w in 1 2 8; do
  n=$(((CONTEND_TOTAL + w - 1) / w))
  echo "== contend -workers $w -n $n: Lock, get, put+1, Unlock"
  compare "contend workers=$w" higher ops_per_s contend --name bench-contend --key bench-counter --workers "$w" -n "$n"
done

if [ -n "$go_peer" ]; then
  echo "== mixed: Go hammer and coord hammer at once on one name and key (-n $HAMMER_N each)"
  ctl put bench-mixed-counter 0 >/dev/null
  # Started together, so their lock traffic overlaps for most of the run.
  run_go hammer --name bench-mixed --key bench-mixed-counter -n "$HAMMER_N" >"$work/go.hammer" &
  go_hammer=$!
  run_coord hammer --name bench-mixed --key bench-mixed-counter -n "$HAMMER_N" >"$work/coord.hammer" &
  coord_hammer=$!
  wait "$go_hammer" || status=1
  wait "$coord_hammer" || status=1
  go_line="$(cat "$work/go.hammer")"
  coord_line="$(cat "$work/coord.hammer")"
  printf '  go     %s\n  coord  %s\n' "$go_line" "$coord_line"
  same_fields "$go_line" "$coord_line"
  got="$(ctl get bench-mixed-counter --print-value-only)"
  go_ops="$(field "$go_line" ops)"
  coord_ops="$(field "$coord_line" ops)"
  # A hammer that failed printed no line; its increments are unknown, and `status` fails.
  expected=$((${go_ops:-0} + ${coord_ops:-0}))
  if [ "$status" = 0 ] && [ "$got" = "$expected" ]; then
    echo "  counter=$got expected=$expected: no increment lost"
  else
    echo "  counter=$got expected=$expected: FAILED (mutual exclusion between Go and coord broken, or a hammer failed)"
    status=1
  fi
  summary+=("$(printf '%-22s counter=%s expected=%s' "mixed hammer" "$got" "$expected")")
fi

echo "== summary (one server, one run)"
printf '  %s\n' "${summary[@]}"
exit "$status"
