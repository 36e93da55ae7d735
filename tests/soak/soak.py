#!/usr/bin/env python3
"""Soak test of gatewayd (issue 7, part 4): mixed load for SOAK_SECONDS, then checks.

    python3 tests/soak/soak.py [--seconds N]      # SOAK_SECONDS, default 60

Against the real binaries (GWTEST_BIN / GWTEST_GATEWAYD as in the e2e tests), on
loopback only, for a bounded time and at a bounded rate (each load thread pauses between
requests), it runs together:
- proxy traffic (GET and POST with a body) over keep-alive connections to two backends;
- cached routes (a few hot URLs, so hits and misses);
- JWT traffic of an enterprise user, an API key of a free user kept over its limit
  (200 or 429 rate_limited / temporarily_banned), a blocked key (403 blocked);
- /auth/register, /auth/login and /auth/refresh (bcrypt: a few per second at most);
- a gatectl command every second (status, backends, users, keys list, cache stats,
  logs, tier, block/unblock, ban/unban, cache purge);
- a SIGHUP reload every 30 s (10 s when the run is shorter than 2 minutes).
Every 2 s it samples gatewayd's RSS and descriptor count. It fails on any status outside
each request's expected set, any client error, any gatectl failure, a dead gatewayd, RSS
in the last third above the warm-up level by more than max(10 %, 8 MB), descriptors
not back to the baseline once the clients have closed, or an unclean exit at the end.
It ends with the figures and `soak: N passed, M failed`.
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, '..', 'e2e')
sys.path.insert(0, E2E)

import gwtest  # noqa: E402
import run as e2e_run  # noqa: E402

GATECTL = os.path.join(gwtest.BIN, 'gatectl')
PASSWORD = 'soak password 123'
SAMPLE_EVERY = 2.0
THREADS = 4
PAUSE = 0.004          # seconds between two requests of one load thread
AUTH_EVERY = 0.5       # seconds between two register/login/refresh rounds
CTL_EVERY = 1.0

CONFIG = '''
    strategy round_robin
    backend b1 127.0.0.1:{b1}
    backend b2 127.0.0.1:{b2}
    tier free 20/1s
    tier enterprise 1000000/1s
    ban threshold=200 base=2s multiplier=2 max=8s
    ip_limit_exempt 127.0.0.0/8
    cache ttl=2s max_memory=4mb
    health_check interval=2s timeout=1s rise=2 fall=2
    route /c auth=none cache=on
    route /jwt auth=jwt
    route /key auth=apikey
    route / auth=none
'''


def seconds_wanted():
    return float(os.environ.get('SOAK_SECONDS', '60'))


class Tally:
    """Statuses per operation, and what was not expected."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = collections.Counter()          # (op, status) -> n
        self.bad = collections.Counter()         # (op, status or error) -> n
        self.examples = []

    def add(self, op, status, expected, detail=b''):
        with self.lock:
            if status in expected:
                self.ok[(op, status)] += 1
            else:
                self.bad[(op, status)] += 1
                if len(self.examples) < 10:
                    self.examples.append('%s: %s %r' % (op, status, detail[:200]))

    def total(self):
        return sum(self.ok.values()) + sum(self.bad.values())


