#!/bin/sh
# run-demo.sh — the demo stack behind `make run`: three mock backends (b1, b2, b3 on
# 127.0.0.1:5001-5003, one process) and gatewayd with its embedded default configuration
# (listening on 8080), both in the foreground with their logs on this terminal.
# Ctrl-C or SIGTERM stops both (by PID) and exits 0; if either dies on its own, the other
# is stopped and the exit status is non-zero. Arguments are passed on to gatewayd.
#
# POSIX sh (make runs it with /bin/sh). There is no `wait -n` here, and a dead child stays
# a zombie (so `kill -0` still succeeds) until it is reaped: liveness is read from
# /proc/PID/stat instead, every half second, with an interruptible `wait` on a sleep so
# that a signal is handled at once.
set -u

cd "$(dirname "$0")/.." || exit 1

MOCK=bin/mockbackend
GATEWAYD=bin/gatewayd
for b in "$MOCK" "$GATEWAYD"; do
	if [ ! -x "$b" ]; then
		echo "run-demo: $b is missing: run make first" >&2
		exit 1
	fi
done

MOCK_PID=
GW_PID=
TICK_PID=
stopping=

# Running and not a zombie.
alive() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
	state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
	[ -n "$state" ] && [ "$state" != Z ]
}

# SIGTERM both, SIGKILL whatever is still running after 5 seconds, then reap.
stop_all() {
	for pid in $GW_PID $MOCK_PID; do
		kill -TERM "$pid" 2>/dev/null
	done
	i=0
	while [ $i -lt 50 ]; do
		left=
		for pid in $GW_PID $MOCK_PID; do
			alive "$pid" && left=1
		done
		[ -z "$left" ] && break
		sleep 0.1
		i=$((i + 1))
	done
	for pid in $GW_PID $MOCK_PID; do
		if alive "$pid"; then
			echo "run-demo: pid $pid ignored SIGTERM, killing it" >&2
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	[ -n "$TICK_PID" ] && kill "$TICK_PID" 2>/dev/null
	wait 2>/dev/null
}

trap 'stopping=1' INT TERM
trap '' HUP

"$MOCK" --ports 5001,5002,5003 --id b1,b2,b3 &
MOCK_PID=$!
"$GATEWAYD" -f "$@" &
GW_PID=$!

# Best effort: wait (at most 10 s) for the gateway to answer before showing the banner.
up="is up"
if command -v curl >/dev/null 2>&1; then
	i=0
	until curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/health; do
		i=$((i + 1))
		if [ $i -ge 50 ]; then
			up="started, but gatewayd does not answer on :8080 yet (see its log above)"
			break
		fi
		[ -n "$stopping" ] || ! alive "$GW_PID" && break
		sleep 0.2
	done
fi

if [ -z "$stopping" ] && alive "$GW_PID" && alive "$MOCK_PID"; then
	cat <<BANNER

  gatewayd demo $up (gatewayd pid $GW_PID, mockbackend pid $MOCK_PID)
    gateway    http://localhost:8080        backends b1 b2 b3 on 127.0.0.1:5001-5003
    try        curl -i http://localhost:8080/hello
               curl -s http://localhost:8080/stats
               curl -s http://localhost:8080/metrics
               open http://localhost:8080/dashboard in a browser
    faults     curl -X POST http://127.0.0.1:5002/_mock/fail      (also hang, close)
               curl -X POST http://127.0.0.1:5002/_mock/recover
  Ctrl-C stops everything.

BANNER
fi

status=0
while :; do
	if [ -n "$stopping" ]; then
		echo "run-demo: stopping" >&2
		stop_all
		exit 0
	fi
	if ! alive "$GW_PID" || ! alive "$MOCK_PID"; then
		# Ctrl-C reaches the children too, and one may be gone before our trap has run:
		# the trap has run by now if it is going to, so look at the flag again.
		if [ -n "$stopping" ]; then
			echo "run-demo: stopping" >&2
			stop_all
			exit 0
		fi
		if ! alive "$GW_PID"; then
			wait "$GW_PID"
			status=$?
			echo "run-demo: gatewayd (pid $GW_PID) exited with status $status; stopping the backends" >&2
		else
			wait "$MOCK_PID"
			status=$?
			echo "run-demo: mockbackend (pid $MOCK_PID) exited with status $status; stopping gatewayd" >&2
		fi
		stop_all
		[ "$status" -eq 0 ] && status=1
		exit "$status"
	fi
	sleep 0.5 &
	TICK_PID=$!
	wait "$TICK_PID" 2>/dev/null
	TICK_PID=
done
