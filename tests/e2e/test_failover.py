"""End-to-end tests of health checks, retries, the circuit breaker and the queue.

SPEC section 5 (Backends), section 4 (502/503/504 errors), section 6 (/ready, /stats) and
gatewayd.conf(5) (health_check, circuit, retries, queue, timeouts).

Each backend is its own bin/mockbackend process (gwtest starts one per port), so one can
be killed with SIGKILL while the others keep answering. Where a test is about the circuit
breaker or timeouts and not about health checks, the health check path is /_mock/stats,
which a mockbackend answers 200 in every fault mode: the checks then never take the
faulty backend out, and what the test sees is the breaker's (or the retry's) doing.

Every load is bounded in threads, requests and seconds; `deadline` counts in a LoadResult
are requests a load thread did not get to send before its time was up, not failures.
"""

import collections
import threading
import time

import gwtest

NO_IP_LIMIT = 'ip_limit 1000000/1s'
FAST_HEALTH = 'health_check interval=1s timeout=500ms rise=2 fall=2'
QUIET_HEALTH = 'health_check path=/_mock/stats interval=10s timeout=2s rise=2 fall=2'


def failed(res):
    """Failures in a LoadResult: any non-200 and any error except the time bound."""
    bad = {s: n for s, n in res.statuses.items() if s != 200}
    bad.update({e: n for e, n in res.errors.items() if e != 'deadline'})
    return bad


class FailoverCase(gwtest.GatewayTestCase):
    timeout = 90

    def start_pool(self, n=3, extra='', strategy='round_robin', backend_opts='', args=()):
        for i in range(n):
            self.start_backend('b%d' % (i + 1), args=args)
        lines = ['strategy %s' % strategy, NO_IP_LIMIT]
        lines += ['backend b%d 127.0.0.1:{b%d}%s' % (i + 1, i + 1, backend_opts)
                  for i in range(n)]
        lines.append('route / auth=none')
        lines.append(extra)
        return self.start_gateway('\n'.join(lines))

    def stats(self):
        r = self.get('/stats')
        self.assertStatus(r, 200)
        return r.json()

    def backend_stats(self, bid):
        for b in self.stats()['backends']:
            if b['id'] == bid:
                return b
        raise AssertionError('no backend %s in /stats' % bid)

    def served(self, b, path=None):
        """Requests backend b served (health checks and /_mock/* excluded)."""
        by_path = b.stats()['by_path']
        if path is not None:
            return by_path.get(path, 0)
        return sum(n for p, n in by_path.items() if p != '/health')

    def wait_circuit(self, bid, state, timeout=1.0):
        """The breaker's state is updated as an exchange ends, a moment after the client
        has its response: give /stats that moment."""
        gwtest.wait_until(lambda: self.backend_stats(bid)['circuit'] == state,
                          timeout=timeout, interval=0.02,
                          message='/stats to show the circuit of %s %s' % (bid, state))
        return self.backend_stats(bid)

    def wait_health(self, bid, healthy, timeout):
        t0 = time.monotonic()
        gwtest.wait_until(lambda: self.backend_stats(bid)['healthy'] == healthy,
                          timeout=timeout, interval=0.05,
                          message='/stats to show %s healthy=%s' % (bid, healthy))
        return time.monotonic() - t0

    def check_retry_after(self, r):
        ra = r.header('Retry-After')
        self.assertIsNotNone(ra, 'no Retry-After on %d %r' % (r.status, r.body))
        self.assertTrue(ra.isdigit() and int(ra) >= 1, 'Retry-After: %r' % ra)

    def check_error(self, r, status, code):
        self.assertStatus(r, status)
        self.assertEqual(r.header('Content-Type'), 'application/json')
        j = r.json()
        self.assertEqual(j.get('error'), code, j)
        self.assertIsInstance(j.get('message'), str)
        return j

    def background_load(self, **kw):
        """Runs gwtest.load in a thread; returns (thread, holder) -- holder[0] the result."""
        holder = []
        t = threading.Thread(target=lambda: holder.append(self.load(**kw)), daemon=True)
        t.start()
        return t, holder


# ---------------------------------------------------------------- health checks

