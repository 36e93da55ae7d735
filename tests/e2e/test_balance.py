"""End-to-end tests of gatewayd's load-balancing strategies (SPEC sections 2, 3 and 6).

Every strategy is exercised through the real binaries: set with `strategy NAME` in the
file and changed live with POST /change_strategy. Counts come from the X-Backend header
(checked against the backend's own JSON answer) and from the backends' /_mock/stats.

Exactness claims and where they hold:
- round_robin and weighted keep their cursor per worker thread (like nginx without a
  shared zone, or Envoy), so sequential requests are exact on one keep-alive connection
  (one connection lives on one worker) and on fresh connections with `workers 1`; with
  several workers each worker is exact, so the totals are off by at most one cycle step
  per worker.
- ip_hash is a consistent hash of the client address: the mapping is the same on every
  worker and only the clients of a removed backend move.

Client addresses other than 127.0.0.1 are presented with `trusted_proxy 127.0.0.0/8` and
X-Forwarded-For from the documentation ranges 192.0.2.0/24, 198.51.100.0/24 and
203.0.113.0/24. The per-IP limiter is lifted (`ip_limit 1000000/1s`) wherever a test
sends more than its default 100 requests a minute.
"""

import collections
import json
import os
import re
import threading
import time

import gwtest

NO_IP_LIMIT = 'ip_limit 1000000/1s'
STRATEGIES = ('round_robin', 'least_connections', 'weighted', 'ip_hash', 'adaptive', 'random')
DOC_RANGES = ('192.0.2.%d', '198.51.100.%d', '203.0.113.%d')


def doc_ips(per_range, start=10):
    """Client addresses from the three documentation ranges, interleaved."""
    return [r % (start + i) for i in range(per_range) for r in DOC_RANGES]


def ncores():
    return os.cpu_count() or 1


class BalanceCase(gwtest.GatewayTestCase):
    """Helpers: start n backends behind one gateway, count where requests land."""

    timeout = 90

    def start_pool(self, strategy, n=3, weights=None, workers=None, extra='', args=None,
                   env=None):
        """n backends b1..bn (args: per-backend extra mockbackend args) + a gateway."""
        for i in range(n):
            self.start_backend('b%d' % (i + 1), args=(args or {}).get(i + 1, ()))
        lines = ['strategy %s' % strategy, NO_IP_LIMIT]
        if workers is not None:
            lines.append('workers %s' % workers)
        for i in range(n):
            w = ' weight=%d' % weights[i] if weights else ''
            lines.append('backend b%d 127.0.0.1:{b%d}%s' % (i + 1, i + 1, w))
        lines.append('route / auth=none')
        if extra:
            lines.append(extra)
        return self.start_gateway('\n'.join(lines), env=env)

    def backend_of(self, r):
        """The backend that answered r (X-Backend, which must agree with the body)."""
        self.assertStatus(r, 200)
        xb = r.header('X-Backend')
        self.assertIsNotNone(xb, 'no X-Backend header on a proxied response: %r' % r.headers)
        self.assertEqual(xb, r.json()['backend'], 'X-Backend does not name the backend that '
                         'answered')
        return xb

    def fresh(self, n, path='/lb', headers=None):
        """n sequential requests, each on a new connection: the sequence of backends."""
        return [self.backend_of(self.get(path, headers)) for _ in range(n)]

    def keepalive(self, n, path='/lb', headers=None):
        """n sequential requests on one keep-alive connection: the sequence of backends."""
        with self.client() as cl:
            seq = [self.backend_of(cl.get(path, headers)) for _ in range(n)]
            self.assertEqual(cl.connections, 1, 'the gateway closed a keep-alive connection')
        return seq

    def mock_counts(self):
        """Requests each backend served, health checks and /_mock/* excluded."""
        out = {}
        for b in self.backends:
            by_path = b.stats()['by_path']
            out[b.id] = sum(n for p, n in by_path.items() if p != '/health')
        return out

    def reset_mocks(self):
        for b in self.backends:
            b.reset_stats()

    def stats(self):
        r = self.get('/stats')
        self.assertStatus(r, 200)
        return r.json()

    def change_strategy(self, name, token=gwtest.ADMIN_TOKEN):
        h = {'Authorization': 'Bearer ' + token} if token is not None else None
        return self.post_json('/change_strategy', {'strategy': name}, headers=h)

    def assertCounts(self, seq, expected, msg=''):
        got = dict(collections.Counter(seq))
        self.assertEqual(got, expected, '%s: got %r, expected %r' % (msg, got, expected))