class SoakTest(gwtest.GatewayTestCase):
    timeout = seconds_wanted() + 180

    def ctl(self, *args):
        cp = subprocess.run([GATECTL, '-s', self.gw.control_url] + list(args),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=15)
        return cp.returncode, cp.stdout.decode(errors='replace')

    def call(self, client, method, path, body=None, headers=None):
        h = list((headers or {}).items())
        data = None
        if body is not None:
            h.append(('Content-Type', 'application/json'))
            data = json.dumps(body).encode()
        return client.request(method, path, h, data)

    # -- setup

    def make_user(self, client, tier=None):
        email = 'soak-%s@example.com' % os.urandom(6).hex()
        r = self.call(client, 'POST', '/auth/register', {'email': email, 'password': PASSWORD})
        self.assertEqual(r.status, 201, r.body[:300])
        u = r.json()
        u['email'] = email
        r = self.call(client, 'POST', '/auth/api-keys', None,
                      {'Authorization': 'Bearer ' + u['access_token']})
        self.assertEqual(r.status, 201, r.body[:300])
        u['key'] = r.json()['api_key']
        if tier is not None:
            r = self.call(client, 'POST', '/admin/upgrade_tier',
                          {'user_id': u['user_id'], 'tier': tier}, self.admin_headers())
            self.assertEqual(r.status, 200, r.body[:300])
            r = self.call(client, 'POST', '/auth/login', {'email': email, 'password': PASSWORD})
            self.assertEqual(r.status, 200, r.body[:300])
            u.update(r.json())
        return u

    # -- the load

    def load_thread(self, t, deadline, tally):
        ops = [
            ('proxy_get', lambda c, i: self.call(c, 'GET', '/p/%d/%d?q=%d' % (t, i % 97, i)),
             {200}),
            ('proxy_post', lambda c, i: self.call(c, 'POST', '/echo', {'t': t, 'i': i}), {200}),
            ('cache', lambda c, i: self.call(c, 'GET', '/c/cacheable?k=%d' % (i % 8)), {200}),
            ('jwt', lambda c, i: self.call(c, 'GET', '/jwt/x', None, self.rich_h), {200}),
            ('limited_key', lambda c, i: self.call(c, 'GET', '/key/x', None, self.limited_h),
             {200, 429}),
            ('blocked_key', lambda c, i: self.call(c, 'GET', '/key/x', None, self.blocked_h),
             {403}),
            ('proxy_chunked', lambda c, i: self.call(c, 'GET', '/chunked?n=4&size=1000'),
             {200}),
        ]
        client = gwtest.Client(self.gw.port, timeout=10)
        i = 0
        try:
            while time.monotonic() < deadline:
                op, fn, expected = ops[i % len(ops)]
                i += 1
                try:
                    r = fn(client, i)
                    tally.add(op, r.status, expected, r.body)
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    tally.add(op, type(e).__name__, expected, str(e).encode())
                    client.close()
                time.sleep(PAUSE)
        finally:
            client.close()

    def auth_thread(self, deadline, tally):
        client = gwtest.Client(self.gw.port, timeout=15)
        n = 0
        try:
            while time.monotonic() < deadline:
                n += 1
                email = 'soak-auth-%d-%s@example.com' % (n, os.urandom(3).hex())
                try:
                    r = self.call(client, 'POST', '/auth/register',
                                  {'email': email, 'password': PASSWORD})
                    tally.add('register', r.status, {201, 429}, r.body)
                    r = self.call(client, 'POST', '/auth/login',
                                  {'email': email, 'password': PASSWORD})
                    tally.add('login', r.status, {200, 429}, r.body)
                    if r.status == 200:
                        r = self.call(client, 'POST', '/auth/refresh',
                                      {'refresh_token': r.json()['refresh_token']})
                        tally.add('refresh', r.status, {200, 429}, r.body)
                except Exception as e:  # noqa: BLE001
                    tally.add('auth', type(e).__name__, set(), str(e).encode())
                    client.close()
                time.sleep(AUTH_EVERY)
        finally:
            client.close()

    def ctl_thread(self, deadline, tally):
        scratch = self.scratch
        cmds = [
            ('status', '--json'), ('backends',), ('users',), ('keys', 'list'),
            ('cache', 'stats'), ('logs', '-n', '5'),
            ('tier', str(scratch['user_id']), 'basic'),
            ('tier', str(scratch['user_id']), 'premium'),
            ('block', scratch['key']), ('unblock', scratch['key']),
            ('ban', '203.0.113.9'), ('unban', '203.0.113.9'),
            ('cache', 'purge', '/c'), ('strategy', 'round_robin'),
        ]
        i = 0
        while time.monotonic() < deadline:
            cmd = cmds[i % len(cmds)]
            i += 1
            try:
                rc, out = self.ctl(*cmd)
                tally.add('gatectl ' + cmd[0], rc, {0}, out.encode())
            except Exception as e:  # noqa: BLE001
                tally.add('gatectl ' + cmd[0], type(e).__name__, {0}, str(e).encode())
            time.sleep(CTL_EVERY)

    def reload_thread(self, deadline, every, reloads):
        next_at = time.monotonic() + every
        while time.monotonic() < deadline:
            if time.monotonic() >= next_at:
                self.gw.proc.send_signal(signal.SIGHUP)
                reloads.append(time.monotonic())
                next_at += every
            time.sleep(0.2)

    # -- the test

    def test_soak(self):
        seconds = seconds_wanted()
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.start_backends(2)
        self.gw = self.start_gateway(CONFIG)
        gwtest.wait_until(lambda: self.ctl('status')[0] == 0, timeout=10,
                          message='the control socket')
        with gwtest.Client(self.gw.port, timeout=15) as c:
            rich = self.make_user(c, 'enterprise')
            limited = self.make_user(c)
            blocked = self.make_user(c)
            self.scratch = self.make_user(c)
        self.rich_h = {'Authorization': 'Bearer ' + rich['access_token']}
        self.limited_h = {'X-API-Key': limited['key']}
        self.blocked_h = {'X-API-Key': blocked['key']}
        self.assertEqual(self.ctl('block', blocked['key'])[0], 0)

        pid = self.gw.pid
        tally, reloads, samples = Tally(), [], []   # samples: (t, rss kB, fds)
        t0 = time.monotonic()
        deadline = t0 + seconds
        every = 30.0 if seconds >= 120 else 10.0
        threads = [threading.Thread(target=self.load_thread, args=(t, deadline, tally),
                                    daemon=True) for t in range(THREADS)]
        threads.append(threading.Thread(target=self.auth_thread, args=(deadline, tally),
                                        daemon=True))
        threads.append(threading.Thread(target=self.ctl_thread, args=(deadline, tally),
                                        daemon=True))
        threads.append(threading.Thread(target=self.reload_thread,
                                        args=(deadline, every, reloads), daemon=True))
        for th in threads:
            th.start()
        while time.monotonic() < deadline:
            self.assertTrue(self.gw.proc.alive(), 'gatewayd died during the soak:\n' +
                            self.gw.proc.log_tail(40))
            samples.append((time.monotonic() - t0, gwtest.rss_kb(pid), gwtest.fd_count(pid)))
            time.sleep(SAMPLE_EVERY)
        for th in threads:
            th.join(30)
        self.assertFalse([th for th in threads if th.is_alive()], 'a soak thread is stuck')
        self.assertTrue(self.gw.proc.alive(), 'gatewayd died:\n' + self.gw.proc.log_tail(40))

        # descriptors: once every client has closed, back to where the warm-up left them
        warm = [s for s in samples if seconds * 0.15 <= s[0] <= seconds / 3] or samples[:3]
        fd_base = min(s[2] for s in warm)
        fd_end = gwtest.wait_until(
            lambda: (lambda n: n if n <= fd_base + 2 else None)(gwtest.fd_count(pid)),
            timeout=15, message='descriptors back to the baseline of %d (now %d)' % (
                fd_base, gwtest.fd_count(pid)))
        rss_warm = max(s[1] for s in warm)
        last = [s for s in samples if s[0] >= seconds * 2 / 3] or samples[-2:]
        rss_last = max(s[1] for s in last)
        allowance = max(rss_warm // 10, 8 * 1024)
        figures = ('soak: %.0fs, %d requests (%.0f/s), %d reloads, RSS warm-up %d kB, last '
                   'third max %d kB (allowed %d kB), fds baseline %d, max %d, end %d' % (
                       seconds, tally.total(), tally.total() / seconds, len(reloads),
                       rss_warm, rss_last, rss_warm + allowance, fd_base,
                       max(s[2] for s in samples), fd_end))
        print(figures)
        print('soak: statuses %s' % dict(sorted(
            ('%s %s' % k, n) for k, n in tally.ok.items())))
        self.assertFalse(tally.bad, 'unexpected answers %s, e.g. %s' % (
            dict(tally.bad), tally.examples))
        for op in ('proxy_get', 'cache', 'jwt', 'limited_key', 'blocked_key', 'register'):
            self.assertTrue(any(k[0] == op for k in tally.ok), 'no %s went through' % op)
        self.assertTrue(tally.ok.get(('limited_key', 429)), 'the limited key never hit 429')
        self.assertGreaterEqual(len(reloads), max(1, int(seconds // every) - 1))
        self.assertGreaterEqual(len(self.gw.proc.log().split('configuration reloaded')) - 1,
                                len(reloads), 'not every SIGHUP was a reload')
        self.assertLessEqual(rss_last, rss_warm + allowance,
                             'RSS grew after warm-up: %s; samples %r' % (figures, samples))
        # and it still shuts down cleanly (under LeakSanitizer: without a leak)
        self.assertEqual(self.gw.stop(timeout=15), 0, 'gatewayd did not exit 0 after the soak')


def main():
    ap = argparse.ArgumentParser(description='gatewayd soak test')
    ap.add_argument('--seconds', type=float, help='length of the load (SOAK_SECONDS, 60)')
    args = ap.parse_args()
    if args.seconds:
        os.environ['SOAK_SECONDS'] = str(args.seconds)
        SoakTest.timeout = args.seconds + 180
    result = e2e_run.LineResult(SoakTest.timeout)
    suite = unittest.TestLoader().loadTestsFromTestCase(SoakTest)
    try:
        suite.run(result)
    finally:
        gwtest.kill_all_live()
    result.print_details()
    print('soak: %d passed, %d failed' % (result.n_passed, result.n_failed), flush=True)
    return 0 if result.n_failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
