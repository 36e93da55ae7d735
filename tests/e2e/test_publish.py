"""End-to-end tests of the PUB stream (SPEC section 7): `TOPIC SP JSON` messages on the
`publish` socket — `stats` once a second with the /stats object and the last second's
rates, `log` for sampled requests — read with a real nng SUB socket (tests/e2e/nngsub.py,
ctypes over the system's libnng).
"""

import json
import os
import stat
import time

import gwtest
import nngsub

CONFIG = '''
    backend b1 127.0.0.1:{b1} dc=us-east
    backend b2 127.0.0.1:{b2} dc=eu-west
    datacenter us-east lat=39.04 lon=-77.49
    datacenter eu-west lat=53.35 lon=-6.26
    tier free 1000/3600s
    ip_limit 100000/60s
    route /jwt auth=jwt
    route / auth=none
'''


class PublishCase(gwtest.GatewayTestCase):
    def setUp(self):
        super().setUp()
        if nngsub.lib() is None:
            self.skipTest('libnng is not installed')
        self.start_backends(2, ids=['b1', 'b2'])
        self.gw = self.start_gateway(CONFIG)
        self.url = 'ipc://%s/gatewayd.pub' % self.tmp

    def sub(self, topics=('',)):
        s = nngsub.NngSub(self.url, topics)
        self.addCleanup(s.close)
        return s


class StatsTest(PublishCase):
    def test_once_a_second_with_the_stats_object(self):
        s = self.sub(('stats ',))
        t0, a = s.wait_for(lambda t, o: t == 'stats', 3.0)
        t1, b = s.wait_for(lambda t, o: t == 'stats', 3.0)
        self.assertEqual((t0, t1), ('stats', 'stats'))
        self.assertEqual(a['type'], 'stats')
        self.assertAlmostEqual(b['time'] - a['time'], 1.0, delta=0.35)
        for field in ('strategy', 'uptime_seconds', 'total_requests', 'backends', 'cache',
                      'queue', 'rate_limit', 'rps', 'p50_ms', 'p99_ms', 'error_rate',
                      'cache_hit_rate', 'top_keys', 'datacenters', 'access_log'):
            self.assertIn(field, b)
        self.assertEqual([x['id'] for x in b['backends']], ['b1', 'b2'])
        self.assertEqual(sorted(d['name'] for d in b['datacenters']), ['eu-west', 'us-east'])

    def test_rates_follow_the_traffic(self):
        s = self.sub(('stats ',))
        s.wait_for(lambda t, o: True, 3.0)  # a second boundary
        res = self.load('/x', threads=4, requests=100)
        self.assertEqual(dict(res.statuses), {200: res.total}, res)
        total = 0
        seen = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and total < res.total:
            _, o = s.recv_json(2.0)
            if o is None:
                break
            seen.append(o)
            total += round(o['rps'] * o['interval_s'])
        self.assertEqual(total, res.total, [(o['rps'], o['interval_s']) for o in seen])
        busy = max(seen, key=lambda o: o['rps'])
        self.assertGreater(busy['p50_ms'], 0)
        self.assertGreaterEqual(busy['p99_ms'], busy['p50_ms'])
        self.assertEqual(busy['error_rate'], 0)
        shares = [b['share'] for b in busy['backends']]
        self.assertAlmostEqual(sum(shares), 1.0, places=6)
        self.assertGreater(min(shares), 0.3)  # round robin over two
        dc = {d['name']: d for d in busy['datacenters']}
        self.assertTrue(dc['us-east']['healthy'])
        self.assertGreater(dc['us-east']['rps'], 0)

    def test_errors_show_in_the_error_rate(self):
        s = self.sub(('stats ',))
        for b in self.backends:
            b.fail()
        s.wait_for(lambda t, o: True, 3.0)
        for _ in range(20):
            self.get('/x')
        _, o = s.wait_for(lambda t, o: o['rps'] > 0, 4.0)
        self.assertIsNotNone(o)
        self.assertGreater(o['error_rate'], 0.5)

    def test_top_keys_rank_identities(self):
        s = self.sub(('stats ',))
        s.wait_for(lambda t, o: True, 3.0)
        busy, quiet = gwtest.access_token('777'), gwtest.access_token('778')
        for _ in range(12):
            self.assertStatus(self.get('/jwt/a', {'Authorization': 'Bearer ' + busy}), 200)
        for _ in range(3):
            self.assertStatus(self.get('/jwt/a', {'Authorization': 'Bearer ' + quiet}), 200)
        counts = {}
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and sum(counts.values()) < 15:
            _, o = s.recv_json(2.0)
            if o is None:
                break
            for k in o['top_keys']:
                counts[k['identity']] = counts.get(k['identity'], 0) + k['requests']
                self.assertEqual(k['tier'], 'free')
                self.assertEqual(k['limit'], 1000)
                self.assertIsNone(k['prefix'])
                self.assertIn(k['user_id'], (777, 778))
                self.assertFalse(k['blocked'])
        self.assertEqual(counts, {'u:777': 12, 'u:778': 3})