# ---------------------------------------------------------------- round robin

class RoundRobinTest(BalanceCase):
    def test_exactly_even_on_one_connection(self):
        self.start_pool('round_robin')
        seq = self.keepalive(300)
        self.assertCounts(seq, {'b1': 100, 'b2': 100, 'b3': 100}, 'round_robin, keep-alive')
        # in turn: every window of 3 consecutive picks holds each backend once
        for i in range(len(seq) - 2):
            self.assertEqual(len(set(seq[i:i + 3])), 3, 'not in turn at %d: %r' % (
                i, seq[max(0, i - 3):i + 6]))
        self.assertEqual(self.mock_counts(), {'b1': 100, 'b2': 100, 'b3': 100})

    def test_exactly_even_on_fresh_connections_with_one_worker(self):
        self.start_pool('round_robin', workers=1)
        seq = self.fresh(300)
        self.assertCounts(seq, {'b1': 100, 'b2': 100, 'b3': 100}, 'round_robin, workers 1')

    def test_fresh_connections_with_default_workers(self):
        # Each worker turns its own cursor: at most one pick of difference per worker.
        self.start_pool('round_robin')
        seq = self.fresh(300)
        c = collections.Counter(seq)
        self.assertEqual(set(c), {'b1', 'b2', 'b3'})
        self.assertLessEqual(max(c.values()) - min(c.values()), ncores(),
                             'round_robin with %d workers: %r' % (ncores(), dict(c)))

    def test_ignores_weights(self):
        # gatewayd.conf(5): every strategy but round_robin uses the weight.
        self.start_pool('round_robin', weights=(2, 1, 1))
        self.assertCounts(self.keepalive(300), {'b1': 100, 'b2': 100, 'b3': 100},
                          'round_robin with weights 2:1:1')

    def test_stats_report_the_strategy_and_the_requests(self):
        self.start_pool('round_robin')
        seq = self.keepalive(90)
        want = dict(collections.Counter(seq))
        # counters are added as each exchange ends, a moment after the client has its
        # response: give /stats that moment
        st = gwtest.wait_until(
            lambda: (lambda s: s if {b['id']: b['requests'] for b in s['backends']} == want
                     else None)(self.stats()), timeout=2, interval=0.05,
            message='/stats requests per backend to be %r' % want)
        self.assertEqual(st['strategy'], 'round_robin')


# ---------------------------------------------------------------- weighted

class WeightedTest(BalanceCase):
    EXPECTED = {'b1': 200, 'b2': 100, 'b3': 100}

    def check_smooth(self, seq):
        # Smooth weighted round robin is periodic with period sum(weights) = 4, so every
        # window of 4 consecutive picks holds exactly b1 twice, b2 and b3 once.
        for i in range(len(seq) - 3):
            self.assertCounts(seq[i:i + 4], {'b1': 2, 'b2': 1, 'b3': 1},
                              'window of 4 at %d' % i)

    def test_2_1_1_exact_on_one_connection(self):
        self.start_pool('weighted', weights=(2, 1, 1))
        seq = self.keepalive(400)
        self.assertCounts(seq, self.EXPECTED, 'weighted 2:1:1, 400 requests, keep-alive')
        self.check_smooth(seq)
        self.assertEqual(self.mock_counts(), self.EXPECTED)

    def test_2_1_1_exact_on_fresh_connections_with_one_worker(self):
        self.start_pool('weighted', weights=(2, 1, 1), workers=1)
        seq = self.fresh(400)
        self.assertCounts(seq, self.EXPECTED, 'weighted 2:1:1, workers 1, fresh connections')
        self.check_smooth(seq)

    def test_2_1_1_on_fresh_connections_with_default_workers(self):
        self.start_pool('weighted', weights=(2, 1, 1))
        c = collections.Counter(self.fresh(400))
        for bid, want in self.EXPECTED.items():
            self.assertLessEqual(abs(c[bid] - want), 2 * ncores(),
                                 'weighted 2:1:1 with %d workers: %r' % (ncores(), dict(c)))

    def test_weights_from_stats(self):
        self.start_pool('weighted', weights=(2, 1, 1))
        st = self.stats()
        self.assertEqual(st['strategy'], 'weighted')
        self.assertEqual({b['id']: b['weight'] for b in st['backends']},
                         {'b1': 2, 'b2': 1, 'b3': 1})