class HealthCheckTest(FailoverCase):
    def test_kill_under_load_fails_no_request(self):
        self.start_pool(extra=FAST_HEALTH)
        b2 = self.backends[1]
        # keep-alive and fresh-connection clients together, 4 threads, 3 seconds
        t1, r1 = self.background_load(path='/load', threads=2, requests=100000, duration=3)
        t2, r2 = self.background_load(path='/load', threads=2, requests=100000, duration=3,
                                      keepalive=False)
        time.sleep(0.7)
        self.assertGreater(self.served(b2), 0, 'b2 got no traffic before the kill')
        t_kill = time.monotonic()
        b2.kill()
        gwtest.wait_until(lambda: not self.backend_stats('b2')['healthy'], timeout=5,
                          interval=0.05, message='b2 marked unhealthy after SIGKILL')
        took = time.monotonic() - t_kill
        t1.join(15)
        t2.join(15)
        res = [r1[0], r2[0]]
        for r in res:
            self.assertEqual(failed(r), {}, 'client requests failed while b2 died: %r' % r)
            self.assertGreater(sum(r.statuses.values()), 100, repr(r))
        # fall=2 at interval=1s: down within ~2 intervals (+ one timeout of slack)
        self.assertLess(took, 2 * 1.0 + 0.5 + 0.5,
                        'b2 took %.2fs to be marked unhealthy' % took)
        self.assertFalse(self.backend_stats('b2')['healthy'])
        self.assertEqual(self.get('/ready').status, 200)

    def test_restarted_backend_returns_after_rise(self):
        # Killed while idle: only the health checks know (the circuit never trips).
        self.start_pool(extra=FAST_HEALTH)
        b2 = self.backends[1]
        b2.kill()
        self.wait_health('b2', False, 4)
        seq = [self.get('/x').header('X-Backend') for _ in range(30)]
        self.assertNotIn('b2', seq)
        self.restart_backend(b2)
        t0 = time.monotonic()
        self.wait_health('b2', True, 2 * 1.0 + 2.5)
        # rise=2 at interval=1s: the second passing check is at most ~2 intervals away
        self.assertLess(time.monotonic() - t0, 3.5)
        self.wait_back_in_rotation(b2, within=3.0)

    def wait_back_in_rotation(self, b, within):
        """Sends sequential requests until backend b answers one (slow start is fine)."""
        deadline = time.monotonic() + within
        n = 0
        with self.client() as cl:
            while time.monotonic() < deadline:
                r = cl.get('/back')
                self.assertStatus(r, 200)
                n += 1
                if r.header('X-Backend') == b.id:
                    return n
                time.sleep(0.01)
        st = self.backend_stats(b.id)
        self.fail('%s is healthy but got none of %d requests within %.1fs; /stats: %r'
                  % (b.id, n, within, st))

    def test_restarted_backend_returns_after_rise_when_killed_under_load(self):
        # Killed under load: requests to the dead backend fail (and are retried), so its
        # circuit breaker (default failures=5 open=30s) trips too. Once the health checks
        # see it pass `rise` times it is back in rotation, as in HAProxy (health checks
        # bring a server back) and Envoy (a passing active check un-ejects a host).
        self.start_pool(extra=FAST_HEALTH)
        b2 = self.backends[1]
        t, holder = self.background_load(path='/load', threads=4, requests=100000,
                                         duration=2)
        time.sleep(0.5)
        b2.kill()
        t.join(15)
        self.assertEqual(failed(holder[0]), {}, repr(holder[0]))
        self.wait_health('b2', False, 4)
        self.restart_backend(b2)
        self.wait_health('b2', True, 4.5)
        self.wait_back_in_rotation(b2, within=3.0)

    def test_failing_health_endpoint_takes_backend_out(self):
        # 503 from /health (the mock's fail mode) is a failed check; back after rise.
        self.start_pool(extra=FAST_HEALTH)
        b1 = self.backends[0]
        b1.fail()
        took = self.wait_health('b1', False, 4)
        self.assertLess(took, 3.0)
        b1.reset_stats()
        seq = [self.get('/x').header('X-Backend') for _ in range(30)]
        self.assertNotIn('b1', seq)
        self.assertEqual(self.served(b1), 0)
        b1.recover()
        self.wait_health('b1', True, 4.5)
        self.wait_back_in_rotation(b1, within=3.0)

    def test_hanging_health_endpoint_takes_backend_out(self):
        # No answer within timeout=500ms is a failed check.
        self.start_pool(extra=FAST_HEALTH)
        b3 = self.backends[2]
        b3.hang()
        took = self.wait_health('b3', False, 5)
        self.assertLess(took, 3.5)
        b3.recover()
        self.wait_health('b3', True, 4.5)

    def test_all_backends_down(self):
        self.start_pool(extra=FAST_HEALTH)
        self.assertStatus(self.get('/ready'), 200)
        for b in self.backends:
            b.kill()
        gwtest.wait_until(lambda: not any(b['healthy'] for b in self.stats()['backends']),
                          timeout=5, message='every backend unhealthy')
        r = self.get('/anything')
        self.check_error(r, 503, 'no_healthy_backend')
        self.check_retry_after(r)
        r = self.request('POST', '/anything', body=b'{}')
        self.check_error(r, 503, 'no_healthy_backend')
        r = self.get('/ready')
        self.assertStatus(r, 503)
        self.assertStatus(self.get('/health'), 200)  # the gateway itself is alive
        # one comes back: ready again, and it serves
        self.restart_backend(self.backends[0])
        gwtest.wait_until(lambda: self.get('/ready').status == 200, timeout=4.5,
                          message='/ready 200 after b1 came back')
        r = self.get('/x')
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Backend'), 'b1')

    def test_health_checks_use_the_configured_path(self):
        self.start_pool(n=1, extra='health_check path=/hc/ping interval=1s timeout=500ms')
        b1 = self.backends[0]
        gwtest.wait_until(lambda: self.served(b1, '/hc/ping') >= 2, timeout=4,
                          message='two health checks on /hc/ping')
        self.assertEqual(self.served(b1, '/health'), 0)


