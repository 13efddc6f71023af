#!/usr/bin/env bash
# Benchmarks coord against its yardsticks and writes BENCHMARKS.md with SVG plots.
#
#   scripts/bench.sh [--quick] [--only etcd,redis,memory] [--no-go]
#
# Starts its own etcd and redis-server on free loopback ports in a temp dir, builds coord
# (release, etcd + redis), the raw Redis lock loop, bench-report (tokio-mutex-loop too) and
# the Go yardstick (bench/etcd-go, from Debian's golang-go and golang-etcd-server-dev),
# then runs each pair ALTERNATING its two sides (A B, B A, ...) for several rounds:
#   etcd    coord vs etcd's Go recipes: lock-loop; contend at CONTEND_WORKERS workers and
#           at WAITERS waiters; a Go and a coord hammer on one lock at once (the counter
#           must be exact); idle sessions (keep-alive cost); leader failover after kill -9
#   redis   coord vs the raw SET NX PX + Lua compare-and-delete loop (lock-loop), commands
#           per lock+unlock (MONITOR); coord contend; idle sessions; failover
#   memory  coord-memory vs tokio::sync::Mutex (lock-loop, current-thread and multi-thread
#           runtimes); coord contend; resident memory over RSS_OPS lock+unlocks
# Every run records its output line, the server's CPU time and the client's (one JSON
# line each) in bench/results/raw.jsonl; bench-report renders BENCHMARKS.md and
# bench/plots/*.svg from it (`bench-report render bench/results/raw.jsonl` redoes that).
#
# A full run should take about 10 minutes on 2 cores after the builds (an estimate: the
# full size has not been timed yet); --quick (1 round, short runs, no 1,000 waiters) takes
# under a minute after the builds. A contend run of D seconds lasts longer than D: every
# worker completes the operation it is queued for (1,000 waiters: 5-10 s more, counted in
# elapsed_ns). Sizes (environment; full / quick):
#   ROUNDS (3/1) contend rounds; LOOP_ROUNDS (5/1) lock-loop rounds
#   CONTEND_WORKERS ("1 2 4 8 16 64" / "1 2 8"); CONTEND_SECS (4/1) per contend run
#   WAITERS (1000/0: skipped), WAITERS_SECS (10), WAITERS_CLIENTS (10: the connections
#   the waiters share, on both sides); HAMMER_N (100/20)
#   LOCK_N (1000/300) etcd lock-loop ops; REDIS_LOCK_N (5000/1000); MEMORY_LOCK_N (200000/20000)
#   RSS_OPS (1000000/0: skipped); SESSIONS (1000/100), SESSIONS_SECS (10/2)
#   FAILOVER_ROUNDS (3/1), FAILOVER_TTL (2 seconds); RUN_TIMEOUT (300 s per run)
#   OUT, PLOTS, RAW: where the report, plots and raw results go (with --only: under
#   target/bench-partial/, so that a partial run never replaces the published report)
# Exits 1 if a run failed or a counter was wrong (the report is written all the same).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

quick=0
only="etcd,redis,memory"
use_go=1
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --only)
      only="${2:?--only needs a list: etcd,redis,memory}"
      shift
      ;;
    --only=*) only="${1#--only=}" ;;
    --no-go) use_go=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done
for s in ${only//,/ }; do
  case "$s" in etcd | redis | memory) ;; *)
    echo "--only: unknown suite $s (etcd, redis, memory)" >&2
    exit 2
    ;;
  esac
done
suite_on() { [[ ",$only," == *",$1,"* ]]; }