# ---------------------------------------------------------------- least connections

class LeastConnectionsTest(BalanceCase):
    def run_with_slow_b3(self, strategy):
        self.start_pool(strategy, args={3: ['--delay-ms', '200']})
        self.keepalive(6)  # warm-up, and every backend answers
        self.reset_mocks()
        res = self.load('/lc', threads=8, requests=150, duration=4)
        self.assertEqual(list(res.statuses), [200], repr(res))
        self.assertEqual(set(res.errors) - {'deadline'}, set(), repr(res))
        c = self.mock_counts()
        total = sum(c.values())
        self.assertGreater(total, 100, 'too little traffic to judge: %r %r' % (c, res))
        return c, total

    def test_slow_backend_gets_few_requests(self):
        c, total = self.run_with_slow_b3('least_connections')
        self.assertLess(c['b3'] / total, 0.10,
                        'least_connections sent %d of %d requests to the 200 ms backend: %r'
                        % (c['b3'], total, c))
        self.assertGreater(c['b1'], 0.3 * total, repr(c))
        self.assertGreater(c['b2'], 0.3 * total, repr(c))

    def test_idle_backends_share_evenly(self):
        # With nothing in flight every backend ties: ties rotate rather than all going to
        # the first backend.
        self.start_pool('least_connections')
        c = collections.Counter(self.keepalive(300))
        self.assertEqual(set(c), {'b1', 'b2', 'b3'})
        self.assertLessEqual(max(c.values()) - min(c.values()), 3, repr(dict(c)))


# ---------------------------------------------------------------- ip_hash

