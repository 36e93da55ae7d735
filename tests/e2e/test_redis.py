"""End-to-end tests of shared state in Redis (`redis`, `redis_failure`; gatewayd.conf(5)).

Each test starts its own redis-server (tests/e2e/redisserver.py: a free loopback port,
no persistence, in the test's temp dir) and two or three gateways that share it and one
SQLite file. They check:
- the directives: accepted, bad URLs / tls=on / unknown modes refused with file:line;
- exact shared tier limits: N requests of one identity spread over three instances (and
  their workers) pass exactly `limit` times, with the same rate-limit headers as local
  limiting; a flushed script cache (NOSCRIPT) is reloaded without a refusal;
- a block, an unblock, a ban and a logout done on one instance hold on the others within
  100 ms (Redis pub/sub);
- Redis killed and restarted under load: redis_failure open keeps answering (local
  limits), closed answers 503 limiter_unavailable; no request hangs, nothing crashes,
  transitions are logged, and sharing resumes when Redis is back;
- the gatewayd_redis_* metrics, and how many Redis round-trips a limited request costs.

Skipped when redis-server is not installed.
"""

import re
import textwrap
import threading
import time

import gwtest
import redisserver
from test_identity import IdentityCase, bearer

BASE = '''
    workers 2
    backend b1 127.0.0.1:{b1}
    database sqlite:{tmp}/shared.db
    tier free %(limit)s
    tier basic 5/60s
    ban threshold=%(ban)d base=30s multiplier=2 max=60s
    ip_limit_exempt 127.0.0.0/8
    route / auth=none
    route /jwt auth=jwt
'''


def metric(gw, name):
    """The value of one metric line (name with labels, exactly) from /metrics."""
    body = gw.get('/metrics').text
    m = re.search(r'^%s (\S+)$' % re.escape(name), body, re.M)
    return float(m.group(1)) if m else None


class RedisCase(IdentityCase):
    timeout = 90

    def setUp(self):
        if not redisserver.available():
            self.skipTest('redis-server is not installed')
        self.redis = redisserver.RedisServer(self).start()

    def config(self, n, limit='5/60s', ban=100, failure='open', extra='', url=None):
        """The text for gateway n (own control/publish sockets), sharing Redis and the DB."""
        return textwrap.dedent(BASE % {'limit': limit, 'ban': ban}) + textwrap.dedent('''
            control ipc://{tmp}/gw%d.ctl
            publish ipc://{tmp}/gw%d.pub
            redis %s timeout=500ms
            redis_failure %s
        ''' % (n, n, url or self.redis.url, failure)) + extra

    def start_shared(self, count, **kw):
        if not self.backends:
            self.start_backends(1)
        gws = []
        for i in range(count):
            gws.append(self.start_gateway(self.config(i + 1, **kw), port=gwtest.free_port()))
        for g in gws:
            self.wait_redis_up(g)
        return gws

    def wait_redis_up(self, g, timeout=10):
        # the limiter connections open with the first limited request: make one per worker
        tok = gwtest.access_token(sub='warmup', tier='free')
        for _ in range(4):
            g.get('/jwt/warm', bearer(tok))
        gwtest.wait_until(lambda: metric(g, 'gatewayd_redis_up') == 1, timeout,
                          message='gatewayd_redis_up 1 on port %d' % g.port)

    def spread(self, gws, token, total, threads=12, path='/jwt/x'):
        """total requests of one identity over the gateways, concurrently: status counts."""
        counts = {}
        lock = threading.Lock()
        errors = []

        def worker(t):
            try:
                clients = [g.client() for g in gws]
                for i in range(t, total, threads):
                    r = clients[i % len(clients)].get(path, bearer(token))
                    with lock:
                        counts[r.status] = counts.get(r.status, 0) + 1
                for c in clients:
                    c.close()
            except Exception as e:  # reported below
                with lock:
                    errors.append(repr(e))
        gwtest.run_parallel(worker, threads, 60)
        self.assertFalse(errors, errors)
        self.assertEqual(sum(counts.values()), total, counts)
        return counts


