"""End-to-end tests of the shared response cache (`cache shared=redis`; gatewayd.conf(5)).

Two gateways share one redis-server (tests/e2e/redisserver.py) and one mock backend,
which counts the requests it serves per path. They check:
- a response fetched through A is a HIT on B (same body, an Age that carries the time
  it spent on A), without a second backend request;
- per-identity entries stay per identity across instances;
- an entry larger than shared_max_entry stays in A's memory only;
- the TTL travels: an entry that expired on A is not served by B;
- a purge on A reaches B's memory and the Redis level; an unsafe method on A drops the
  URL's shared entry;
- Redis down: requests still get answers (MISS upstream), never 503, even with
  redis_failure closed;
- the configuration is checked (shared=redis needs `redis`, with file:line).

Skipped when redis-server is not installed.
"""

import json
import shutil
import subprocess
import time

import gwtest
from test_identity import bearer
from test_redis import RedisCase, metric

CACHE = '''
    cache ttl=30s max_memory=8mb shared=redis shared_max_entry=%s
    route /c auth=none cache=on
    route /bytes auth=none cache=on
    route /cacheable auth=none cache=on
    route /jc auth=jwt cache=on
    route /t auth=none cache=on cache_ttl=2s
'''


class SharedCacheCase(RedisCase):
    max_entry = '64kb'
    failure = 'open'

    def setUp(self):
        super().setUp()
        self.b1 = self.start_backends(1)[0]
        self.a, self.b = self.start_shared(2, limit='100000/60s', failure=self.failure,
                                           extra=CACHE % self.max_entry)
        for g in (self.a, self.b):
            gwtest.wait_until(lambda g=g: (metric(g, 'gatewayd_cache_shared_generation')
                                           or 0) >= 0, 10,
                              message='the generation read on port %d' % g.port)

    def get(self, g, path, headers=None, method='GET', body=None):
        # behind one load balancer every instance sees the same Host: part of the key
        h = {'Host': 'api.example'}
        h.update(headers or {})
        return g.request(method, path, headers=h, body=body)

    def wait_stored(self, g, n):
        gwtest.wait_until(lambda: metric(g, 'gatewayd_cache_shared_total{result="stored"}') == n,
                          5, message='%d entries stored in Redis by port %d' % (n, g.port))

    def purge(self, g, prefix=None):
        body = json.dumps({'prefix': prefix} if prefix is not None else {}).encode()
        h = dict(self.admin_headers())
        h['Content-Type'] = 'application/json'
        r = g.request('POST', '/admin/cache/purge', headers=h, body=body)
        self.assertEqual(r.status, 200, r.text)
        return r.json()['purged']