if ((quick)); then q() { echo "$2"; }; else q() { echo "$1"; }; fi
ROUNDS="${ROUNDS:-$(q 3 1)}"
LOOP_ROUNDS="${LOOP_ROUNDS:-$(q 5 1)}"
CONTEND_WORKERS="${CONTEND_WORKERS:-$(q "1 2 4 8 16 64" "1 2 8")}"
CONTEND_SECS="${CONTEND_SECS:-$(q 4 1)}"
WAITERS="${WAITERS:-$(q 1000 0)}"
WAITERS_SECS="${WAITERS_SECS:-10}"
WAITERS_CLIENTS="${WAITERS_CLIENTS:-10}"
HAMMER_N="${HAMMER_N:-$(q 100 20)}"
LOCK_N="${LOCK_N:-$(q 1000 300)}"
REDIS_LOCK_N="${REDIS_LOCK_N:-$(q 5000 1000)}"
MEMORY_LOCK_N="${MEMORY_LOCK_N:-$(q 200000 20000)}"
RSS_OPS="${RSS_OPS:-$(q 1000000 0)}"
SESSIONS="${SESSIONS:-$(q 1000 100)}"
SESSIONS_SECS="${SESSIONS_SECS:-$(q 10 2)}"
FAILOVER_ROUNDS="${FAILOVER_ROUNDS:-$(q 3 1)}"
FAILOVER_TTL="${FAILOVER_TTL:-2}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
target="${CARGO_TARGET_DIR:-$root/target}"
if [ "$only" = "etcd,redis,memory" ]; then
  OUT="${OUT:-$root/BENCHMARKS.md}"
  PLOTS="${PLOTS:-$root/bench/plots}"
  RAW="${RAW:-$root/bench/results/raw.jsonl}"
else
  # A partial run must not replace the published report.
  OUT="${OUT:-$target/bench-partial/BENCHMARKS.md}"
  PLOTS="${PLOTS:-$target/bench-partial/plots}"
  RAW="${RAW:-$target/bench-partial/raw.jsonl}"
fi

need=(python3 curl)
suite_on etcd && need+=(etcd etcdctl)
suite_on redis && need+=(redis-server redis-cli)
for cmd in "${need[@]}"; do
  command -v "$cmd" >/dev/null || {
    echo "$cmd not found (Debian: etcd-server, etcd-client, redis-server, redis-tools, curl, python3)" >&2
    exit 1
  }
done
# 1,000 waiters hold a connection each, in the client and in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec 3>&2 # the terminal's stderr, for the runs' progress lines

echo "== building (release): coord, raw_lock_loop, bench-report"
cargo build --release --quiet -p coord-cli --features etcd,redis
suite_on redis && cargo build --release --quiet -p coord-redis --example raw_lock_loop
cargo build --release --quiet -p bench-report
coord_bin="$target/release/coord"
raw_bin="$target/release/examples/raw_lock_loop"
report_bin="$target/release/bench-report"
tokio_bin="$target/release/tokio-mutex-loop"
go_bin=""
if suite_on etcd && ((use_go)); then
  echo "== building the Go yardstick (bench/etcd-go)"
  if bash bench/etcd-go/build.sh "$target/etcd-go-bench"; then
    go_bin="$target/etcd-go-bench"
  else
    echo "the Go yardstick did not build: running coord alone on etcd" >&2
  fi
fi