class ConfigTest(RedisCase):
    def setUp(self):
        pass  # no server needed: -t only

    def test_directives_are_checked(self):
        ok = 'backend b1 127.0.0.1:1\nroute / auth=none\n'
        for line in ('redis redis://127.0.0.1:6379/0', 'redis redis://127.0.0.1',
                     'redis redis://:secret@127.0.0.1:6380/3 timeout=250ms',
                     'redis redis://user:p%40ss@[::1]:6379/1',
                     'redis redis://127.0.0.1:6379/0\nredis_failure closed'):
            rc, err, _ = self.check_config(ok + line)
            self.assertEqual(rc, 0, '%r refused: %s' % (line, err))
        for line, word in (('redis http://127.0.0.1:6379', 'redis://'),
                           ('redis redis://127.0.0.1:99999/0', 'port'),
                           ('redis redis://127.0.0.1:6379/x', 'database'),
                           ('redis redis://:pw@/0', 'host'),
                           ('redis rediss://127.0.0.1:6379/0', 'TLS'),
                           ('redis redis://127.0.0.1:6379/0 tls=on', 'TLS'),
                           ('redis redis://127.0.0.1:6379/0 bogus=1', 'bogus'),
                           ('redis_failure sometimes', 'open or closed')):
            rc, err, path = self.check_config(ok + line)
            self.assertEqual(rc, 1, '%r accepted' % line)
            self.assertIn('%s:3:' % path, err)
            self.assertIn(word, err)
            self.assertNotIn('secret', err)


class SharedLimitTest(RedisCase):
    def test_exact_limit_across_three_instances(self):
        gws = self.start_shared(3, limit='100/1h', ban=1000000)
        tok = gwtest.access_token(sub='shared-1', tier='free')
        counts = self.spread(gws, tok, 1000)
        self.assertEqual(counts.get(200, 0), 100, counts)
        self.assertEqual(counts.get(429, 0), 900, counts)
        # round-trips: at most one per limited request, and refusals mostly from the cache
        cmds = sum(metric(g, 'gatewayd_redis_commands_total{kind="limit"}') for g in gws)
        cached = sum(metric(g, 'gatewayd_redis_limit_decisions_total{source="local_cache"}')
                     for g in gws)
        self.assertLessEqual(cmds, 1000 + 12 * 3)  # + the warm-up requests
        self.assertGreater(cached, 0)
        print('redis round-trips per limited request: %.3f (%d commands, %d refused from '
              'the local over-limit cache)' % (cmds / 1012.0, cmds, cached))

    def test_headers_are_those_of_local_limiting(self):
        a, b = self.start_shared(2, limit='5/60s')
        tok = gwtest.access_token(sub='shared-2', tier='free')
        for i in range(5):
            g = (a, b)[i % 2]
            r = g.get('/jwt/x', bearer(tok))
            self.assertStatus(r, 200)
            self.assertRateHeaders(r, 5, 4 - i, 60, 'free', reset=12 * (i + 1))
        for g in (a, b, a):
            r = g.get('/jwt/x', bearer(tok))
            ra = self.assert429(r, 'rate_limited', 'free', 5, 60)
            self.assertTrue(11 <= ra <= 12, ra)
            self.assertRateHeaders(r, 5, 0, 60, 'free', reset=60)

    def test_flushed_script_is_reloaded(self):
        a, b = self.start_shared(2, limit='10/1h')
        tok = gwtest.access_token(sub='shared-3', tier='free')
        self.assertStatus(a.get('/jwt/x', bearer(tok)), 200)
        self.assertEqual(self.redis.command('SCRIPT', 'FLUSH'), 'OK')
        counts = self.spread([a, b], tok, 30, threads=3)
        self.assertEqual(counts.get(200, 0), 9, counts)
        self.assertEqual(counts.get(429, 0), 21, counts)


