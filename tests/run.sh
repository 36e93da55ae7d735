#!/bin/sh
# Runs every test of gatewayd and ends with one line "tests: N passed, M failed".
#   unit tests  build/tests/test_*      (cmocka; each test case counts)
#   e2e tests   tests/e2e/run.py        (real binaries on loopback ports)
#   fuzzers     build/fuzz/fuzz_*       (a short libFuzzer run each; FUZZ_SECONDS)
#   man pages   mandoc -T lint          (one test per page)
#   soak        tests/soak/soak.py      (SOAK_SECONDS of mixed load, RSS and fd checks)
# Env: BUILD (build), FUZZ_SECONDS (5), SKIP_FUZZ=1, SKIP_E2E=1, E2E_FILTER (a name filter),
#      SOAK_SECONDS (60), SKIP_SOAK=1 (also skipped with SKIP_E2E or an E2E_FILTER).
set -u
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-5}
passed=0
failed=0
log=$(mktemp -d /tmp/gatewayd-tests.XXXXXX)

count() { # count PASSED FAILED
	passed=$((passed + $1))
	failed=$((failed + $2))
}

echo "== unit tests"
for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	name=$(basename "$t")
	"$t" >"$log/$name.out" 2>&1
	rc=$?
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log/$name.out" | tail -1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log/$name.out" | tail -1)
	p=${p:-0}
	f=${f:-0}
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi # crashed
	printf '%-28s %4d passed %4d failed\n' "$name" "$p" "$f"
	[ "$f" -gt 0 ] && cat "$log/$name.out"
	count "$p" "$f"
done

if [ "${SKIP_E2E:-0}" != 1 ]; then
	echo "== end-to-end tests"
	python3 tests/e2e/run.py ${E2E_FILTER:-} 2>&1 | tee "$log/e2e.out"
	line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' "$log/e2e.out" | tail -1)
	if [ -n "$line" ]; then
		p=$(echo "$line" | sed 's/^e2e: \([0-9]*\) passed.*/\1/')
		f=$(echo "$line" | sed 's/.* \([0-9]*\) failed.*/\1/')
		count "$p" "$f"
	else
		echo "e2e runner gave no summary" && count 0 1
	fi
fi

if [ "${SKIP_SOAK:-0}" != 1 ] && [ "${SKIP_E2E:-0}" != 1 ] && [ -z "${E2E_FILTER:-}" ]; then
	echo "== soak (${SOAK_SECONDS:-60}s)"
	if SOAK_SECONDS=${SOAK_SECONDS:-60} python3 tests/soak/soak.py >"$log/soak.out" 2>&1; then
		grep -E '^(ok|soak:) ' "$log/soak.out"
		count 1 0
	else
		tail -100 "$log/soak.out"
		count 0 1
	fi
fi

if [ "${SKIP_FUZZ:-0}" != 1 ] && command -v clang >/dev/null 2>&1; then
	echo "== fuzzers (${FUZZ_SECONDS}s each)"
	if make -s fuzz-build >"$log/fuzz-build.out" 2>&1; then
		for f in "$BUILD"/fuzz/fuzz_*; do
			[ -x "$f" ] || continue
			name=$(basename "$f")
			corpus="$BUILD/fuzz/corpus-$name"
			mkdir -p "$corpus"
			seeds=""
			[ -d "tests/fuzz/corpus/$name" ] && seeds="tests/fuzz/corpus/$name"
			if "$f" -max_total_time="$FUZZ_SECONDS" -artifact_prefix="$log/$name-" \
				"$corpus" $seeds >"$log/$name.out" 2>&1; then
				echo "ok   $name ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$log/$name.out" | head -1 || true)$(tail -1 "$log/$name.out" | grep -o '#[0-9]*' | head -1))"
				count 1 0
			else
				echo "FAIL $name"
				tail -30 "$log/$name.out"
				count 0 1
			fi
		done
	else
		echo "FAIL fuzzer build"
		tail -30 "$log/fuzz-build.out"
		count 0 1
	fi
fi

if command -v mandoc >/dev/null 2>&1; then
	echo "== man pages"
	for m in man/*.[158]; do
		[ -f "$m" ] || continue
		if out=$(mandoc -T lint -W warning "$m" 2>&1) && [ -z "$out" ]; then
			echo "ok   $m"
			count 1 0
		else
			echo "FAIL $m"
			echo "$out"
			count 0 1
		fi
	done
fi

rm -rf "$log"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