# ---------------------------------------------------------------- retries

class RetryTest(FailoverCase):
    def test_get_to_a_dead_backend_is_retried(self):
        # Before the health checks notice, a connect failure is retried elsewhere.
        self.start_pool(n=2, extra=QUIET_HEALTH)
        self.backends[0].kill()
        for i in range(6):
            r = self.get('/r/%d' % i)
            self.assertStatus(r, 200)
            self.assertEqual(r.header('X-Backend'), 'b2')

    def test_retries_0_gives_502_on_a_dead_backend(self):
        self.start_pool(n=2, extra=QUIET_HEALTH + '\nretries 0')
        self.backends[0].kill()
        statuses = collections.Counter()
        for i in range(6):
            r = self.get('/r/%d' % i)
            statuses[r.status] += 1
            if r.status != 200:
                self.check_error(r, 502, 'bad_gateway')
        self.assertGreater(statuses[502], 0, 'retries 0 and yet no 502: %r' % statuses)


    def test_single_dead_backend_is_502_not_503(self):
        # The only backend refuses connections but its health checks have not failed
        # yet: the retry has nowhere to go, and the answer is the failure that
        # happened (502 bad_gateway), not 503 no_healthy_backend.
        self.start_pool(n=1, extra=QUIET_HEALTH)
        self.backends[0].kill()
        r = self.get('/dead')
        self.check_error(r, 502, 'bad_gateway')

    def test_single_hanging_backend_is_504_not_503(self):
        self.start_pool(n=1, extra=QUIET_HEALTH + '\ntimeouts response=1s')
        self.backends[0].hang()
        r = self.get('/hung')
        self.check_error(r, 504, 'gateway_timeout')


class BrokenBackendTest(FailoverCase):
    """Backends that close or reset: the client must learn at once, not at a timeout.

    `timeouts response=5s` so that waiting for a timeout is unmistakable; the circuit
    breaker is lifted so that repeated failures do not change the answer.
    """

    EXTRA = QUIET_HEALTH + '\ntimeouts response=5s\ncircuit failures=1000 open=1s'

    def test_reset_after_a_partial_head_is_502_at_once(self):
        self.start_pool(n=1, extra=self.EXTRA)
        for i in range(10):
            t0 = time.monotonic()
            r = self.get('/reset?i=%d' % i, timeout=10)
            took = time.monotonic() - t0
            self.assertLess(took, 1.0, 'request %d: a reset backend was noticed only after '
                            '%.2fs (answer %d %r)' % (i, took, r.status, r.body[:100]))
            self.check_error(r, 502, 'bad_gateway')

    def test_truncated_body_closes_the_client_at_once(self):
        # Content-Length: 100, 10 bytes, close: the head is already out, so the client
        # connection must end (nginx and HAProxy close it) as soon as the backend does.
        self.start_pool(n=1, extra=self.EXTRA)
        for i in range(10):
            t0 = time.monotonic()
            with gwtest.RawConn(self.gateway.port, timeout=10) as c:
                c.send(gwtest.build_request('GET', '/truncated?i=%d' % i, host='x'))
                with self.assertRaises(gwtest.ProtocolError):
                    c.read_response()
            took = time.monotonic() - t0
            self.assertLess(took, 1.0, 'request %d: truncated response ended the client '
                            'connection only after %.2fs' % (i, took))

    def test_closed_before_any_byte_is_retried_for_get_only(self):
        self.start_pool(n=2, extra=self.EXTRA)
        b1, b2 = self.backends
        b1.close_new()  # b1 accepts and closes every new connection
        for i in range(6):
            r = self.get('/cl/%d' % i)
            self.assertStatus(r, 200)
            self.assertEqual(r.header('X-Backend'), 'b2')
        statuses = collections.Counter()
        for i in range(4):
            r = self.request('POST', '/clp/%d' % i, body=b'{}')
            statuses[r.status] += 1
            if r.status != 200:
                self.check_error(r, 502, 'bad_gateway')
        self.assertGreater(statuses[502], 0, 'no POST reached b1: %r' % statuses)


