#!/bin/sh
# The observer-cost benchmark's server command (README "Performance"): gatewayd with the
# bench's gatewayd-rr configuration, and per MODE
#   plain  nothing else
#   alog   the access log written to a file
#   obs    gatetop (in a private tmux server) and a /ws client reading, pinned to
#          OBS_CPU (default 1, the load generator's CPU; 0 = the server's); with
#          OBS_IDLE=1 they run at SCHED_IDLE (chrt --idle), on the CPU time the load
#          generator leaves, so that what is measured is the gateway's own cost
#   full   both
# Run it ad hoc under ../shared/bench/run.sh, e.g.
#   LABEL=full ../shared/bench/run.sh -b yes full scripts/bench/observed.sh full
# and compare modes with ../shared/bench/compare.sh plain full 0 (same RESULTS_DIR).
# On exit it writes the CPU ticks of each gatewayd thread and of the observers to
# $OUT/threads-MODE.txt. Stops only the processes it started.
MODE=${1:?usage: observed.sh plain|alog|obs|full}
HERE=$(cd "$(dirname "$0")" && pwd)
GW=${GATEWAYD_BIN:-$HERE/../../bin/gatewayd}
GT=${GATETOP_BIN:-$HERE/../../bin/gatetop}
BENCH=${BENCH:-$HERE/../../../shared/bench}
OUT=${OUT:-/tmp/gatewayd-observed}
mkdir -p "$OUT"
rm -f "$OUT/access.log"
case $MODE in
alog | full) set -- -d access_log="$OUT/access.log" ;;
plain | obs) set -- ;;
*) echo "observed.sh: unknown mode $MODE" >&2; exit 2 ;;
esac
"$GW" -f -c "$BENCH/configs/gatewayd-rr.conf" "$@" &
gw=$!
ws=
tmux_started=
case $MODE in obs | full)
	sleep 0.5
	idle=
	[ "${OBS_IDLE:-0}" = 1 ] && idle="chrt --idle 0"
	$idle taskset -c "${OBS_CPU:-1}" tmux -L gwobserved new-session -d -x 120 -y 40 \
		"$GT -s ipc:///tmp/gwbench-gatewayd.pub -c ipc:///tmp/gwbench-gatewayd.ctl" && tmux_started=1
	$idle taskset -c "${OBS_CPU:-1}" python3 "$HERE/ws_reader.py" 8080 &
	ws=$!
	;;
esac
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "$1"; }
finish() {
	{
		for t in /proc/$gw/task/*; do echo "$(cat "$t/comm") $(ticks "$t/stat")"; done
		[ -n "$ws" ] && echo "ws-reader $(ticks /proc/$ws/stat)"
		[ -n "$tmux_started" ] && for p in $(tmux -L gwobserved list-panes -F '#{pane_pid}'); do
			echo "gatetop $(ticks /proc/$p/stat)"
		done
	} >"$OUT/threads-$MODE.txt" 2>/dev/null
	[ -n "$ws" ] && kill "$ws" 2>/dev/null
	[ -n "$tmux_started" ] && tmux -L gwobserved kill-server 2>/dev/null
	kill "$gw"
	wait "$gw"
}
trap finish TERM INT
wait "$gw"
