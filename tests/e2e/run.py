#!/usr/bin/env python3
"""Runs gatewayd's end-to-end tests.

    python3 tests/e2e/run.py [-t SECONDS] [-v] [FILTER ...]

Discovers tests/e2e/test_*.py (unittest); a FILTER keeps the tests whose id
(module.Class.test_name) contains it. Prints one line per test,
`ok|FAIL|ERROR|skip NAME (SECONDS)`, then the details of every failure with the stderr of
the processes the test started, and last `e2e: N passed, M failed[, K skipped]`.
Exit status 0 when nothing failed.

Every test is bounded: after its limit (gwtest.GatewayTestCase.timeout, the
@gwtest.timeout decorator, -t, or E2E_TEST_TIMEOUT; default 60 s) SIGALRM raises
gwtest.TestTimeout in the test, which fails it and lets its cleanups stop its processes.
Should even that not return, a watchdog thread kills every process the harness started
and, as a last resort, ends the run with the summary line (the hung test counted failed).
"""

import argparse
import os
import signal
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gwtest  # noqa: E402

KILL_GRACE = 10.0   # after the limit: SIGKILL the test's processes to unblock it
EXIT_GRACE = 30.0   # after the limit: give up on the run


def test_limit(test, default):
    method = getattr(test, '_testMethodName', None)
    fn = getattr(test, method, None) if method else None
    value = getattr(fn, 'gw_timeout', None) or getattr(test, 'timeout', None) or default
    try:
        return float(value)
    except (TypeError, ValueError):
        return float(default)


class LineResult(unittest.TestResult):
    """Prints one line per test and keeps failure details for the end."""

    def __init__(self, default_limit, verbose=False):
        super().__init__()
        self.default_limit = default_limit
        self.verbose = verbose
        self.n_passed = self.n_failed = self.n_skipped = 0
        self.details = []      # (kind, name, text)
        self.logs = {}         # test id -> process logs
        self.current = None
        self.outcome = None
        self.t0 = 0.0
        self.limit = 0.0
        self.watchdog = None
        self.generation = 0
        self.skip_reason = ''

    # -- timing and the watchdog

    def _on_alarm(self, signum, frame):
        raise gwtest.TestTimeout('test exceeded its time limit of %.0fs' % self.limit)

    def _watchdog(self, name, generation):
        # runs in a thread: the main thread is stuck beyond what SIGALRM could undo
        deadline = self.t0 + self.limit + KILL_GRACE
        while time.monotonic() < deadline:
            if self.generation != generation:
                return
            time.sleep(0.2)
        sys.stdout.write('watchdog: %s still running %.0fs past its limit: killing its '
                         'processes\n' % (name, KILL_GRACE))
        sys.stdout.flush()
        gwtest.kill_all_live()
        deadline = self.t0 + self.limit + EXIT_GRACE
        while time.monotonic() < deadline:
            if self.generation != generation:
                return
            time.sleep(0.2)
        self.n_failed += 1
        sys.stdout.write('FAIL %s (%.2fs) hung; run aborted\n' % (name, time.monotonic() - self.t0))
        self.print_details()
        self.print_summary()
        sys.stdout.flush()
        os._exit(1)

    def startTest(self, test):
        super().startTest(test)
        self.current = test
        self.outcome = 'ok'
        self.t0 = time.monotonic()
        self.limit = test_limit(test, self.default_limit)
        self.generation += 1
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.limit)
        self.watchdog = threading.Thread(target=self._watchdog, args=(test.id(),
                                                                     self.generation),
                                         daemon=True)
        self.watchdog.start()

    def stopTest(self, test):
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.generation += 1
        elapsed = time.monotonic() - self.t0
        if self.outcome == 'ok':
            self.n_passed += 1
        elif self.outcome == 'skip':
            self.n_skipped += 1
        else:
            self.n_failed += 1
        line = '%s %s (%.2fs)' % (self.outcome, test.id(), elapsed)
        if self.outcome == 'skip' and self.verbose:
            line += ' ' + self.skip_reason
        print(line, flush=True)
        self.current = None
        super().stopTest(test)

    # -- outcomes

    def _record(self, kind, test, err):
        text = self._exc_info_to_string(err, test) if err is not None else ''
        self.details.append((kind, test.id(), text))
        if self.current is None:
            # setUpClass / tearDownModule errors come without startTest
            self.n_failed += 1
            print('%s %s (0.00s)' % (kind, test.id()), flush=True)
        elif self.outcome in ('ok', 'skip') or kind == 'FAIL':
            self.outcome = kind

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record('FAIL', test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._record('FAIL' if issubclass(err[0], gwtest.TestTimeout) else 'ERROR', test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = 'FAIL' if issubclass(err[0], (test.failureException,
                                                 gwtest.TestTimeout)) else 'ERROR'
            self.details.append((kind, subtest.id(), self._exc_info_to_string(err, test)))
            if self.outcome != 'FAIL':
                self.outcome = kind

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skip_reason = reason
        if self.current is None:
            self.n_skipped += 1
            print('skip %s (0.00s) %s' % (test.id(), reason), flush=True)
        elif self.outcome == 'ok':
            self.outcome = 'skip'

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record('FAIL', test, None)

    def add_logs(self, test, text):
        self.logs[test.id()] = text

    # -- report

    def print_details(self):
        for kind, name, text in self.details:
            print('\n==== %s %s ====' % (kind, name))
            print(text.rstrip())
            logs = self.logs.get(name)
            if logs:
                print(logs.rstrip())
        if self.details:
            print()

    def print_summary(self):
        line = 'e2e: %d passed, %d failed' % (self.n_passed, self.n_failed)
        if self.n_skipped:
            line += ', %d skipped' % self.n_skipped
        print(line, flush=True)


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def main(argv=None):
    ap = argparse.ArgumentParser(description='gatewayd end-to-end tests')
    ap.add_argument('filters', nargs='*', help='run only tests whose id contains one of these')
    ap.add_argument('-t', '--timeout', type=float,
                    default=float(os.environ.get('E2E_TEST_TIMEOUT', '60')),
                    help='default per-test limit in seconds (default 60)')
    ap.add_argument('-v', '--verbose', action='store_true', help='show skip reasons')
    args = ap.parse_args(argv)

    loader = unittest.TestLoader()
    tests = list(flatten(loader.discover(HERE, pattern='test_*.py', top_level_dir=HERE)))
    if args.filters:
        tests = [t for t in tests if any(f in t.id() for f in args.filters)]
    result = LineResult(args.timeout, args.verbose)
    if not tests:
        print('e2e: no tests match %s' % ' '.join(args.filters), file=sys.stderr)
    try:
        unittest.TestSuite(tests).run(result)
    except KeyboardInterrupt:
        signal.setitimer(signal.ITIMER_REAL, 0)
        gwtest.kill_all_live()
        print('interrupted', flush=True)
        if result.current is not None:
            result.n_failed += 1
    result.print_details()
    result.print_summary()
    return 0 if result.n_failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
