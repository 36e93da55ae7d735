"""End-to-end tests of gatewayd's operational behaviour.

- the per-IP limiter (SPEC section 5, `ip_limit`, `ip_limit_exempt`, the 429 of section 4);
- reload (SIGHUP) under load, and a refused reload;
- graceful shutdown (SIGTERM drains in-flight requests, refuses new ones, exits 0);
- `gatewayd -t` and `-d` (SPEC section 1, gatewayd.conf(5) OVERRIDES);
- no file descriptor leak; /stats counters agree with the traffic sent.

Client addresses other than 127.0.0.1 come from X-Forwarded-For with
`trusted_proxy 127.0.0.0/8`, in the documentation ranges 192.0.2.0/24, 198.51.100.0/24
and 203.0.113.0/24. Every load is bounded in threads, requests and seconds.
"""

import collections
import os
import re
import signal
import subprocess
import threading
import time

import gwtest
from gwtest import RawConn, build_request

NO_IP_LIMIT = 'ip_limit 1000000/1s'


def xff(ip):
    return {'X-Forwarded-For': ip}


class OpsCase(gwtest.GatewayTestCase):
    timeout = 90

    def start_pool(self, n=2, extra='', ids=None, strategy='round_robin'):
        for i in range(n):
            self.start_backend(ids[i] if ids else 'b%d' % (i + 1))
        lines = ['strategy %s' % strategy]
        lines += ['backend %s 127.0.0.1:{b%d}' % (self.backends[i].id, i + 1)
                  for i in range(n)]
        lines += ['route / auth=none', extra]
        return self.start_gateway('\n'.join(lines))

    def stats(self, headers=None):
        r = self.get('/stats', headers)
        self.assertStatus(r, 200)
        return r.json()

    def served(self, b, path=None):
        by_path = b.stats()['by_path']
        if path is not None:
            return by_path.get(path, 0)
        return sum(n for p, n in by_path.items() if p != '/health')

    def check_429(self, r, limit, window):
        self.assertStatus(r, 429)
        self.assertEqual(r.header('Content-Type'), 'application/json')
        j = r.json()
        self.assertEqual(j.get('error'), 'rate_limited', j)
        self.assertIsInstance(j.get('message'), str)
        ra = r.header('Retry-After')
        self.assertIsNotNone(ra, 'no Retry-After on a 429')
        self.assertTrue(ra.isdigit() and int(ra) >= 1, 'Retry-After: %r' % ra)
        for field in ('retry_after', 'limit', 'window'):
            self.assertIsInstance(j.get(field), int, '%s in %r' % (field, j))
        self.assertIn('tier', j)
        self.assertEqual(j['retry_after'], int(ra), 'retry_after field and header differ')
        self.assertEqual(j['limit'], limit)
        self.assertEqual(j['window'], window)
        return int(ra)


# ---------------------------------------------------------------- per-IP limiter

