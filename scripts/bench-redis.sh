#!/usr/bin/env bash
# The Redis part of scripts/bench.sh alone: coord's lock-loop against the raw SET NX PX +
# Lua compare-and-delete loop (alternating, medians), the commands per lock+unlock, contend
# and failover on one temporary redis-server. The report goes to target/bench-partial/.
#
#   scripts/bench-redis.sh [--quick]
exec "$(dirname "$0")/bench.sh" --only redis "$@"