class LogStreamTest(PublishCase):
    def test_every_request_is_a_log_message(self):
        s = self.sub(('log ',))
        time.sleep(0.2)  # the subscription reaches the publisher
        ids = ['pub-log-%d' % i for i in range(10)]
        for rid in ids:
            self.assertStatus(self.get('/p?api_key=hidden-secret-1',
                                       {'X-Request-Id': rid}), 401)
        got = {}
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(got) < len(ids):
            t, o = s.recv_json(2.0)
            if o is None:
                break
            self.assertEqual(t, 'log')
            self.assertEqual(o['type'], 'log')
            got[o['request_id']] = o
        self.assertEqual(sorted(got), sorted(ids))
        o = got['pub-log-0']
        self.assertEqual(o['path'], '/p?api_key=REDACTED')
        self.assertEqual(o['status'], 401)
        self.assertNotIn('hidden-secret-1', json.dumps(list(got.values())))

    def test_sampled_beyond_the_budget(self):
        s = self.sub(('log ',))
        time.sleep(0.2)
        res = self.load('/x', threads=4, requests=300)
        n = 0
        while s.recv(0.5) is not None:
            n += 1
        # about 25 a second at most (an even sample): far fewer than the requests
        self.assertGreater(n, 0)
        self.assertLess(n, res.total, res)


class SampledWithTheFileTest(PublishCase):
    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if nngsub.lib() is None:
            self.skipTest('libnng is not installed')
        self.start_backends(2, ids=['b1', 'b2'])
        self.gw = self.start_gateway(CONFIG + 'access_log {tmp}/access.log\n')
        self.url = 'ipc://%s/gatewayd.pub' % self.tmp

    def test_the_file_has_every_line_the_stream_a_sample(self):
        s = self.sub(('stats ',))
        before = s.wait_for(lambda t, o: True)[1]['access_log']
        t0 = time.monotonic()
        res = self.load('/x', threads=4, requests=500)
        elapsed = time.monotonic() - t0
        self.assertEqual(dict(res.statuses), {200: res.total}, res)
        path = os.path.join(self.tmp, 'access.log')
        gwtest.wait_until(lambda: sum(1 for _ in open(path)) >= res.total, 3,
                          message='every request in the access log')
        after = s.wait_for(lambda t, o: o['access_log']['lines'] - before['lines']
                           >= res.total)[1]
        self.assertIsNotNone(after, 'no stats message counting the load')
        sent = after['access_log']['published'] - before['published']
        # the budget is 100 `log` messages a second of the log thread's clock
        self.assertGreater(sent, 0)
        self.assertLessEqual(sent, 100 * (int(elapsed) + 2), (sent, elapsed, res.total))
        self.assertLess(sent, res.total // 2, (sent, elapsed, res.total))


class EventTest(PublishCase):
    def test_operator_actions_and_health_are_events(self):
        s = self.sub(('event ',))
        time.sleep(0.2)
        r = self.post_json('/change_strategy', {'strategy': 'least_connections'},
                           self.admin_headers())
        self.assertStatus(r, 200)
        t, o = s.wait_for(lambda t, o: 'least_connections' in o.get('message', ''), 3.0)
        self.assertEqual(t, 'event', o)
        self.assertEqual(o['type'], 'event')
        self.assertEqual(o['level'], 'info')
        self.assertLess(abs(o['time'] - time.time()), 5)
        self.gw.reload()
        t, o = s.wait_for(lambda t, o: 'reloaded' in o.get('message', ''), 3.0)
        self.assertEqual(t, 'event', o)


class SocketTest(PublishCase):
    def test_ipc_socket_is_private(self):
        path = os.path.join(self.tmp, 'gatewayd.pub')
        # the PUB socket opens just after the HTTP listeners
        gwtest.wait_until(lambda: os.path.exists(path), 5, message='the PUB socket file')
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600)

    def test_subscribers_come_and_go(self):
        for _ in range(3):
            s = nngsub.NngSub(self.url, ('stats ',))
            t, o = s.wait_for(lambda t, o: t == 'stats', 3.0)
            s.close()
            self.assertEqual(t, 'stats')
        self.assertStatus(self.get('/health'), 200)