class TestShared(SharedCacheCase):
    def test_miss_on_a_is_a_hit_on_b(self):
        r1 = self.get(self.a, '/c/item?id=1')
        self.assertEqual((r1.status, r1.header('X-Cache')), (200, 'MISS'))
        self.wait_stored(self.a, 1)
        time.sleep(1.1)
        r2 = self.get(self.b, '/c/item?id=1')
        self.assertEqual((r2.status, r2.header('X-Cache')), (200, 'HIT'))
        self.assertEqual(r2.body, r1.body)
        self.assertEqual(int(r2.header('Content-Length')), len(r1.body))
        self.assertEqual(r2.header('X-Backend'), 'b1')
        self.assertGreaterEqual(int(r2.header('Age')), 1)  # the time it spent on A
        self.assertLessEqual(int(r2.header('Age')), 5)
        self.assertEqual(self.b1.requests('/c/item'), 1)
        # now in B's memory: a HIT without Redis
        self.assertEqual(self.get(self.b, '/c/item?id=1').header('X-Cache'), 'HIT')
        self.assertEqual(metric(self.b, 'gatewayd_cache_shared_total{result="hit"}'), 1)
        # another resource is a miss in both levels
        self.assertEqual(self.get(self.b, '/c/item?id=2').header('X-Cache'), 'MISS')
        self.assertEqual(metric(self.b, 'gatewayd_cache_shared_total{result="miss"}'), 1)
        self.assertEqual(self.b1.requests('/c/item'), 2)
        # conditional and HEAD requests on the shared copy
        etag = self.get(self.a, '/cacheable?v=1').header('ETag')
        self.wait_stored(self.a, 2)
        c = self.get(self.b, '/cacheable?v=1', {'If-None-Match': etag})
        self.assertEqual((c.status, c.header('X-Cache')), (304, 'HIT'))
        self.assertEqual(self.b1.requests('/cacheable'), 1)
        # the metrics stay promtool-clean with the shared level's families
        tool = shutil.which('promtool')
        if tool is not None:
            p = subprocess.run([tool, 'check', 'metrics'], input=self.b.get('/metrics').body,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual((p.returncode, p.stdout.decode().strip()), (0, ''))

    def test_identities_stay_apart(self):
        t1 = gwtest.access_token(sub='rc-user-1', tier='free')
        t2 = gwtest.access_token(sub='rc-user-2', tier='free')
        r1 = self.get(self.a, '/jc/me', bearer(t1))
        self.assertEqual((r1.status, r1.header('X-Cache')), (200, 'MISS'))
        self.wait_stored(self.a, 1)
        r2 = self.get(self.b, '/jc/me', bearer(t2))
        self.assertEqual((r2.status, r2.header('X-Cache')), (200, 'MISS'))
        self.assertNotEqual(r2.body, r1.body)
        r3 = self.get(self.b, '/jc/me', bearer(t1))
        self.assertEqual(r3.header('X-Cache'), 'HIT')
        self.assertEqual(r3.body, r1.body)
        self.assertEqual(self.b1.requests('/jc/me'), 2)
        # and the same the other way round: identity 2's entry reaches A for identity 2 only
        self.wait_stored(self.b, 1)
        self.assertEqual(self.get(self.a, '/jc/me', bearer(t2)).body, r2.body)
        self.assertEqual(self.get(self.a, '/jc/me', bearer(t1)).body, r1.body)
        self.assertEqual(self.b1.requests('/jc/me'), 2)

    def test_large_entries_are_not_shared(self):
        big = self.get(self.a, '/bytes?n=100000')
        self.assertEqual((big.status, len(big.body)), (200, 100000))
        self.assertEqual(self.get(self.a, '/bytes?n=100000').header('X-Cache'), 'HIT')
        gwtest.wait_until(
            lambda: metric(self.a, 'gatewayd_cache_shared_total{result="too_large"}') == 1, 5,
            message='the large entry counted')
        self.assertEqual(self.get(self.b, '/bytes?n=100000').header('X-Cache'), 'MISS')
        self.assertEqual(self.b1.requests('/bytes'), 2)
        self.get(self.a, '/bytes?n=1000')
        self.wait_stored(self.a, 1)
        small = self.get(self.b, '/bytes?n=1000')
        self.assertEqual((small.header('X-Cache'), len(small.body)), ('HIT', 1000))
        self.assertEqual(self.b1.requests('/bytes'), 3)

    def test_ttl_carried_over(self):
        # no validators (a revalidation would answer HIT after a 304): expiry means MISS
        t0 = time.time()
        self.assertEqual(self.get(self.a, '/t/x').header('X-Cache'), 'MISS')
        self.wait_stored(self.a, 1)
        keys = self.redis.command('KEYS', 'gw:c:*')
        self.assertEqual(len(keys), 1)
        pttl = self.redis.command('PTTL', keys[0])
        self.assertTrue(0 < pttl <= 2000, pttl)
        r = self.get(self.b, '/t/x')
        self.assertEqual(r.header('X-Cache'), 'HIT')
        # expired on A: expired on B too (its copy kept A's remaining lifetime)
        time.sleep(max(0, t0 + 2.3 - time.time()))
        self.assertEqual(self.get(self.a, '/t/x').header('X-Cache'), 'MISS')
        self.assertEqual(self.b1.requests('/t/x'), 2)
        time.sleep(0.1)
        self.assertEqual(self.get(self.b, '/t/x').header('X-Cache'), 'HIT')  # A's new copy
        self.assertEqual(self.b1.requests('/t/x'), 2)


class TestPurge(SharedCacheCase):
    def test_purge_reaches_every_instance(self):
        for p in ('/c/api/a', '/c/web/b'):
            self.assertEqual(self.get(self.a, p).header('X-Cache'), 'MISS')
        self.wait_stored(self.a, 2)
        for p in ('/c/api/a', '/c/web/b'):
            self.assertEqual(self.get(self.b, p).header('X-Cache'), 'HIT')
        gen = metric(self.b, 'gatewayd_cache_shared_generation')
        self.assertEqual(self.purge(self.a, '/c/api/'), 1)
        gwtest.wait_until(lambda: metric(self.b, 'gatewayd_cache_shared_generation') > gen, 2,
                          message='the purge reaching B')
        self.assertEqual(metric(self.a, 'gatewayd_cache_shared_generation'),
                         metric(self.b, 'gatewayd_cache_shared_generation'))
        self.assertEqual(metric(self.a, 'gatewayd_cache_shared_purges_total'), 1)
        # B's memory lost the prefix, kept the rest; the shared level is a new generation
        self.assertEqual(self.get(self.b, '/c/api/a').header('X-Cache'), 'MISS')
        self.assertEqual(self.get(self.b, '/c/web/b').header('X-Cache'), 'HIT')
        self.assertEqual(self.b1.requests('/c/api/a'), 2)
        # a full purge from B empties A
        self.assertEqual(self.get(self.a, '/c/web/b').header('X-Cache'), 'HIT')
        self.purge(self.b)
        gwtest.wait_until(lambda: metric(self.a, 'gatewayd_cache_shared_generation') == metric(
            self.b, 'gatewayd_cache_shared_generation'), 2, message='the purge reaching A')
        self.assertEqual(self.get(self.a, '/c/web/b').header('X-Cache'), 'MISS')

    def test_unsafe_method_drops_the_shared_entry(self):
        self.assertEqual(self.get(self.a, '/c/u').header('X-Cache'), 'MISS')
        self.wait_stored(self.a, 1)
        r = self.get(self.a, '/c/u', method='POST', body=b'{}')
        self.assertEqual(r.status, 200)
        gwtest.wait_until(lambda: not self.redis.command('KEYS', 'gw:c:*'), 2,
                          message='the shared entry deleted')
        # not brought back from Redis into A's memory
        self.assertEqual(self.get(self.a, '/c/u').header('X-Cache'), 'MISS')


class TestRedisDown(SharedCacheCase):
    failure = 'closed'  # the cache never answers 503, whatever redis_failure says

    def test_serves_without_redis(self):
        self.assertEqual(self.get(self.a, '/c/x').header('X-Cache'), 'MISS')
        self.wait_stored(self.a, 1)
        self.redis.kill()
        for g in (self.a, self.b):
            for i in range(4):
                t = time.time()
                r = self.get(g, '/c/down%d' % i)
                self.assertEqual((r.status, r.header('X-Cache')), (200, 'MISS'), r.text)
                self.assertLess(time.time() - t, 3)
        self.assertEqual(self.get(self.a, '/c/x').header('X-Cache'), 'HIT')  # memory
        self.assertEqual(self.get(self.b, '/c/x').header('X-Cache'), 'MISS')
        self.assertGreaterEqual(metric(self.b, 'gatewayd_cache_shared_total{result="error"}'), 1)
        # back: sharing resumes
        self.redis.start()
        gwtest.wait_until(lambda: metric(self.a, 'gatewayd_redis_up') == 1, 15,
                          message='Redis back on A')
        gwtest.wait_until(lambda: metric(self.b, 'gatewayd_redis_up') == 1, 15,
                          message='Redis back on B')
        self.get(self.a, '/c/back')
        gwtest.wait_until(
            lambda: metric(self.a, 'gatewayd_cache_shared_total{result="stored"}') >= 2, 5,
            message='stored again')
        self.assertEqual(self.get(self.b, '/c/back').header('X-Cache'), 'HIT')


class TestParked(SharedCacheCase):
    def test_clients_leaving_while_redis_is_asked(self):
        self.assertEqual(self.get(self.a, '/c/p').header('X-Cache'), 'MISS')
        self.wait_stored(self.a, 1)
        self.redis.command('CLIENT', 'PAUSE', '300', 'ALL')
        t = time.time()
        for i in range(10):  # parked on B's Redis question, then gone
            c = gwtest.RawConn(self.b.port)
            c.send(b'GET /c/p%s HTTP/1.1\r\nHost: api.example\r\n\r\n' % (b'' if i % 2 else
                                                                              b'?gone'))
            c.close()
        r = self.get(self.b, '/c/p')  # waits for Redis, then the shared copy
        self.assertEqual((r.status, r.header('X-Cache')), (200, 'HIT'))
        self.assertGreater(time.time() - t, 0.2)
        # a pause longer than the redis timeout: the lookup gives up, MISS upstream
        self.redis.command('CLIENT', 'PAUSE', '1500', 'ALL')
        t = time.time()
        r = self.get(self.b, '/c/slow')
        self.assertEqual((r.status, r.header('X-Cache')), (200, 'MISS'))
        self.assertLess(time.time() - t, 1.4)
        gwtest.wait_until(lambda: metric(self.b, 'gatewayd_redis_up') == 1, 10,
                          message='Redis back on B')
        self.assertTrue(self.b.proc.alive())
        self.assertEqual(self.get(self.b, '/c/p?gone').status, 200)


class TestConfig(RedisCase):
    def setUp(self):
        pass  # -t only

    def test_shared_needs_redis(self):
        ok = 'backend b1 127.0.0.1:1\nroute / auth=none cache=on\n'
        rc, err, _ = self.check_config(
            ok + 'cache ttl=30s shared=redis shared_max_entry=512kb\n'
            'redis redis://127.0.0.1:6379/0\n')
        self.assertEqual(rc, 0, err)
        rc, err, path = self.check_config(ok + 'cache ttl=30s max_memory=64mb shared=redis\n')
        self.assertEqual(rc, 1)
        self.assertIn('%s:3:' % path, err)
        self.assertIn("'redis'", err)
        for line, word in (('cache shared=memcached', 'redis or off'),
                           ('cache shared_max_entry=12', 'shared_max_entry')):
            rc, err, path = self.check_config(ok + line + '\n')
            self.assertEqual(rc, 1, line)
            self.assertIn('%s:3:' % path, err)
            self.assertIn(word, err)