class IpHashTest(BalanceCase):
    def xff(self, ip):
        return {'X-Forwarded-For': ip}

    def map_clients(self, ips, repeat=3):
        """ip -> backend, checking that each client lands on one backend every time."""
        out = {}
        for ip in ips:
            seen = {self.backend_of(self.get('/h/' + ip, self.xff(ip))) for _ in range(repeat)}
            self.assertEqual(len(seen), 1, 'ip_hash sent client %s to %r' % (ip, seen))
            out[ip] = seen.pop()
        return out

    def test_same_client_same_backend(self):
        self.start_pool('ip_hash', extra='trusted_proxy 127.0.0.0/8')
        ips = doc_ips(15)
        m = self.map_clients(ips, repeat=4)
        c = collections.Counter(m.values())
        self.assertEqual(set(c), {'b1', 'b2', 'b3'},
                         '45 client addresses should reach all 3 backends: %r' % dict(c))
        # the same on a keep-alive connection (another worker, maybe) and in another order
        with self.client() as cl:
            for ip in reversed(ips):
                self.assertEqual(self.backend_of(cl.get('/k', self.xff(ip))), m[ip], ip)

    def test_concurrent_requests_of_one_client_stay_together(self):
        # Affinity must hold while the client has requests in flight (nginx `hash ...
        # consistent`, HAProxy `balance source`): a second request of the same client
        # goes where the first one is, not to whichever backend is least busy.
        self.start_pool('ip_hash', extra='trusted_proxy 127.0.0.0/8')
        ip = '198.51.100.77'
        home = self.backend_of(self.get('/h', self.xff(ip)))
        got = []

        def slow():
            got.append(self.backend_of(self.get('/slow?ms=1000', self.xff(ip))))

        threads = [threading.Thread(target=slow, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        gwtest.wait_until(lambda: sum(b['active_connections']
                                      for b in self.stats()['backends']) >= 2,
                          timeout=3, message='two slow requests in flight')
        during = [self.backend_of(self.get('/h', self.xff(ip))) for _ in range(3)]
        for t in threads:
            t.join(5)
        self.assertEqual(got, [home, home], 'the slow requests of %s' % ip)
        self.assertEqual(during, [home] * 3,
                         'requests of client %s left its backend %s while two of its '
                         'requests were in flight there' % (ip, home))

    def test_stable_across_workers_and_restarts_of_the_gateway(self):
        # The ring depends on backend ids only: a second gateway (other workers, other
        # random seeds) maps every client the same way.
        self.start_pool('ip_hash', extra='trusted_proxy 127.0.0.0/8')
        ips = doc_ips(8)
        m1 = self.map_clients(ips, repeat=2)
        self.gateway.stop()
        self.port = None
        self.start_gateway(self.gateway.config_text.replace(
            'listen 127.0.0.1:%d' % self.gateway.port, ''), args=['-d', 'workers=1'])
        self.assertEqual(self.map_clients(ips, repeat=2), m1)

    def test_reload_without_a_backend_moves_only_its_clients(self):
        gw = self.start_pool('ip_hash', extra='trusted_proxy 127.0.0.0/8')
        ips = doc_ips(20)
        before = self.map_clients(ips, repeat=2)
        counts = collections.Counter(before.values())
        self.assertEqual(set(counts), {'b1', 'b2', 'b3'}, repr(dict(counts)))
        text = re.sub(r'^backend b3 .*\n', '', gw.config_text, flags=re.M)
        self.assertNotIn('backend b3', text)
        gw.reload(text)
        gwtest.wait_until(lambda: [b['id'] for b in self.stats()['backends']] == ['b1', 'b2'],
                          timeout=5, message='the reload to drop b3 from /stats')
        after = self.map_clients(ips, repeat=2)
        moved_wrongly = {ip: (before[ip], after[ip]) for ip in ips
                         if before[ip] != 'b3' and before[ip] != after[ip]}
        self.assertEqual(moved_wrongly, {}, 'clients of b1/b2 moved after b3 was removed')
        for ip in ips:
            self.assertIn(after[ip], ('b1', 'b2'))
        # b3's former clients are spread, not all dumped on one backend
        moved_to = collections.Counter(after[ip] for ip in ips if before[ip] == 'b3')
        self.assertEqual(sum(moved_to.values()), counts['b3'])

    def test_without_trusted_proxy_xff_is_not_believed(self):
        # Without trusted_proxy the key is the socket address (127.0.0.1) whatever the
        # client claims: every "client" lands where a plain request lands.
        self.start_pool('ip_hash')
        home = self.backend_of(self.get('/plain'))
        for ip in doc_ips(10):
            self.assertEqual(self.backend_of(self.get('/h', self.xff(ip))), home,
                             'ip_hash believed X-Forwarded-For %s from an untrusted peer' % ip)

    def test_rightmost_untrusted_hop_is_the_client(self):
        self.start_pool('ip_hash', extra='trusted_proxy 127.0.0.0/8 10.0.0.0/8')
        m = self.map_clients(doc_ips(10), repeat=1)
        # two clients on different backends
        a = next(iter(m))
        b = next(ip for ip in m if m[ip] != m[a])
        cases = [
            ('%s, %s' % (b, a), m[a]),                       # right-most wins
            ('%s, %s' % (a, b), m[b]),
            ('%s, 10.0.0.7' % a, m[a]),                      # trusted hops are skipped
            ('%s, %s, 10.1.1.1, 10.2.2.2' % (a, b), m[b]),
            ('%s,%s' % (b, a), m[a]),                        # no blank after the comma
        ]
        for value, want in cases:
            got = self.backend_of(self.get('/h', self.xff(value)))
            self.assertEqual(got, want, 'X-Forwarded-For: %s should key on %s' % (
                value, [ip for ip in (a, b) if m[ip] == want]))
        # Two X-Forwarded-For lines are one list; the last line is its right end.
        with gwtest.RawConn(self.gateway.port) as c:
            r = c.request('GET', '/h', [('X-Forwarded-For', b), ('X-Forwarded-For', a)])
        self.assertEqual(self.backend_of(r), m[a])

    def test_forwarded_for_reaches_the_backend(self):
        self.start_pool('ip_hash', extra='trusted_proxy 127.0.0.0/8')
        j = self.get('/h', self.xff('203.0.113.9')).json()
        hops = [h.strip() for h in j['headers']['x-forwarded-for'].split(',')]
        self.assertEqual(hops, ['203.0.113.9', '127.0.0.1'])
        j = self.get('/h').json()
        self.assertEqual(j['headers']['x-forwarded-for'].strip(), '127.0.0.1')
        self.assertEqual(j['headers'].get('x-forwarded-proto'), 'http')


# ---------------------------------------------------------------- adaptive and random

class AdaptiveTest(BalanceCase):
    def test_slow_backend_gets_a_clearly_smaller_share(self):
        self.start_pool('adaptive', args={2: ['--delay-ms', '50']})
        self.keepalive(6)
        self.reset_mocks()
        res = self.load('/ad', threads=8, requests=200, duration=4)
        self.assertEqual(dict(res.statuses), {200: res.total}, repr(res))
        c = self.mock_counts()
        total = sum(c.values())
        self.assertGreater(total, 100, repr(c))
        fast = min(c['b1'], c['b3'])
        self.assertLess(c['b2'] / total, 0.15,
                        'adaptive sent %.0f%% to the +50 ms backend: %r' % (
                            100.0 * c['b2'] / total, c))
        self.assertGreater(fast, 3 * c['b2'], repr(c))

    def test_all_backends_used_when_equal(self):
        # Three equally fast backends, sequential requests: none may be starved (a
        # backend whose latency is unknown or stale must still be tried).
        self.start_pool('adaptive')
        c = collections.Counter(self.fresh(300))
        c.update({b: 0 for b in ('b1', 'b2', 'b3')})
        self.assertGreater(min(c.values()), 30, 'adaptive starved an equally fast, healthy '
                           'backend over 300 sequential requests: %r' % dict(c))


class RandomTest(BalanceCase):
    def test_all_used_roughly_even(self):
        self.start_pool('random')
        seq = self.fresh(600)
        c = collections.Counter(seq)
        self.assertEqual(set(c), {'b1', 'b2', 'b3'})
        for bid, n in c.items():
            # mean 200, sd 11.5: 60 is more than 5 sd
            self.assertTrue(140 <= n <= 260, 'random: %r' % dict(c))

    def test_not_a_fixed_cycle(self):
        self.start_pool('random')
        seq = self.keepalive(120)
        cyclic = all(seq[i] == seq[i % 3] for i in range(len(seq)))
        self.assertFalse(cyclic, 'random strategy produced a perfect round robin: %r' % seq)

    def test_weights_are_followed(self):
        self.start_pool('random', weights=(2, 1, 1))
        c = collections.Counter(self.fresh(800))
        # expected 400/200/200; sd about 14 for b1, 12 for the others
        self.assertTrue(320 <= c['b1'] <= 480, repr(dict(c)))
        self.assertTrue(140 <= c['b2'] <= 260, repr(dict(c)))
        self.assertTrue(140 <= c['b3'] <= 260, repr(dict(c)))


# ---------------------------------------------------------------- choosing strategies

class StrategyConfigTest(BalanceCase):
    def test_every_strategy_from_the_file(self):
        self.start_backends(2)
        for name in STRATEGIES:
            with self.subTest(strategy=name):
                self.port = None  # a new gateway on a new port
                self.start_gateway('strategy %s\n%s\nbackend b1 127.0.0.1:{b1}\n'
                                   'backend b2 127.0.0.1:{b2}\nroute / auth=none\n'
                                   % (name, NO_IP_LIMIT))
                self.assertEqual(self.stats()['strategy'], name)
                seen = set(self.fresh(20))
                self.assertTrue(seen <= {'b1', 'b2'}, seen)
                # ip_hash: one client address, one backend; adaptive: AdaptiveTest
                if name not in ('ip_hash', 'adaptive'):
                    self.assertEqual(seen, {'b1', 'b2'}, name)
                self.assertEqual(self.gateway.stop(), 0)

    def test_unknown_strategy_refused_with_the_valid_names(self):
        rc, err, path = self.check_config('''
            listen 127.0.0.1:1
            strategy fastest
            backend b1 127.0.0.1:2
        ''')
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, re.escape(os.path.basename(path)) + r':\d+:')
        for name in ('round_robin', 'least_connections', 'weighted', 'ip_hash', 'adaptive'):
            self.assertIn(name, err)

    def test_default_strategy_is_round_robin(self):
        self.start_backends(2)
        self.start_gateway('''
            %s
            backend b1 127.0.0.1:{b1}
            backend b2 127.0.0.1:{b2}
        ''' % NO_IP_LIMIT)
        self.assertEqual(self.stats()['strategy'], 'round_robin')
        self.assertCounts(self.keepalive(10), {'b1': 5, 'b2': 5})


class ChangeStrategyTest(BalanceCase):
    def test_live_change_takes_effect(self):
        self.start_pool('round_robin', weights=(2, 1, 1))
        self.assertCounts(self.keepalive(300), {'b1': 100, 'b2': 100, 'b3': 100})

        r = self.change_strategy('weighted')
        self.assertStatus(r, 200)
        self.assertEqual(r.header('Content-Type'), 'application/json')
        self.assertEqual(r.json()['strategy'], 'weighted')
        self.assertEqual(self.stats()['strategy'], 'weighted')
        self.assertCounts(self.keepalive(400), {'b1': 200, 'b2': 100, 'b3': 100},
                          'after POST /change_strategy weighted')

        r = self.change_strategy('ip_hash')
        self.assertStatus(r, 200)
        seq = self.fresh(30)
        self.assertEqual(len(set(seq)), 1, 'ip_hash: one client, one backend: %r' % seq)

        r = self.change_strategy('round_robin')
        self.assertStatus(r, 200)
        self.assertCounts(self.keepalive(30), {'b1': 10, 'b2': 10, 'b3': 10})

    def test_every_name_accepted(self):
        self.start_pool('round_robin', n=2)
        for name in STRATEGIES:
            r = self.change_strategy(name)
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['strategy'], name)
            self.assertEqual(self.stats()['strategy'], name)
            self.assertEqual(self.get('/x').status, 200)

    def test_unknown_name_is_400_with_the_valid_names(self):
        self.start_pool('weighted', n=2)
        r = self.change_strategy('fastest')
        self.assertStatus(r, 400)
        self.assertEqual(r.header('Content-Type'), 'application/json')
        j = r.json()
        self.assertEqual(j['error'], 'invalid_request')
        text = json.dumps(j)
        for name in STRATEGIES:
            self.assertIn(name, text)
        self.assertEqual(self.stats()['strategy'], 'weighted', 'a refused change applied')
        # malformed bodies
        r = self.request('POST', '/change_strategy', self.admin_headers(), b'{not json')
        self.assertStatus(r, 400)
        self.assertEqual(r.json()['error'], 'invalid_request')
        r = self.post_json('/change_strategy', {'name': 'random'}, headers=self.admin_headers())
        self.assertStatus(r, 400)
        self.assertEqual(self.stats()['strategy'], 'weighted')

    def test_requires_the_admin_token(self):
        self.start_pool('round_robin', n=2)
        r = self.change_strategy('random', token=None)
        self.assertIn(r.status, (401, 403), r)
        self.assertEqual(r.header('Content-Type'), 'application/json')
        r = self.change_strategy('random', token='not-the-token')
        self.assertStatus(r, 401)
        self.assertEqual(r.json()['error'], 'invalid_token')
        self.assertEqual(self.stats()['strategy'], 'round_robin')
        r = self.get('/change_strategy')
        self.assertStatus(r, 405)

    def test_no_admin_token_configured_means_no_admin(self):
        self.start_pool('round_robin', n=2, env={'GATEWAYD_ADMIN_TOKEN': None})
        r = self.change_strategy('random')
        self.assertIn(r.status, (401, 403), r)
        r = self.change_strategy('random', token='')
        self.assertIn(r.status, (401, 403), r)
        self.assertEqual(self.stats()['strategy'], 'round_robin')

    def test_change_under_load_fails_nothing(self):
        self.start_pool('round_robin')
        stop = threading.Event()
        errors = []

        def flip():
            names = list(STRATEGIES)
            i = 0
            while not stop.is_set():
                r = self.change_strategy(names[i % len(names)])
                if r.status != 200:
                    errors.append(r.status)
                i += 1
                time.sleep(0.02)

        t = threading.Thread(target=flip, daemon=True)
        t.start()
        try:
            res = self.load('/flip', threads=4, requests=300, duration=4)
        finally:
            stop.set()
            t.join(5)
        self.assertEqual(errors, [])
        self.assertEqual(dict(res.statuses), {200: res.total}, repr(res))
        self.assertEqual(dict(res.errors), {}, repr(res))