class HangTest(FailoverCase):
    """b1 accepts and reads requests but never answers; `timeouts response=1s`."""

    def setup_hang(self, extra=''):
        self.start_pool(n=2, extra=QUIET_HEALTH + '\ntimeouts response=1s\n' + extra)
        self.backends[0].hang()
        return self.backends

    def test_idempotent_get_is_retried_on_another_backend(self):
        b1, b2 = self.setup_hang()
        hit = None
        for i in range(4):
            path = '/g/%d' % i
            t0 = time.monotonic()
            r = self.get(path)
            took = time.monotonic() - t0
            self.assertStatus(r, 200)
            self.assertEqual(r.header('X-Backend'), 'b2')
            if self.served(b1, path):
                hit = (path, took)
                break
        self.assertIsNotNone(hit, 'no GET reached the hanging backend')
        path, took = hit
        self.assertEqual(self.served(b2, path), 1, 'the timed-out GET was not retried on b2')
        # the retry follows the 1 s response timeout (checked on a ~100 ms tick)
        self.assertTrue(0.9 <= took <= 1.6, 'retried after %.2fs, response timeout is 1s'
                        % took)

    def test_post_is_not_retried(self):
        b1, b2 = self.setup_hang()
        got = None
        for i in range(4):
            path = '/p/%d' % i
            t0 = time.monotonic()
            r = self.request('POST', path, body=b'{"n":%d}' % i,
                             headers={'Content-Type': 'application/json'})
            took = time.monotonic() - t0
            if r.status != 200:
                got = (path, r, took)
                break
        self.assertIsNotNone(got, 'no POST reached the hanging backend')
        path, r, took = got
        self.check_error(r, 504, 'gateway_timeout')
        self.assertTrue(0.9 <= took <= 1.6, '504 after %.2fs, response timeout is 1s' % took)
        self.assertEqual(self.served(b1, path), 1)
        self.assertEqual(self.served(b2, path), 0, 'a POST was sent to a second backend')

    def test_retries_0_means_no_retry(self):
        b1, b2 = self.setup_hang('retries 0')
        got = None
        for i in range(4):
            path = '/g0/%d' % i
            r = self.get(path)
            if r.status != 200:
                got = (path, r)
                break
        self.assertIsNotNone(got, 'no GET reached the hanging backend')
        path, r = got
        self.check_error(r, 504, 'gateway_timeout')
        self.assertEqual(self.served(b2, path), 0, 'retried although retries is 0')

    def test_response_timeout_is_not_the_connect_timeout(self):
        # `response` bounds the wait for the response head once the request is sent; the
        # (shorter) connect timeout only bounds opening the connection. A backend that
        # answers in 800 ms is fine with response=3s even though connect=300ms.
        self.start_pool(n=1, extra=QUIET_HEALTH + '\ntimeouts connect=300ms response=3s')
        for i in range(3):
            t0 = time.monotonic()
            r = self.get('/slow?ms=800&i=%d' % i)
            took = time.monotonic() - t0
            self.assertStatus(r, 200)
            self.assertGreater(took, 0.75)

    def test_retry_on_a_hang_keeps_the_client_connection(self):
        b1, b2 = self.setup_hang()
        with self.client() as cl:
            for i in range(3):
                r = cl.get('/ka/%d' % i)
                self.assertStatus(r, 200)
            self.assertEqual(cl.connections, 1)


# ---------------------------------------------------------------- circuit breaker