class SharedIdentityTest(RedisCase):
    def within(self, gw, fn, expect, ms=100):
        """fn(gw) returns expect within ms milliseconds (polled)."""
        t0 = time.monotonic()
        while True:
            got = fn(gw)
            if got == expect:
                return (time.monotonic() - t0) * 1000
            if (time.monotonic() - t0) * 1000 > ms:
                self.fail('port %d: still %r after %d ms, expected %r' % (gw.port, got, ms,
                                                                          expect))
            time.sleep(0.005)

    def user_on(self, g):
        """A user registered through gateway g: (access token, user id)."""
        self.gw = g
        user = self.register()
        return user['access_token'], int(user['user']['id'] if 'user' in user
                                         else user['user_id'])

    def block(self, g, uid, path='/admin/block_key'):
        r = g.request('POST', path, dict(self.admin_headers(), **{
            'Content-Type': 'application/json'}), ('{"user_id": %d}' % uid).encode())
        self.assertStatus(r, 200)

    def test_block_unblock_logout_on_one_instance_hold_on_all(self):
        a, b, c = self.start_shared(3, limit='1000/60s')
        tok, uid = self.user_on(a)
        status = lambda g: g.get('/jwt/x', bearer(tok)).status  # noqa: E731
        for g in (a, b, c):
            self.assertEqual(status(g), 200)
        self.block(a, uid)
        for g in (b, c):
            self.within(g, status, 403)
        self.block(b, uid, '/admin/unblock_key')
        for g in (a, c):
            self.within(g, status, 200)
        r = c.request('POST', '/auth/logout', bearer(tok))
        self.assertStatus(r, 200)
        for g in (a, b):
            self.within(g, status, 401)
        self.assertEqual(b.get('/jwt/x', bearer(tok)).json()['error'], 'token_revoked')

    def test_block_during_an_outage_reaches_the_others_when_redis_is_back(self):
        a, b = self.start_shared(2, limit='1000/60s')
        tok, uid = self.user_on(a)
        self.assertEqual(b.get('/jwt/x', bearer(tok)).status, 200)
        self.redis.kill()
        a.proc.wait_log(r'redis: publisher: lost', 5)
        self.block(a, uid)
        self.assertEqual(b.get('/jwt/x', bearer(tok)).status, 200)  # not told yet
        self.redis.start()
        gwtest.wait_until(lambda: b.get('/jwt/x', bearer(tok)).status == 403, 10,
                          message='the block reached the other instance')

    def test_tier_upgrade_rescales_the_shared_quota(self):
        a, b = self.start_shared(2, limit='3/60s')
        tok, uid = self.user_on(a)
        got = [(a, b)[i % 2].get('/jwt/x', bearer(tok)).status for i in range(4)]
        self.assertEqual(got, [200, 200, 200, 429], got)
        self.upgrade('basic', user_id=uid)
        gwtest.wait_until(lambda: b.get('/usage', bearer(tok)).json().get('tier') == 'basic',
                          5, message='the upgrade reached the other instance')
        key = 'gw:rl:u:%d' % uid
        gwtest.wait_until(lambda: 0 < self.redis.command('PTTL', key) <= 37000, 5,
                          message='the shared state rescaled')
        # 3 used at 20 s each are 36 s of a 60 s basic window (12 s each): 2 left
        got = [(b, a)[i % 2].get('/jwt/x', bearer(tok)).status for i in range(3)]
        self.assertEqual(got, [200, 200, 429], got)

    def test_ban_on_one_instance_holds_on_all(self):
        a, b = self.start_shared(2, limit='2/60s', ban=2)
        tok = gwtest.access_token(sub='banned-1', tier='free')
        codes = [a.get('/jwt/x', bearer(tok)).status for _ in range(5)]
        self.assertEqual(codes[:2], [200, 200], codes)
        r = a.get('/jwt/x', bearer(tok))
        self.assertError(r, 429, 'temporarily_banned')
        self.within(b, lambda g: g.get('/jwt/x', bearer(tok)).json().get('error'),
                    'temporarily_banned')
        self.assertGreaterEqual(metric(b, 'gatewayd_redis_changes_received_total'), 1)