class IpLimitTest(OpsCase):
    def test_sixth_request_is_429(self):
        self.start_pool(extra='ip_limit 5/60s')
        for i in range(5):
            self.assertStatus(self.get('/l/%d' % i), 200)
        r = self.get('/l/5')
        ra = self.check_429(r, 5, 60)
        # 5/60s refills one request every 12 s: that is when the next one would pass
        self.assertTrue(10 <= ra <= 13, 'Retry-After %d for 5/60s after a burst' % ra)
        self.assertEqual(sum(self.served(b, '/l/5') for b in self.backends), 0,
                         'a rejected request reached a backend')
        # still rejected: rejections do not refill anything
        self.check_429(self.get('/l/6'), 5, 60)

    def test_other_client_ip_is_unaffected(self):
        self.start_pool(extra='ip_limit 5/60s\ntrusted_proxy 127.0.0.0/8')
        a, b = '192.0.2.10', '198.51.100.20'
        for i in range(5):
            self.assertStatus(self.get('/a', xff(a)), 200)
        self.check_429(self.get('/a', xff(a)), 5, 60)
        # the same client behind a longer chain of our proxies is still the same client
        self.check_429(self.get('/a', xff('%s, 127.0.0.5' % a)), 5, 60)
        for i in range(5):
            self.assertStatus(self.get('/b', xff(b)), 200)
        self.check_429(self.get('/b', xff(b)), 5, 60)
        # the proxy itself (no X-Forwarded-For) is its own client
        self.assertStatus(self.get('/p'), 200)

    def test_xff_from_an_untrusted_peer_does_not_escape_the_limit(self):
        self.start_pool(extra='ip_limit 5/60s')
        for i in range(5):
            self.assertStatus(self.get('/s', xff('203.0.113.%d' % (i + 1))), 200)
        self.check_429(self.get('/s', xff('203.0.113.99')), 5, 60)

    def test_exempt_prefix(self):
        self.start_pool(extra='ip_limit 5/60s\nip_limit_exempt 127.0.0.0/8')
        for i in range(20):
            self.assertStatus(self.get('/e/%d' % i), 200)

    def test_exempt_applies_to_the_forwarded_client(self):
        self.start_pool(extra='ip_limit 5/60s\ntrusted_proxy 127.0.0.0/8\n'
                              'ip_limit_exempt 203.0.113.0/24')
        for i in range(12):
            self.assertStatus(self.get('/x', xff('203.0.113.7')), 200)
        for i in range(5):
            self.assertStatus(self.get('/y', xff('192.0.2.7')), 200)
        self.check_429(self.get('/y', xff('192.0.2.7')), 5, 60)

    def test_2_per_second_refills_evenly(self):
        # GCRA / sliding window: a burst of 2, then one request every 500 ms; never the
        # 2N a fixed window lets through around its boundary. One request every 120 ms:
        # fine enough to see the refill, and under 10 rejections a second, so that the
        # progressive ban (default threshold=10 per window) stays out of it.
        self.start_pool(extra='ip_limit 2/1s\ntrusted_proxy 127.0.0.0/8')
        h = xff('198.51.100.42')
        passed = []
        rejected = 0
        t0 = time.monotonic()
        with self.client() as cl:
            while time.monotonic() - t0 < 2.6:
                t = time.monotonic() - t0
                r = cl.get('/r', h)
                if r.status == 200:
                    passed.append(t)
                else:
                    rejected += 1
                    if rejected == 1:
                        self.assertEqual(len(passed), 2, 'burst of 2, then a 429')
                        self.check_429(r, 2, 1)
                    else:
                        self.assertStatus(r, 429)
                        self.assertEqual(r.json().get('error'), 'rate_limited')
                time.sleep(0.12)
        self.assertGreater(rejected, 8)
        third = passed[2] if len(passed) > 2 else None
        self.assertIsNotNone(third, 'nothing passed after the burst in 2.6 s: %r' % passed)
        self.assertTrue(0.4 <= third <= 1.0, 'the next request passed %.2fs after the '
                        'burst, expected ~0.5s: %r' % (third, passed))
        for i, t in enumerate(passed):
            window = [u for u in passed if t <= u < t + 0.45]
            self.assertLessEqual(len(window), 2, 'more than 2 requests passed within '
                                 '0.45 s: %r' % passed)
        # 2 + one per 500 ms over 2.6 s
        self.assertTrue(6 <= len(passed) <= 8, 'passes at %r' % passed)

    def _straddle(self, clock, ip):
        """2 requests just before a whole second of `clock`, 2 just after."""
        h = xff(ip)
        now = clock()
        boundary = int(now) + 1
        if boundary - now < 0.2:
            boundary += 1
        time.sleep(max(0.0, boundary - 0.08 - clock()))
        statuses = []
        with self.client() as cl:
            statuses += [cl.get('/w', h).status for _ in range(2)]
            time.sleep(max(0.0, boundary + 0.03 - clock()))
            statuses += [cl.get('/w', h).status for _ in range(2)]
        return statuses

    def test_no_double_burst_at_a_window_boundary(self):
        self.start_pool(extra='ip_limit 2/1s\ntrusted_proxy 127.0.0.0/8')
        for clock, ip in ((time.monotonic, '192.0.2.61'), (time.time, '192.0.2.62')):
            statuses = self._straddle(clock, ip)
            self.assertEqual(statuses[:2], [200, 200])
            self.assertEqual(statuses[2:], [429, 429],
                             '2/1s let 4 requests through within ~110 ms around a second '
                             'boundary (%s): %r' % (clock.__name__, statuses))

    def test_ipv6_clients_are_limited_separately(self):
        self.start_pool(extra='ip_limit 3/60s\ntrusted_proxy 127.0.0.0/8')
        a, b = '2001:db8::1', '2001:db8:0:1::1'
        for i in range(3):
            self.assertStatus(self.get('/v6', xff(a)), 200)
        self.check_429(self.get('/v6', xff(a)), 3, 60)
        self.check_429(self.get('/v6', xff('2001:DB8:0::1')), 3, 60)  # same address
        self.assertStatus(self.get('/v6', xff(b)), 200)

    def test_garbage_forwarded_for_falls_back_to_the_peer(self):
        # A right-most hop that is not an address cannot be believed, nor can anything
        # left of it: the client is the peer (nginx's realip does the same), so nobody
        # escapes the limit by appending junk after a forged address.
        self.start_pool(extra='ip_limit 3/60s\ntrusted_proxy 127.0.0.0/8')
        for i in range(3):
            self.assertStatus(self.get('/g', xff('203.0.113.%d, not-an-ip' % (i + 1))), 200)
        self.check_429(self.get('/g'), 3, 60)  # the peer, 127.0.0.1, used them up
        self.assertStatus(self.get('/g', xff('203.0.113.1')), 200)

    def test_stats_count_limiter_decisions(self):
        self.start_pool(extra='ip_limit 5/60s\ntrusted_proxy 127.0.0.0/8\n'
                              'ip_limit_exempt 127.0.0.0/8')
        before = self.stats()['rate_limit']
        statuses = collections.Counter(self.get('/d', xff('192.0.2.99')).status
                                       for _ in range(8))
        self.assertEqual(statuses, {200: 5, 429: 3})
        after = self.stats()['rate_limit']
        self.assertEqual(after['allowed'] - before['allowed'], 5, (before, after))
        self.assertEqual(after['rejected'] - before['rejected'], 3, (before, after))