class CircuitTest(FailoverCase):
    """`circuit failures=3 open=2s`; b1 answers 500 (/_mock/fail) until recovered."""

    def setup_circuit(self):
        self.start_pool(n=3, extra=QUIET_HEALTH + '\ncircuit failures=3 open=2s')
        b1 = self.backends[0]
        b1.fail()
        return b1

    def open_circuit(self, b1):
        """Sequential requests until b1 has failed 3 times; returns the time it opened."""
        fails = 0
        sent = 0
        while fails < 3:
            r = self.get('/c/%d' % sent)
            sent += 1
            self.assertLess(sent, 40, 'b1 failed only %d times in %d requests' % (fails, sent))
            if r.header('X-Backend') == 'b1':
                # the backend's 5xx is passed through as is, not retried, not rewritten
                self.assertEqual(r.status, 500, r)
                self.assertEqual(r.json().get('error'), 'mock_failure', r.body)
                fails += 1
            else:
                self.assertStatus(r, 200)
        t_open = time.monotonic()
        self.wait_circuit('b1', 'open')
        total = sum(self.served(b) for b in self.backends)
        self.assertEqual(total, sent, 'requests were retried: %d sent, %d served' % (
            sent, total))
        self.assertEqual(self.served(b1), 3)
        return t_open

    def test_5xx_passed_through_then_circuit_opens(self):
        b1 = self.setup_circuit()
        self.open_circuit(b1)
        st = self.wait_circuit('b1', 'open')
        self.assertGreaterEqual(st['failures'], 3, st)
        self.assertTrue(st['healthy'], 'the health checks were meant to stay out of this')
        # while open (2s), traffic goes to the others only
        seq = [self.get('/o/%d' % i) for i in range(20)]
        for r in seq:
            self.assertStatus(r, 200)
            self.assertIn(r.header('X-Backend'), ('b2', 'b3'))
        self.assertEqual(self.served(b1), 3)

    def test_half_open_sends_one_probe_then_closes_on_recovery(self):
        b1 = self.setup_circuit()
        t_open = self.open_circuit(b1)
        time.sleep(max(0.0, t_open + 2.2 - time.monotonic()))
        # still failing: under concurrent load exactly one request probes b1
        res = self.load('/probe', threads=6, requests=10, duration=5)
        self.assertEqual(self.served(b1, '/probe'), 1,
                         'half-open must let exactly one probe through')
        self.assertEqual(res.statuses[500], 1, repr(res))
        self.assertEqual(res.statuses[200], 59, repr(res))
        t_reopen = time.monotonic()
        self.wait_circuit('b1', 'open')
        # a failed probe opens it for a full period again
        for i in range(10):
            self.assertIn(self.get('/again/%d' % i).header('X-Backend'), ('b2', 'b3'))
        self.assertEqual(self.served(b1), 4, 'b1: 3 failures and 1 probe')
        # recovered: the next probe succeeds and closes the circuit
        b1.recover()
        time.sleep(max(0.0, t_reopen + 2.2 - time.monotonic()))
        seen = collections.Counter()
        for i in range(30):
            r = self.get('/closed/%d' % i)
            self.assertStatus(r, 200)
            seen[r.header('X-Backend')] += 1
        self.wait_circuit('b1', 'closed')
        self.assertGreaterEqual(seen['b1'], 8, 'b1 not back in rotation: %r' % seen)

    def test_state_visible_as_half_open_while_probing(self):
        # A probe in flight (a slow request) shows the circuit half_open in /stats.
        b1 = self.setup_circuit()
        t_open = self.open_circuit(b1)
        b1.recover()
        b1.delay(1500)
        time.sleep(max(0.0, t_open + 2.2 - time.monotonic()))
        t, holder = self.background_load(path='/hp', threads=3, requests=4, duration=6)
        gwtest.wait_until(lambda: self.backend_stats('b1')['circuit'] == 'half_open',
                          timeout=3, message='circuit half_open while the probe is out')
        t.join(10)
        self.assertEqual(failed(holder[0]), {}, repr(holder[0]))
        self.wait_circuit('b1', 'closed')


# ---------------------------------------------------------------- queue

