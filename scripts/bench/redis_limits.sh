#!/bin/sh
# The shared-limits benchmark's server command (README "Performance"): gatewayd with the
# bench's gatewayd-jwt-rl configuration (JWT and a tier limit on every request), MODE
#   local  limits kept in this process
#   redis  limits in the redis-server at REDIS_URL (default redis://127.0.0.1:6390; start
#          it yourself, e.g. `taskset -c 1 redis-server --port 6390 --save ''`)
# Run it under ../shared/bench/run.sh as observed.sh is. On exit it saves the Redis
# command and decision counters to $OUT/metrics-MODE.txt (round-trips per request).
MODE=${1:?usage: redis_limits.sh local|redis}
HERE=$(cd "$(dirname "$0")" && pwd)
GW=${GATEWAYD_BIN:-$HERE/../../bin/gatewayd}
BENCH=${BENCH:-$HERE/../../../shared/bench}
OUT=${OUT:-/tmp/gatewayd-observed}
mkdir -p "$OUT"
case $MODE in
local) set -- ;;
redis) set -- -d redis="${REDIS_URL:-redis://127.0.0.1:6390}" ;;
*) echo "redis_limits.sh: unknown mode $MODE" >&2; exit 2 ;;
esac
"$GW" -f -c "$BENCH/configs/gatewayd-jwt-rl.conf" "$@" &
gw=$!
finish() {
	curl -s http://127.0.0.1:8080/metrics |
		grep -E '^gatewayd_redis_(commands_total|limit_decisions_total)|^gatewayd_requests_total' \
			>"$OUT/metrics-$MODE.txt"
	kill "$gw"
	wait "$gw"
}
trap finish TERM INT
wait "$gw"