# ---------------------------------------------------------------- reload

class ReloadTest(OpsCase):
    def wait_backends(self, ids, timeout=5):
        gwtest.wait_until(lambda: [b['id'] for b in self.stats()['backends']] == ids,
                          timeout=timeout, message='/stats to list backends %r' % ids)

    def test_sighup_new_backends_under_load(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        b3 = self.start_backend('b3')
        b4 = self.start_backend('b4')
        pid, port = gw.pid, gw.port
        loads = []
        threads = []
        for keepalive in (True, False):
            holder = []
            loads.append(holder)
            t = threading.Thread(target=lambda h=holder, k=keepalive: h.append(
                self.load('/rl', threads=2, requests=100000, duration=3.5, keepalive=k)),
                daemon=True)
            t.start()
            threads.append(t)
        time.sleep(1.0)
        text = re.sub(r'^backend .*\n', '', gw.config_text, flags=re.M)
        text += 'backend b3 127.0.0.1:%d\nbackend b4 127.0.0.1:%d\n' % (b3.port, b4.port)
        gw.reload(text)
        self.wait_backends(['b3', 'b4'])
        for t in threads:
            t.join(15)
        for holder in loads:
            res = holder[0]
            bad = {s: n for s, n in res.statuses.items() if s != 200}
            bad.update({e: n for e, n in res.errors.items() if e != 'deadline'})
            self.assertEqual(bad, {}, 'requests failed across the reload: %r' % res)
        self.assertEqual(gw.pid, pid)
        self.assertTrue(gw.proc.alive())
        self.assertGreater(self.served(b3), 0, 'b3 got nothing after the reload')
        self.assertGreater(self.served(b4), 0, 'b4 got nothing after the reload')
        # the old backends are out of rotation
        old = [self.served(b) for b in self.backends[:2]]
        seq = [self.get('/after').header('X-Backend') for _ in range(20)]
        self.assertTrue(set(seq) <= {'b3', 'b4'}, seq)
        self.assertEqual([self.served(b) for b in self.backends[:2]], old)
        self.assertEqual(gw.port, port)

    def test_same_port_keeps_answering_during_reloads(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        stop = threading.Event()
        errors = []
        count = [0]

        def hammer():
            while not stop.is_set():
                try:
                    r = self.get('/h', timeout=5)
                    if r.status != 200:
                        errors.append(r.status)
                    count[0] += 1
                except Exception as e:
                    errors.append(repr(e))

        ts = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
        for t in ts:
            t.start()
        for i in range(5):
            time.sleep(0.3)
            gw.reload()  # same file: a full reload all the same
        time.sleep(0.3)
        stop.set()
        for t in ts:
            t.join(10)
        self.assertEqual(errors, [], 'errors across 5 reloads')
        self.assertGreater(count[0], 50)
        self.assertTrue(gw.proc.alive())
        self.assertGreaterEqual(len(re.findall(r'(?i)reloaded', gw.proc.log())), 5,
                                'five reloads should be logged:\n' + gw.proc.log_tail())

    def test_invalid_file_is_refused_and_old_config_serves(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        good = gw.config_text
        bad = good + 'bogus_directive 1\n'
        bad_line = bad.count('\n')
        gw.reload(bad)
        name = os.path.basename(gw.config_path)
        m = gw.proc.wait_log(re.escape(name) + r':(\d+):', timeout=5)
        self.assertEqual(int(m.group(1)), bad_line)
        log = gw.proc.log()
        self.assertRegex(log, r'(?i)(refus|reject|keep|invalid|not reloaded)')
        self.assertTrue(gw.proc.alive(), 'an invalid reload killed the gateway')
        seq = [self.get('/still').header('X-Backend') for _ in range(6)]
        self.assertEqual(set(seq), {'b1', 'b2'})
        self.assertEqual([b['id'] for b in self.stats()['backends']], ['b1', 'b2'])
        # a bad value is refused the same way
        gw.reload(good.replace('strategy round_robin', 'strategy fastest'))
        gw.proc.wait_log(re.escape(name) + r':\d+:.*(?i:strategy)', timeout=5)
        self.assertEqual(self.stats()['strategy'], 'round_robin')
        # a good file after a bad one is taken
        b3 = self.start_backend('b3')
        gw.reload(good + 'backend b3 127.0.0.1:%d\n' % b3.port)
        self.wait_backends(['b1', 'b2', 'b3'])

    def test_reload_applies_strategy_and_weights(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        text = gw.config_text.replace('strategy round_robin', 'strategy weighted')
        text = re.sub(r'^(backend b1 \S+)$', r'\1 weight=3', text, flags=re.M)
        gw.reload(text)
        gwtest.wait_until(lambda: self.stats()['strategy'] == 'weighted', timeout=5,
                          message='strategy weighted after the reload')
        self.assertEqual({b['id']: b['weight'] for b in self.stats()['backends']},
                         {'b1': 3, 'b2': 1})
        with self.client() as cl:
            seq = [cl.get('/w').header('X-Backend') for _ in range(40)]
        self.assertEqual(collections.Counter(seq), {'b1': 30, 'b2': 10})

    def test_reload_removing_a_backend_keeps_its_in_flight_requests(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        results = []

        def slow(i):
            try:
                results.append(self.get('/slow?ms=1200&i=%d' % i, timeout=10))
            except Exception as e:
                results.append(e)

        ts = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(4)]
        for t in ts:
            t.start()
        gwtest.wait_until(lambda: sum(self.served(b, '/slow') for b in self.backends) >= 4,
                          timeout=5, message='4 slow requests at the backends')
        self.assertGreater(self.served(self.backends[0], '/slow'), 0)
        gw.reload(re.sub(r'^backend b1 .*\n', '', gw.config_text, flags=re.M))
        self.wait_backends(['b2'])
        for t in ts:
            t.join(10)
        self.assertEqual(len(results), 4)
        for r in results:
            self.assertIsInstance(r, gwtest.Response, 'in-flight request failed: %r' % r)
            self.assertStatus(r, 200)
        self.assertEqual({r.header('X-Backend') for r in results}, {'b1', 'b2'})

    def test_reload_applies_ip_limit(self):
        gw = self.start_pool(n=1, extra='ip_limit 1000/60s')
        for i in range(5):
            self.assertStatus(self.get('/a'), 200)
        gw.reload(gw.config_text.replace('ip_limit 1000/60s', 'ip_limit 3/60s'))
        gwtest.wait_until(lambda: self.get('/b').status == 429, timeout=5,
                          message='the lowered ip_limit to apply')


# ---------------------------------------------------------------- graceful shutdown

class ShutdownTest(OpsCase):
    def start_slow(self, n, ms, path='/slow?ms=%d'):
        """n requests of `ms` ms, each on its own connection, in threads."""
        results = [None] * n

        def one(i):
            try:
                r = self.get(path % ms + '&i=%d' % i, timeout=15)
                results[i] = r
            except Exception as e:
                results[i] = e

        ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in ts:
            t.start()
        return ts, results

    def wait_in_flight(self, n):
        gwtest.wait_until(lambda: sum(self.served(b, '/slow') for b in self.backends) >= n,
                          timeout=5, message='%d requests at the backends' % n)

    def test_sigterm_drains_in_flight_and_refuses_new(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        ts, results = self.start_slow(4, 1500)
        self.wait_in_flight(4)
        t_term = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # new connections after the signal are refused (the listeners are closed)
        refused = 0
        for _ in range(3):
            try:
                with RawConn(gw.port, timeout=2) as c:
                    c.send(build_request('GET', '/new', host='x'))
                    data = c.recv_some()
                self.assertEqual(data, b'', 'a new connection was served after SIGTERM: '
                                 '%r' % data[:200])
            except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                refused += 1
        self.assertEqual(refused, 3, 'new connections should be refused once draining')
        self.assertTrue(gw.proc.alive(), 'exited with requests in flight')
        for t in ts:
            t.join(10)
        for r in results:
            self.assertIsInstance(r, gwtest.Response, 'in-flight request failed: %r' % r)
            self.assertStatus(r, 200)
            self.assertIn(r.json()['backend'], ('b1', 'b2'))
        rc = gw.proc.wait(timeout=5)
        took = time.monotonic() - t_term
        self.assertEqual(rc, 0)
        self.assertLess(took, 1.5 + 3.0, 'exit took %.2fs after SIGTERM' % took)

    def test_sigterm_serves_queued_requests_too(self):
        # Requests waiting in the queue have been accepted: draining finishes them.
        self.start_backend('b1')
        gw = self.start_gateway('''
            workers 1
            %s
            backend b1 127.0.0.1:{b1} max_conns=1
            queue max=4 timeout=5s
            health_check path=/_mock/stats interval=10s
        ''' % NO_IP_LIMIT)
        ts, results = self.start_slow(3, 500)
        gwtest.wait_until(lambda: self.get('/stats').json()['queue']['depth'] == 2,
                          timeout=3, interval=0.02, message='two requests queued')
        t_term = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        for t in ts:
            t.join(10)
        for r in results:
            self.assertIsInstance(r, gwtest.Response, 'queued request failed: %r' % r)
            self.assertStatus(r, 200)
        self.assertEqual(gw.proc.wait(timeout=5), 0)
        self.assertLess(time.monotonic() - t_term, 1.5 + 3.0)

    def test_in_flight_responses_close_the_connection(self):
        # While draining, a keep-alive client is told that the connection ends with this
        # response (nginx, HAProxy and Envoy all send Connection: close when draining).
        gw = self.start_pool(n=1, extra=NO_IP_LIMIT)
        c = self.raw()
        c.send(build_request('GET', '/slow?ms=1000', host='x'))
        self.wait_in_flight(1)
        gw.proc.send_signal(signal.SIGTERM)
        r = c.read_response()
        self.assertStatus(r, 200)
        self.assertFalse(r.keep_alive, 'response while draining lacks Connection: close: %r'
                         % r.headers)
        self.assertEqual(gw.proc.wait(timeout=5), 0)

    def test_idle_keepalive_connections_do_not_delay_exit(self):
        gw = self.start_pool(n=1, extra=NO_IP_LIMIT)
        conns = [self.raw() for _ in range(3)]
        for c in conns:
            self.assertStatus(c.request('GET', '/idle'), 200)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        for c in conns:
            self.assertTrue(c.closed_by_peer(timeout=2), 'idle connection left open')
        self.assertEqual(gw.proc.wait(timeout=3), 0)
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_sigterm_when_idle_exits_0_at_once(self):
        gw = self.start_pool(n=1, extra=NO_IP_LIMIT)
        self.assertStatus(self.get('/x'), 200)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        self.assertEqual(gw.proc.wait(timeout=3), 0)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertFalse(gwtest.port_open(gw.port))


# ---------------------------------------------------------------- -t and -d

class CommandLineTest(OpsCase):
    def run_gatewayd(self, *args, env=None):
        self._gw_state()
        cp = subprocess.run([gwtest.GATEWAYD] + list(args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmp,
                            env=self.gateway_env(env), timeout=15)
        return cp.returncode, cp.stderr.decode('utf-8', 'replace')

    def test_t_on_the_embedded_default(self):
        rc, err = self.run_gatewayd('-t')
        self.assertEqual(rc, 0, err)

    def test_t_reports_file_and_line(self):
        rc, err, path = self.check_config('''
            listen 127.0.0.1:1
            backend b1 127.0.0.1:2
            workers many
        ''')
        self.assertEqual(rc, 1)
        self.assertRegex(err, re.escape(os.path.basename(path)) + r':3: ')

    def test_d_overrides_in_check_mode(self):
        rc, err = self.run_gatewayd('-t', '-d', 'workers=banana')
        self.assertEqual(rc, 1)
        self.assertIn('workers=banana', err)
        # an override replaces the file's bad line
        path, _ = self.write_config('listen 127.0.0.1:1\nbackend b1 127.0.0.1:2\n'
                                    'workers banana\n', auto=False)
        rc, err = self.run_gatewayd('-t', '-c', path)
        self.assertEqual(rc, 1, err)
        rc, err = self.run_gatewayd('-t', '-c', path, '-d', 'workers=2')
        self.assertEqual(rc, 0, err)

    def test_d_overrides_at_run_time(self):
        # -d replaces every line of its directive: the file's backends are gone.
        b = self.start_backend('b9')
        self.start_gateway('''
            strategy round_robin
            backend b1 127.0.0.1:1
            backend b2 127.0.0.1:2
        ''', args=['-d', 'strategy=weighted', '-d', 'backend=b9 127.0.0.1:%d' % b.port,
                   '-d', 'ip_limit=1000000/1s'])
        st = self.stats()
        self.assertEqual(st['strategy'], 'weighted')
        self.assertEqual([x['id'] for x in st['backends']], ['b9'])
        for i in range(3):
            r = self.get('/over')
            self.assertStatus(r, 200)
            self.assertEqual(r.header('X-Backend'), 'b9')

    def test_d_listen_overrides_the_file(self):
        self.start_backend('b1')
        port = gwtest.free_port()
        unused = gwtest.free_port()
        self.start_gateway('''
            listen 127.0.0.1:%d
            backend b1 127.0.0.1:{b1}
        ''' % unused, args=['-d', 'listen=127.0.0.1:%d' % port], port=port)
        self.assertStatus(self.get('/x'), 200)
        self.assertFalse(gwtest.port_open(unused), 'the file\'s listen line was used too')

    def test_embedded_default_serves(self):
        # The embedded default (SPEC section 2), on a loopback port instead of 0.0.0.0:8080.
        self._gw_state()
        port = gwtest.free_port()
        proc = self.start_process('gatewayd-default', gwtest.wrap_argv([
            gwtest.GATEWAYD, '-f', '-d', 'listen=127.0.0.1:%d' % port,
            '-d', 'control=ipc://%s/gatewayd.ctl' % self.tmp,
            '-d', 'publish=ipc://%s/gatewayd.pub' % self.tmp]), env=self.gateway_env())
        gwtest.wait_port(port, proc=proc)
        self.assertEqual(gwtest.http_get(port, '/health').status, 200)
        st = gwtest.http_get(port, '/stats').json()
        self.assertEqual(st['strategy'], 'round_robin')
        got = {(b['id'], b['address'], b['weight'], b['dc']) for b in st['backends']}
        self.assertEqual(got, {('b1', '127.0.0.1:5001', 2, 'us-east'),
                               ('b2', '127.0.0.1:5002', 1, 'eu-west'),
                               ('b3', '127.0.0.1:5003', 1, 'ap-south')})
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(5), 0)


# ---------------------------------------------------------------- leaks and counters

class LeakTest(OpsCase):
    """fd counts of the gateway, minus its connections to the backends.

    Idle upstream keep-alive connections are pooled (and reaped after a while), so a
    burst of concurrent exchanges legitimately leaves more upstream sockets open; they
    are counted from the backends' side (/_mock/stats "connections", minus the stats
    request itself) and taken out of the comparison.
    """

    timeout = 120

    def own_fds(self, pid):
        upstream = sum(b.stats()['connections'] - 1 for b in self.backends)
        return gwtest.fd_count(pid) - upstream

    def settle(self, pid, floor, timeout=5):
        """The count once it stops falling (or reaches `floor`)."""
        deadline = time.monotonic() + timeout
        last = self.own_fds(pid)
        while time.monotonic() < deadline and last > floor:
            time.sleep(0.3)
            cur = self.own_fds(pid)
            if cur >= last:
                break
            last = cur
        return self.own_fds(pid)

    def test_no_fd_leak_over_2000_fresh_connections(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT)
        for _ in range(100):
            self.get('/warm')
        base_total = gwtest.fd_count(gw.pid)
        base = self.settle(gw.pid, 0)
        res = self.load('/leak', threads=4, requests=500, keepalive=False, duration=60)
        self.assertEqual(dict(res.statuses), {200: 2000}, repr(res))
        after = self.settle(gw.pid, base)
        self.assertLessEqual(after, base + 4, 'fds: %d before, %d after 2000 connections'
                             % (base, after))
        # sequential-ish clients need few upstream connections: the total stays small too
        self.assertLessEqual(gwtest.fd_count(gw.pid), base_total + 16)

    def test_no_fd_leak_on_aborted_and_failed_exchanges(self):
        gw = self.start_pool(n=2, extra=NO_IP_LIMIT + '\ntimeouts client_header=1s\n'
                                               'circuit failures=1000 open=1s')
        for _ in range(50):
            self.get('/warm')
        base = self.settle(gw.pid, 0)
        for i in range(100):
            # half a request head, then gone
            with RawConn(gw.port) as c:
                c.send(b'GET /half HTTP/1.1\r\nHost: x\r\n')
            # a request whose client leaves before the answer
            with RawConn(gw.port) as c:
                c.send(build_request('GET', '/slow?ms=300', host='x'))
            # a malformed request
            with RawConn(gw.port) as c:
                c.send(b'GARBAGE\r\n\r\n')
                c.recv_some()
            # a request the backend answers with garbage (502)
            with RawConn(gw.port) as c:
                self.assertEqual(c.request('GET', '/garbage').status, 502)
        time.sleep(1.5)  # the client_header timeout, the last slow requests
        after = self.settle(gw.pid, base, timeout=6)
        self.assertLessEqual(after, base + 4, 'fds: %d before, %d after aborted exchanges'
                             % (base, after))


class StatsCountersTest(OpsCase):
    def settled_stats(self, check, timeout=2.0):
        """/stats once check(stats) holds: counters are added as each exchange ends, which
        may be a moment after its response reached the client. (stats, /stats calls)."""
        calls = [0]

        def probe():
            calls[0] += 1
            st = self.stats()
            return st if check(st) else None
        try:
            st = gwtest.wait_until(probe, timeout=timeout, interval=0.05)
        except AssertionError:
            st = self.stats()
            calls[0] += 1
        return st, calls[0]

    def test_counters_agree_with_traffic(self):
        self.start_pool(n=3, extra=NO_IP_LIMIT)
        s1 = self.stats()
        per1 = {b['id']: b['requests'] for b in s1['backends']}
        sent = collections.Counter()
        n = 150
        for i in range(n):
            r = self.get('/count/%d' % (i % 7))
            self.assertStatus(r, 200)
            sent[r.header('X-Backend')] += 1

        def per_delta(st):
            return {b['id']: b['requests'] - per1[b['id']] for b in st['backends']}
        s2, calls = self.settled_stats(lambda st: per_delta(st) == dict(sent))
        self.assertEqual(per_delta(s2), dict(sent))
        self.assertEqual({b.id: self.served(b) for b in self.backends}, dict(sent))
        delta = s2['total_requests'] - s1['total_requests']
        # the 150, plus the /stats requests themselves if they count
        self.assertTrue(n <= delta <= n + calls, 'total_requests grew by %d for %d requests '
                        '(and %d /stats)' % (delta, n, calls))
        for b in s2['backends']:
            self.assertEqual(b['failures'], 0)
            self.assertEqual(b['active_connections'], 0)
            self.assertTrue(b['healthy'])
            self.assertEqual(b['circuit'], 'closed')
        self.assertGreaterEqual(s2['uptime_seconds'], 0)

    def test_failures_and_latency(self):
        self.start_pool(n=1, extra=NO_IP_LIMIT + '\ncircuit failures=1000 open=1s')
        b1 = self.backends[0]
        for _ in range(5):
            self.assertStatus(self.get('/slow?ms=100'), 200)
        st, _ = self.settled_stats(lambda st: st['backends'][0]['requests'] == 5)
        st = st['backends'][0]
        self.assertEqual(st['requests'], 5)
        self.assertTrue(90 <= st['avg_response_ms'] <= 400, st)
        b1.fail()
        for _ in range(4):
            self.assertStatus(self.get('/f'), 500)
        st, _ = self.settled_stats(lambda st: st['backends'][0]['requests'] == 9 and
                                   st['backends'][0]['failures'] == 4)
        st = st['backends'][0]
        self.assertEqual(st['requests'], 9)
        self.assertEqual(st['failures'], 4)

    def test_uptime_grows(self):
        self.start_pool(n=1, extra=NO_IP_LIMIT)
        u1 = self.stats()['uptime_seconds']
        time.sleep(1.2)
        u2 = self.stats()['uptime_seconds']
        self.assertGreaterEqual(u2, u1 + 1)

    def test_stats_shape(self):
        self.start_pool(n=2, extra=NO_IP_LIMIT)
        r = self.get('/stats')
        self.assertEqual(r.header('Content-Type'), 'application/json')
        st = r.json()
        for k in ('strategy', 'uptime_seconds', 'total_requests', 'backends', 'cache',
                  'queue', 'rate_limit'):
            self.assertIn(k, st)
        for b in st['backends']:
            for k in ('id', 'address', 'dc', 'healthy', 'circuit', 'weight',
                      'active_connections', 'requests', 'failures', 'avg_response_ms'):
                self.assertIn(k, b)
        for k in ('depth', 'max', 'rejected'):
            self.assertIn(k, st['queue'])
        for k in ('allowed', 'rejected', 'banned'):
            self.assertIn(k, st['rate_limit'])
        for k in ('hits', 'misses', 'hit_rate', 'entries', 'bytes'):
            self.assertIn(k, st['cache'])