class QueueTest(FailoverCase):
    """One backend with max_conns=2 answering /slow?ms=500."""

    def setup_queue(self, queue='queue max=4 timeout=3s', workers='workers 1'):
        return self.start_pool(n=1, backend_opts=' max_conns=2',
                               extra=QUIET_HEALTH + '\n' + queue + '\n' + workers)

    def burst(self, n, path='/slow?ms=500', spread=0.0):
        """n requests at once (each on its own connection); [(status, json, headers, s)]."""
        out = [None] * n
        barrier = threading.Barrier(n)

        def one(i):
            try:
                barrier.wait(5)
                if spread:
                    time.sleep(spread * i)
                t0 = time.monotonic()
                r = self.get(path, timeout=10)
                body = r.json() if r.header('Content-Type') == 'application/json' else None
                out[i] = (r.status, body, r, time.monotonic() - t0)
            except Exception as e:  # reported below
                out[i] = ('error', repr(e), None, 0)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        return out

    def watch_stats(self, stop, samples):
        while not stop.is_set():
            try:
                s = self.stats()
                samples.append((s['queue']['depth'], s['backends'][0]['active_connections']))
            except Exception:
                pass
            time.sleep(0.03)

    def test_six_concurrent_all_succeed_queued(self):
        self.setup_queue()
        stop, samples = threading.Event(), []
        w = threading.Thread(target=self.watch_stats, args=(stop, samples), daemon=True)
        w.start()
        t0 = time.monotonic()
        out = self.burst(6)
        elapsed = time.monotonic() - t0
        stop.set()
        w.join(5)
        self.assertEqual([o[0] for o in out], [200] * 6, [o[:2] for o in out])
        # two at a time: three waves of 500 ms
        self.assertGreater(elapsed, 1.35, 'max_conns=2 was not enforced (%.2fs)' % elapsed)
        self.assertLess(elapsed, 3.0)
        self.assertTrue(samples, 'no /stats sample')
        self.assertEqual(max(d for d, _ in samples), 4, 'queue depth seen: %r' % samples)
        self.assertLessEqual(max(a for _, a in samples), 2, 'more than max_conns in flight')
        st = self.stats()
        self.assertEqual(st['queue']['depth'], 0)
        self.assertEqual(st['queue']['max'], 4)
        self.assertEqual(st['queue']['rejected'], 0)

    def test_beyond_the_queue_is_503_queue_full(self):
        self.setup_queue()
        out = self.burst(12)
        statuses = collections.Counter(o[0] for o in out)
        self.assertEqual(statuses, {200: 6, 503: 6}, [o[:2] for o in out])
        for status, body, r, took in out:
            if status == 503:
                self.assertEqual(body['error'], 'queue_full', body)
                self.check_retry_after(r)
                self.assertLess(took, 1.0, 'queue_full should be immediate')
        st = self.stats()
        self.assertEqual(st['queue']['rejected'], 6, st['queue'])
        self.assertEqual(st['queue']['depth'], 0)

    def test_queue_timeout(self):
        self.setup_queue('queue max=4 timeout=200ms')
        out = self.burst(6)
        statuses = collections.Counter(o[0] for o in out)
        self.assertEqual(statuses, {200: 2, 503: 4}, [o[:2] for o in out])
        for status, body, r, took in out:
            if status == 503:
                self.assertEqual(body['error'], 'queue_timeout', body)
                self.check_retry_after(r)
                self.assertTrue(0.15 <= took <= 0.6, 'queue_timeout after %.2fs' % took)
        self.assertEqual(self.stats()['queue']['depth'], 0)

    def test_queue_max_0_rejects_at_once(self):
        self.setup_queue('queue max=0 timeout=3s')
        out = self.burst(4)
        statuses = collections.Counter(o[0] for o in out)
        self.assertEqual(statuses, {200: 2, 503: 2}, [o[:2] for o in out])
        for status, body, r, took in out:
            if status == 503:
                self.assertEqual(body['error'], 'queue_full')

    def test_six_concurrent_all_succeed_with_default_workers(self):
        # `queue max=4` admits 4 waiting requests, however the kernel spreads the
        # connections over the worker threads. Several rounds: a split of the queue per
        # worker shows up as a 503 whenever one worker gets more than its slice.
        self.setup_queue(workers='')
        for rnd in range(5):
            out = self.burst(6)
            self.assertEqual([o[0] for o in out], [200] * 6,
                             'round %d: %r' % (rnd, [o[:2] for o in out]))

    def test_queued_requests_served_in_order(self):
        # FIFO: requests that arrive later are not served before earlier ones.
        self.setup_queue('queue max=8 timeout=5s')
        out = self.burst(6, path='/slow?ms=300', spread=0.05)
        self.assertEqual([o[0] for o in out], [200] * 6)
        finish = [out[i][3] + 0.05 * i for i in range(6)]
        self.assertEqual(sorted(range(6), key=lambda i: finish[i]), list(range(6)),
                         'finish times (since the first was sent): %r' % finish)