class FailureTest(RedisCase):
    def load_during(self, gws, seconds, tok_prefix='load'):
        """Requests of several identities for `seconds`: status counts, and the slowest."""
        stop = time.monotonic() + seconds
        counts = {}
        slowest = [0.0]
        lock = threading.Lock()
        errors = []

        def worker(t):
            try:
                c = gws[t % len(gws)].client(timeout=5)
                tok = gwtest.access_token(sub='%s-%d' % (tok_prefix, t), tier='free')
                while time.monotonic() < stop:
                    t0 = time.monotonic()
                    r = c.get('/jwt/x', bearer(tok))
                    dt = time.monotonic() - t0
                    with lock:
                        counts[r.status] = counts.get(r.status, 0) + 1
                        slowest[0] = max(slowest[0], dt)
                    time.sleep(0.002)
                c.close()
            except Exception as e:  # a hung or reset request lands here
                with lock:
                    errors.append(repr(e))
        ts = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
        for t in ts:
            t.start()
        return ts, counts, slowest, errors

    def join(self, ts, errors):
        for t in ts:
            t.join(30)
        self.assertFalse(errors, errors)

    def kill_and_restart(self, failure):
        gws = self.start_shared(2, limit='1000000/1s', failure=failure)
        ts, counts, slowest, errors = self.load_during(gws, 4.0)
        time.sleep(1.0)
        self.redis.kill()
        for g in gws:
            g.proc.wait_log(r'redis: worker \d+: lost 127\.0\.0\.1:%d' % self.redis.port, 5)
        down = dict(counts)
        time.sleep(1.0)
        during = {k: counts.get(k, 0) - down.get(k, 0) for k in counts}
        self.redis.start()
        self.join(ts, errors)
        for g in gws:
            self.assertTrue(g.proc.alive(), 'gatewayd died')
            gwtest.wait_until(lambda: metric(g, 'gatewayd_redis_up') == 1, 10,
                              message='redis back up on port %d' % g.port)
            self.assertRegex(g.proc.log(), r'redis: worker \d+: connected to 127\.0\.0\.1:%d'
                             % self.redis.port)
        self.assertLess(slowest[0], 3.0, 'a request waited %.1fs' % slowest[0])
        self.assertGreater(sum(metric(g, 'gatewayd_redis_transitions_total{to="down"}')
                               for g in gws), 0)
        return gws, during

    def test_open_keeps_serving_with_local_limits(self):
        gws, during = self.kill_and_restart('open')
        self.assertGreater(during.get(200, 0), 0, during)
        self.assertEqual(during.get(503, 0), 0, during)
        self.assertGreater(sum(metric(g, 'gatewayd_redis_fallbacks_total') for g in gws), 0)
        self.assert_shared_again(gws)

    def test_closed_refuses_with_503(self):
        gws, during = self.kill_and_restart('closed')
        self.assertGreater(during.get(503, 0), 0, during)
        r = gws[0].get('/jwt/x', bearer(gwtest.access_token(sub='x', tier='free')))
        if r.status == 503:
            self.assertError(r, 503, 'limiter_unavailable')
        self.assert_shared_again(gws)

    def assert_shared_again(self, gws):
        # the decisions are Redis's again: the identity's TAT is there (basic: 5/60s, so
        # the key lives 12 s a request), and counted
        tok = gwtest.access_token(sub='resumed', tier='basic')
        before = sum(metric(g, 'gatewayd_redis_limit_decisions_total{source="redis"}')
                     for g in gws)
        got = [g.get('/jwt/x', bearer(tok)).status for g in gws]
        self.assertEqual(got, [200] * len(gws), got)
        self.assertEqual(self.redis.command('EXISTS', 'gw:rl:u:resumed'), 1)
        after = sum(metric(g, 'gatewayd_redis_limit_decisions_total{source="redis"}')
                    for g in gws)
        self.assertEqual(after - before, len(gws))

    def test_unreachable_at_start_then_back(self):
        self.redis.kill()
        gws = []
        if not self.backends:
            self.start_backends(1)
        for i in range(2):
            gws.append(self.start_gateway(self.config(i + 1, limit='3/60s', failure='closed'),
                                          port=gwtest.free_port()))
        tok = gwtest.access_token(sub='early', tier='free')
        r = gws[0].get('/jwt/x', bearer(tok))
        self.assertError(r, 503, 'limiter_unavailable')
        self.assertEqual(r.header('Retry-After'), '1')
        gws[0].proc.wait_log(r'redis: .*cannot reach 127\.0\.0\.1:%d' % self.redis.port, 5)
        self.redis.start()
        for g in gws:
            self.wait_redis_up(g, timeout=15)
        self.redis.command('DEL', 'gw:rl:u:early')
        got = [gws[i % 2].get('/jwt/x', bearer(tok)).status for i in range(6)]
        self.assertEqual(got, [200, 200, 200, 429, 429, 429], got)


class AuthTest(RedisCase):
    def setUp(self):
        if not redisserver.available():
            self.skipTest('redis-server is not installed')
        self.redis = redisserver.RedisServer(self, password='s3cret-pw').start()

    def test_password_and_database_from_the_url(self):
        self.start_backends(1)
        url = 'redis://:s3cret-pw@127.0.0.1:%d/3' % self.redis.port
        g = self.start_gateway(self.config(1, limit='2/60s', url=url), port=gwtest.free_port())
        self.wait_redis_up(g)
        tok = gwtest.access_token(sub='authed', tier='free')
        got = [g.get('/jwt/x', bearer(tok)).status for _ in range(3)]
        self.assertEqual(got, [200, 200, 429], got)
        self.assertEqual(self.redis.command('EXISTS', 'gw:rl:u:authed', db=3), 1)
        self.assertEqual(self.redis.command('EXISTS', 'gw:rl:u:authed'), 0)

    def test_wrong_password_is_logged_and_limits_fail_closed(self):
        self.start_backends(1)
        url = 'redis://:not-it@127.0.0.1:%d/0' % self.redis.port
        g = self.start_gateway(self.config(1, failure='closed', url=url),
                               port=gwtest.free_port())
        r = g.get('/jwt/x', bearer(gwtest.access_token(sub='nope', tier='free')))
        self.assertError(r, 503, 'limiter_unavailable')
        g.proc.wait_log(r'redis: .*AUTH refused: WRONGPASS', 5)
        self.assertNotIn('not-it', g.proc.log())
        self.assertEqual(metric(g, 'gatewayd_redis_up'), 0)