work="$(mktemp -d -t coord-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$RAW")"
: >"$RAW"
status=0
rec() { "$report_bin" "$@" >>"$RAW"; }
note() {
  echo "  note: $1" >&2
  rec note "$1"
}
declare -A recorded
# Records the exact command of a kind of run, the first time.
command_once() {
  local label="$1"
  shift
  [ -n "${recorded[$label]:-}" ] && return 0
  recorded[$label]=1
  local cmd="$*"
  rec command "$label" "${cmd//$root\//}" # paths relative to the repository
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
clk_tck="$(getconf CLK_TCK)"
# The CPU time (user + system) process $1 has used, in ns.
cpu_ns() {
  local stat
  stat="$(<"/proc/$1/stat")"
  stat="${stat##*) }" # after the command name, fields start at the 3rd
  # shellcheck disable=SC2086
  set -- $stat
  echo $(((${12} + ${13}) * 1000000000 / clk_tck))
}
now_ns() { echo $((${EPOCHREALTIME/./} * 1000)); }

etcd_pid=""
redis_pid=""
start_etcd() {
  local client peer
  client="$(free_port)"
  peer="$(free_port)"
  while [ "$peer" = "$client" ]; do peer="$(free_port)"; done
  ep="127.0.0.1:$client"
  etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
    --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
  for _ in $(seq 100); do
    ctl endpoint health >/dev/null 2>&1 && return 0
    kill -0 "$etcd_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "etcd did not become healthy:" >&2
  tail -20 "$work/etcd.log" >&2
  exit 1
}
ctl() { ETCDCTL_API=3 etcdctl --endpoints="$ep" --command-timeout=5s "$@"; }
start_redis() {
  redis_port="$(free_port)"
  mkdir -p "$work/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save "" \
    --appendonly no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "redis-server did not start:" >&2
  tail -20 "$work/redis.log" >&2
  exit 1
}

# run_one SUITE SIDE ROUND SERVER_PID [--runtime R] [--set K=V]... -- CMD...
# Runs CMD (bounded by RUN_TIMEOUT), prints its line, records it with the server's and
# the client's CPU time. A failed run is noted and sets status; the bench goes on. With
# sample_watches=1, etcd's watch gauges are read when CMD reports its first progress (5 s
# into the measured part) and recorded with the line.
sample_watches=0
run_one() {
  local suite="$1" side="$2" round="$3" server="$4"
  shift 4
  local extra=()
  while [ "$1" != -- ]; do
    extra+=("$1" "$2")
    shift 2
  done
  shift
  local before=0 after=0 rc=0 line user sys sampler=""
  : >"$work/err"
  rm -f "$work/watches"
  if ((sample_watches)); then
    watch_sampler &
    sampler=$!
  fi
  [ -n "$server" ] && before="$(cpu_ns "$server")"
  local TIMEFORMAT='%3U %3S'
  { time timeout "$RUN_TIMEOUT" "$@" >"$work/out" 2> >(tee "$work/err" >&3); } 2>"$work/time" || rc=$?
  [ -n "$server" ] && after="$(cpu_ns "$server")"
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
  fi
  line="$(tail -n 1 "$work/out")"
  printf '  %-6s %-5s r%s  %s\n' "$suite" "$side" "$round" "$line"
  if ((rc != 0)) || [ -z "$line" ]; then
    note "$suite $side round $round failed (exit $rc): $*"
    status=1
    return 0
  fi
  read -r user sys <"$work/time"
  extra+=(--set "client_cpu_ns=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%d", (u + s) * 1e9 }')")
  [ -n "$server" ] && extra+=(--set "server_cpu_ns=$((after - before))")
  if [ -s "$work/watches" ]; then
    for kv in $(<"$work/watches"); do extra+=(--set "$kv"); done
  fi
  rec record --suite "$suite" --side "$side" --round "$round" "${extra[@]}" "$line"
}

# Waits for the run's first progress line, then reads etcd's watch gauges into
# $work/watches as key=value words.
watch_sampler() {
  until grep -q ' ops in ' "$work/err" 2>/dev/null; do sleep 0.1; done
  curl -s --max-time 5 "http://$ep/metrics" |
    awk '/^etcd_debugging_mvcc_watch_stream_total / { s = $2 }
         /^etcd_debugging_mvcc_watcher_total / { w = $2 }
         /^etcd_debugging_mvcc_slow_watcher_total / { u = $2 }
         END { if (s != "") printf "watch_streams=%d watchers=%d slow_watchers=%d\n", s, w, u }' \
      >"$work/watches.tmp"
  mv "$work/watches.tmp" "$work/watches"
}

# pair SUITE ROUND SIDE_A SIDE_B FN: runs "FN SIDE" for both sides, A first in odd rounds.
pair() {
  local suite="$1" round="$2" a="$3" b="$4" fn="$5"
  if ((round % 2)); then
    "$fn" "$a" "$round"
    "$fn" "$b" "$round"
  else
    "$fn" "$b" "$round"
    "$fn" "$a" "$round"
  fi
}

# ---------------------------------------------------------------- etcd
etcd_url() { echo "etcd://$ep"; }
etcd_lock_loop() {
  local side="$1" round="$2"
  if [ "$side" = go ]; then
    command_once "etcd lock-loop, Go" "$go_bin" lock-loop -endpoints "$ep" -name bench-loop -n "$LOCK_N"
    run_one etcd go "$round" "$etcd_pid" -- "$go_bin" lock-loop -endpoints "$ep" -name bench-loop -n "$LOCK_N"
  else
    command_once "etcd lock-loop, coord" "$coord_bin" --backend "$(etcd_url)" bench lock-loop --name bench-loop -n "$LOCK_N"
    run_one etcd coord "$round" "$etcd_pid" -- "$coord_bin" --backend "$(etcd_url)" bench lock-loop --name bench-loop -n "$LOCK_N"
  fi
}

contend_workers=""
contend_secs=""
etcd_contend() {
  local side="$1" round="$2" w="$contend_workers" d="$contend_secs"
  local name="bench-contend-$w" key="bench-counter-$w" cmd
  # The waiters run shares WAITERS_CLIENTS connections, as waiters in a few processes do.
  local clients=()
  if ((w == WAITERS)); then
    if [ "$side" = go ]; then clients=(-clients "$WAITERS_CLIENTS"); else clients=(--clients "$WAITERS_CLIENTS"); fi
  fi
  if [ "$side" = go ]; then
    cmd=("$go_bin" contend -endpoints "$ep" -name "$name" -key "$key" -workers "$w" "${clients[@]}" -duration "${d}s")
  else
    cmd=("$coord_bin" --backend "$(etcd_url)" bench contend --name "$name" --key "$key" --workers "$w" "${clients[@]}" --duration "${d}s")
  fi
  command_once "etcd contend, $side (W workers for D seconds)" "${cmd[@]}"
  # How many watch streams the waiters cost the server: sampled on the large runs.
  sample_watches=$((w >= 64))
  run_one etcd "$side" "$round" "$etcd_pid" --set "workers=$w" -- "${cmd[@]}"
  sample_watches=0
}

mixed_hammer() {
  echo "== etcd: a Go hammer and a coord hammer at once on one lock and counter (-n $HAMMER_N each)"
  ctl put bench-mixed-counter 0 >/dev/null
  command_once "etcd mixed hammer, Go" "$go_bin" hammer -endpoints "$ep" -name bench-mixed -key bench-mixed-counter -n "$HAMMER_N"
  command_once "etcd mixed hammer, coord" "$coord_bin" --backend "$(etcd_url)" bench hammer --name bench-mixed --key bench-mixed-counter -n "$HAMMER_N"
  timeout "$RUN_TIMEOUT" "$go_bin" hammer -endpoints "$ep" -name bench-mixed -key bench-mixed-counter -n "$HAMMER_N" >"$work/go.hammer" &
  local g=$!
  timeout "$RUN_TIMEOUT" "$coord_bin" --backend "$(etcd_url)" bench hammer --name bench-mixed --key bench-mixed-counter -n "$HAMMER_N" >"$work/coord.hammer" &
  local c=$!
  local ok=1
  wait "$g" || ok=0
  wait "$c" || ok=0
  local got
  got="$(ctl get bench-mixed-counter --print-value-only)"
  echo "  go     $(cat "$work/go.hammer")"
  echo "  coord  $(cat "$work/coord.hammer")"
  echo "  counter=$got expected=$((2 * HAMMER_N))"
  if ((!ok)) || [ "$got" != $((2 * HAMMER_N)) ]; then
    note "mixed hammer: counter=$got expected=$((2 * HAMMER_N)) (a hammer failed, or mutual exclusion between Go and coord broke)"
    status=1
  fi
  rec record --suite etcd --side both "cmd=mixed counter=$got expected=$((2 * HAMMER_N))"
}

# The server's CPU time while idle for $3 seconds, then while SESSIONS idle sessions are
# kept for as long (only between the workload's "open" and "closing" lines).
sessions_cost() {
  local suite="$1" server="$2" url="$3"
  local a b
  a="$(cpu_ns "$server")"
  sleep "$SESSIONS_SECS"
  b="$(cpu_ns "$server")"
  rec record --suite "$suite" --side server "cmd=idle elapsed_ns=$((SESSIONS_SECS * 1000000000)) server_cpu_ns=$((b - a))"
  command_once "$suite idle sessions, coord" "$coord_bin" --backend "$url" --ttl 3s bench sessions --workers "$SESSIONS" --duration "${SESSIONS_SECS}s"
  # A background job opens its redirections only once it runs: no earlier run's lines
  # may be there to be read first.
  rm -f "$work/sessions.out" "$work/sessions.err"
  "$coord_bin" --backend "$url" --ttl 3s bench sessions --workers "$SESSIONS" --duration "${SESSIONS_SECS}s" \
    >"$work/sessions.out" 2>"$work/sessions.err" &
  local p=$! t0="" t1=""
  local deadline=$((SECONDS + RUN_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [ -z "$t0" ] && grep -q "sessions open" "$work/sessions.err" 2>/dev/null; then t0="$(cpu_ns "$server")"; fi
    if [ -n "$t0" ] && grep -q "closing" "$work/sessions.err"; then
      t1="$(cpu_ns "$server")"
      break
    fi
    kill -0 "$p" 2>/dev/null || break
    sleep 0.05
  done
  # Closing 100 sessions can take less than a poll: the process may be gone already; the
  # revokes then count too (a few ms in seconds of keep-alives).
  if [ -n "$t0" ] && [ -z "$t1" ] && grep -q "closing" "$work/sessions.err"; then
    t1="$(cpu_ns "$server")"
  fi
  local rc=0
  wait "$p" || rc=$?
  local line
  line="$(tail -n 1 "$work/sessions.out")"
  echo "  $suite  sessions  $line"
  if ((rc != 0)) || [ -z "$t1" ] || [ -z "$line" ]; then
    note "$suite sessions run failed (exit $rc): $(tail -n 3 "$work/sessions.err" | tr '\n' ' ')"
    status=1
    return 0
  fi
  rec record --suite "$suite" --side coord --set "server_cpu_ns=$((t1 - t0))" "$line"
}

# failover SUITE SIDE ROUND: two elect processes; SIGKILL the leader; the time until the
# other prints its elected line.
failover() {
  local suite="$1" side="$2" round="$3" name="bench-failover-$1-$2-$3"
  local leader=() follower=()
  if [ "$side" = go ]; then
    leader=("$go_bin" elect -endpoints "$ep" -ttl "$FAILOVER_TTL" -name "$name" -value a -for 0)
    follower=("$go_bin" elect -endpoints "$ep" -ttl "$FAILOVER_TTL" -name "$name" -value b -for 0)
  else
    local url
    if [ "$suite" = etcd ]; then url="$(etcd_url)"; else url="redis://127.0.0.1:$redis_port"; fi
    leader=("$coord_bin" --backend "$url" --ttl "${FAILOVER_TTL}s" -o json elect "$name" a)
    follower=("$coord_bin" --backend "$url" --ttl "${FAILOVER_TTL}s" -o json elect "$name" b)
  fi
  command_once "$suite failover, $side (leader and follower; the leader gets kill -9)" "${leader[@]}"
  rm -f "$work/leader.out" "$work/follower.out" # see sessions_cost
  "${leader[@]}" >"$work/leader.out" 2>&3 &
  local lp=$!
  wait_line "$work/leader.out" 10 || {
    note "$suite $side failover round $round: the first candidate was not elected in 10 s"
    kill -9 "$lp" 2>/dev/null || true
    wait "$lp" 2>/dev/null || true
    status=1
    return 0
  }
  "${follower[@]}" >"$work/follower.out" 2>&3 &
  local fp=$!
  # Time for the follower to connect and queue behind the leader.
  sleep 1
  if [ -s "$work/follower.out" ]; then
    note "$suite $side failover round $round: the second candidate was elected while the first led: $(head -c 300 "$work/follower.out")"
    status=1
    kill -9 "$lp" "$fp" 2>/dev/null || true
    wait "$lp" "$fp" 2>/dev/null || true
    return 0
  fi
  local t0 t1
  t0="$(now_ns)"
  # Reaped at once, so that bash does not report the killed job later.
  {
    kill -9 "$lp"
    wait "$lp"
  } 2>/dev/null || true
  if wait_line "$work/follower.out" $((FAILOVER_TTL * 5 + 5)); then
    t1="$(now_ns)"
    local ms=$(((t1 - t0) / 1000000))
    echo "  $suite  $side  r$round  failover after kill -9: ${ms} ms (TTL ${FAILOVER_TTL}s)"
    rec record --suite "$suite" --side "$side" --round "$round" \
      "cmd=failover failover_ns=$((t1 - t0)) ttl_ns=$((FAILOVER_TTL * 1000000000))"
  else
    note "$suite $side failover round $round: the follower was not elected within $((FAILOVER_TTL * 5 + 5)) s of the kill"
    status=1
  fi
  kill -TERM "$fp" 2>/dev/null || true
  wait "$fp" 2>/dev/null || true
}

# Polls (every 2 ms) until file $1 has a line, at most $2 seconds. The pause is a read
# timing out on a pipe that never has data: no process started per poll.
exec {never_fd}<> <(:)
wait_line() {
  local deadline=$((SECONDS + $2))
  until [ -s "$1" ]; do
    ((SECONDS < deadline)) || return 1
    read -r -t 0.002 -u "$never_fd" _ || true
  done
}

# ---------------------------------------------------------------- redis
redis_lock_loop() {
  local side="$1" round="$2" url="redis://127.0.0.1:$redis_port"
  if [ "$side" = raw ]; then
    command_once "redis lock-loop, raw redis-rs" "$raw_bin" "$url" "$REDIS_LOCK_N"
    run_one redis raw "$round" "$redis_pid" -- "$raw_bin" "$url" "$REDIS_LOCK_N"
  else
    command_once "redis lock-loop, coord" "$coord_bin" --backend "$url" bench lock-loop --name bench-loop -n "$REDIS_LOCK_N"
    run_one redis coord "$round" "$redis_pid" -- "$coord_bin" --backend "$url" bench lock-loop --name bench-loop -n "$REDIS_LOCK_N"
  fi
}

# Commands coord sends per lock+unlock, from MONITOR, less those of the session alone.
redis_round_trips() {
  local url="redis://127.0.0.1:$redis_port" n=200
  client_commands() {
    redis-cli -p "$redis_port" monitor >"$work/monitor" &
    local m=$!
    sleep 0.3
    "$coord_bin" --backend "$url" bench lock-loop --name bench-rt -n "$1" >/dev/null
    sleep 0.3
    kill "$m"
    wait "$m" 2>/dev/null || true
    # Lines of commands sent by clients; those a script runs are marked [... lua].
    grep -c '^[0-9.]* \[[0-9]* [0-9.]*:[0-9]*\]' "$work/monitor" || true
  }
  local alone all
  alone="$(client_commands 0)"
  all="$(client_commands "$n")"
  local per
  per="$(awk -v a="$all" -v s="$alone" -v n="$n" 'BEGIN { printf "%.2f", (a - s) / n }')"
  echo "  redis  coord  commands per lock+unlock: $per (session alone $alone, with $n lock+unlock $all)"
  rec record --suite redis --side coord "cmd=round-trips per_op=$per ops=$n"
}

redis_contend() {
  local side="$1" round="$2" w="$contend_workers" d="$contend_secs" url="redis://127.0.0.1:$redis_port"
  local cmd=("$coord_bin" --backend "$url" bench contend --name "bench-contend-$w" --key "bench-counter-$w" --workers "$w" --duration "${d}s")
  command_once "redis contend, coord (W workers for D seconds)" "${cmd[@]}"
  run_one redis coord "$round" "$redis_pid" --set "workers=$w" -- "${cmd[@]}"
}

# ---------------------------------------------------------------- memory
memory_runtime=""
memory_lock_loop() {
  local side="$1" round="$2" rt="$memory_runtime"
  if [ "$side" = tokio ]; then
    command_once "memory lock-loop, tokio::sync::Mutex ($rt)" "$tokio_bin" "$rt" "$MEMORY_LOCK_N"
    run_one memory tokio "$round" "" --runtime "$rt" -- "$tokio_bin" "$rt" "$MEMORY_LOCK_N"
  else
    command_once "memory lock-loop, coord ($rt)" "$coord_bin" --backend memory://bench bench lock-loop --runtime "$rt" -n "$MEMORY_LOCK_N"
    run_one memory coord "$round" "" --runtime "$rt" -- "$coord_bin" --backend memory://bench bench lock-loop --runtime "$rt" -n "$MEMORY_LOCK_N"
  fi
}

memory_contend() {
  local side="$1" round="$2" w="$contend_workers" d="$contend_secs"
  local cmd=("$coord_bin" --backend memory://bench bench contend --name "bench-contend-$w" --key "bench-counter-$w" --workers "$w" --duration "${d}s")
  command_once "memory contend, coord (W workers for D seconds)" "${cmd[@]}"
  run_one memory coord "$round" "" --runtime multi-thread --set "workers=$w" -- "${cmd[@]}"
}

# Resident memory of one coord process over RSS_OPS lock+unlock on memory://: the first
# sample after 0.5 s against the last and the largest.
memory_rss() {
  local cmd=("$coord_bin" --backend memory://bench bench lock-loop --runtime current-thread -n "$RSS_OPS")
  command_once "memory resident memory over RSS_OPS lock+unlock, coord" "${cmd[@]}"
  "${cmd[@]}" >"$work/rss.out" 2>&3 &
  local p=$! first="" last="" max=0 kb
  sleep 0.5
  while kb="$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)" && [ -n "$kb" ]; do
    [ -z "$first" ] && first="$kb"
    last="$kb"
    ((kb > max)) && max="$kb"
    sleep 0.2
  done
  local rc=0
  wait "$p" || rc=$?
  echo "  memory coord  rss over $RSS_OPS ops: first ${first:-?} KiB, last ${last:-?} KiB, max $max KiB"
  if ((rc != 0)) || [ -z "$first" ]; then
    note "memory RSS run failed or ended within 0.5 s (exit $rc)"
    ((rc != 0)) && status=1
    return 0
  fi
  rec record --suite memory --side coord "cmd=rss ops=$RSS_OPS rss_first_kb=$first rss_last_kb=$last rss_max_kb=$max"
}

# ---------------------------------------------------------------- the run
rec meta quick "$([ "$quick" = 1 ] && echo true || echo false)"
rec meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
rec meta commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
rec meta nproc "$(nproc)"
rec meta cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
rec meta memory "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
rec meta kernel "$(uname -sr)"
rec meta rustc "$(rustc --version)"
rec meta rounds "$ROUNDS (lock-loop: $LOOP_ROUNDS)"
rec meta settings "ROUNDS=$ROUNDS LOOP_ROUNDS=$LOOP_ROUNDS CONTEND_WORKERS=\"$CONTEND_WORKERS\" CONTEND_SECS=$CONTEND_SECS WAITERS=$WAITERS WAITERS_SECS=$WAITERS_SECS WAITERS_CLIENTS=$WAITERS_CLIENTS HAMMER_N=$HAMMER_N LOCK_N=$LOCK_N REDIS_LOCK_N=$REDIS_LOCK_N MEMORY_LOCK_N=$MEMORY_LOCK_N RSS_OPS=$RSS_OPS SESSIONS=$SESSIONS SESSIONS_SECS=$SESSIONS_SECS FAILOVER_ROUNDS=$FAILOVER_ROUNDS FAILOVER_TTL=$FAILOVER_TTL"
[ -n "$go_bin" ] && rec meta go "$(go version | cut -d' ' -f3-)"
bench_start=$SECONDS

if suite_on etcd; then
  start_etcd
  rec meta etcd "$(etcd --version | sed -n 's/^etcd Version: //p')"
  echo "== etcd $(etcd --version | sed -n 's/^etcd Version: //p') on $ep; Go yardstick: ${go_bin:-none}"
  [ -z "$go_bin" ] && note "etcd: no Go yardstick in this run (--no-go or its build failed): coord alone"
  sides=(coord)
  [ -n "$go_bin" ] && sides=(coord go)
  echo "== etcd lock-loop (-n $LOCK_N), $LOOP_ROUNDS rounds"
  for r in $(seq "$LOOP_ROUNDS"); do
    if [ -n "$go_bin" ]; then pair etcd "$r" coord go etcd_lock_loop; else etcd_lock_loop coord "$r"; fi
  done
  contend_secs="$CONTEND_SECS"
  for w in $CONTEND_WORKERS; do
    contend_workers="$w"
    echo "== etcd contend, $w workers, ${CONTEND_SECS} s, $ROUNDS rounds"
    for r in $(seq "$ROUNDS"); do
      if [ -n "$go_bin" ]; then pair etcd "$r" coord go etcd_contend; else etcd_contend coord "$r"; fi
    done
  done
  if ((WAITERS > 0)); then
    contend_workers="$WAITERS"
    contend_secs="$WAITERS_SECS"
    echo "== etcd contend, $WAITERS waiters, ${WAITERS_SECS} s, 1 round"
    if [ -n "$go_bin" ]; then pair etcd 1 coord go etcd_contend; else etcd_contend coord 1; fi
  else
    note "etcd: the 1,000-waiter run was skipped (WAITERS=0; --quick skips it)"
  fi
  [ -n "$go_bin" ] && mixed_hammer
  echo "== etcd: idle server, then $SESSIONS idle coord sessions (TTL 3 s), ${SESSIONS_SECS} s each"
  sessions_cost etcd "$etcd_pid" "$(etcd_url)"
  echo "== etcd leader failover (TTL ${FAILOVER_TTL} s), $FAILOVER_ROUNDS rounds"
  for r in $(seq "$FAILOVER_ROUNDS"); do
    for side in "${sides[@]}"; do failover etcd "$side" "$r"; done
  done
  kill "$etcd_pid"
  wait "$etcd_pid" 2>/dev/null || true
fi

if suite_on redis; then
  start_redis
  rec meta redis "$(redis-server --version | cut -d' ' -f3 | sed 's/^v=//') (no persistence)"
  echo "== $(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$redis_port"
  echo "== redis lock-loop (-n $REDIS_LOCK_N), $LOOP_ROUNDS rounds, coord vs raw"
  for r in $(seq "$LOOP_ROUNDS"); do pair redis "$r" coord raw redis_lock_loop; done
  echo "== redis commands per lock+unlock (MONITOR)"
  redis_round_trips
  contend_secs="$CONTEND_SECS"
  for w in $CONTEND_WORKERS; do
    contend_workers="$w"
    echo "== redis contend, $w workers, ${CONTEND_SECS} s, $ROUNDS rounds"
    for r in $(seq "$ROUNDS"); do redis_contend coord "$r"; done
  done
  echo "== redis: idle server, then $SESSIONS idle coord sessions (TTL 3 s), ${SESSIONS_SECS} s each"
  sessions_cost redis "$redis_pid" "redis://127.0.0.1:$redis_port"
  echo "== redis leader failover (TTL ${FAILOVER_TTL} s), $FAILOVER_ROUNDS rounds"
  for r in $(seq "$FAILOVER_ROUNDS"); do failover redis coord "$r"; done
  kill "$redis_pid"
  wait "$redis_pid" 2>/dev/null || true
fi

if suite_on memory; then
  for rt in current-thread multi-thread; do
    memory_runtime="$rt"
    echo "== memory lock-loop (-n $MEMORY_LOCK_N) on a $rt runtime, $LOOP_ROUNDS rounds, coord vs tokio::sync::Mutex"
    for r in $(seq "$LOOP_ROUNDS"); do pair memory "$r" coord tokio memory_lock_loop; done
  done
  contend_secs="$CONTEND_SECS"
  for w in $CONTEND_WORKERS; do
    contend_workers="$w"
    echo "== memory contend, $w workers, ${CONTEND_SECS} s, $ROUNDS rounds"
    for r in $(seq "$ROUNDS"); do memory_contend coord "$r"; done
  done
  if ((RSS_OPS > 0)); then
    echo "== memory: resident memory over $RSS_OPS lock+unlock"
    memory_rss
  else
    note "memory: the resident-memory run was skipped (RSS_OPS=0; --quick skips it)"
  fi
fi

rec meta duration "$((SECONDS - bench_start)) s of benchmarks"
((status == 0)) || note "some runs failed (see above): their rows are missing or partial"
"$report_bin" render "$RAW" --out "$OUT" --plots "$PLOTS"
echo "== done in $((SECONDS - bench_start)) s (after the builds): $OUT, $PLOTS"
exit "$status"
