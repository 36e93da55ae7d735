"""End-to-end tests of gatewayd's proxying semantics (SPEC sections 2-6): forwarded and
added headers, hop-by-hop headers, credentials per route, route matching, bodies and
queries, upstream keep-alive, backend failures (5xx, garbage, truncation, timeouts,
refused connections), the built-in endpoints and the configuration checker.

Everything runs against the real bin/gatewayd and bin/mockbackend on loopback ports. The
mockbackend answers every path with a JSON description of the request it received
(headers lower-cased), which is how these tests see what the gateway forwarded.
"""

import json
import os
import re
import subprocess
import time
import unittest

import gwtest
from gwtest import RawConn, build_request, chunked_body

UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
STRATEGIES = ('round_robin', 'least_connections', 'weighted', 'ip_hash', 'adaptive')


class ProxyTestCase(gwtest.GatewayTestCase):
    timeout = 60

    NBACKENDS = 1
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        timeouts connect=1s response=3s client_header=3s client_idle=5s
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def setUp(self):
        super().setUp()
        self.bs = self.start_backends(self.NBACKENDS)
        self.b1 = self.bs[0]
        self.gw = self.start_gateway(self.CONFIG)

    def assertGatewayError(self, r, status, code=None):
        self.assertEqual(r.status, status, 'expected %d, got %d %s: %r' % (
            status, r.status, r.reason, r.body[:300]))
        ctype = (r.header('Content-Type') or '').split(';')[0].strip().lower()
        self.assertEqual(ctype, 'application/json', r.headers)
        j = r.json()
        self.assertIsInstance(j, dict)
        self.assertIsInstance(j.get('error'), str, j)
        self.assertIsInstance(j.get('message'), str, j)
        if code is not None:
            self.assertEqual(j['error'], code, j)
        return j

    def seen(self, path='/', headers=None, method='GET', body=None):
        """(response, the backend's view of the request)."""
        r = self.request(method, path, headers, body)
        self.assertEqual(r.status, 200, '%s %s: %r %r' % (method, path, r, r.body[:300]))
        return r, r.json()

    def total_backend_hits(self, path):
        return sum(b.requests(path) for b in self.bs)


# ---------------------------------------------------------------- forwarded headers

class ForwardedHeadersTest(ProxyTestCase):
    def test_x_forwarded_for_appends_the_peer(self):
        _, j = self.seen('/xff')
        self.assertEqual(j['headers'].get('x-forwarded-for'), '127.0.0.1')
        _, j = self.seen('/xff', {'X-Forwarded-For': '203.0.113.7'})
        self.assertEqual(j['headers'].get('x-forwarded-for'), '203.0.113.7, 127.0.0.1')
        _, j = self.seen('/xff', [('X-Forwarded-For', '203.0.113.7, 198.51.100.1'),
                                  ('X-Forwarded-For', '192.0.2.9')])
        self.assertEqual(j['headers'].get('x-forwarded-for'),
                         '203.0.113.7, 198.51.100.1, 192.0.2.9, 127.0.0.1')

    def test_x_forwarded_proto(self):
        _, j = self.seen('/proto')
        self.assertEqual(j['headers'].get('x-forwarded-proto'), 'http')
        # a client cannot claim https on a plain listener
        _, j = self.seen('/proto', {'X-Forwarded-Proto': 'https'})
        self.assertEqual(j['headers'].get('x-forwarded-proto'), 'http')

    def test_request_id_kept_when_well_formed(self):
        for rid in ('abc-123_X.y', 'a', 'Z' * 128, '0.1.2-_'):
            with self.subTest(rid=rid):
                r, j = self.seen('/rid', {'X-Request-Id': rid})
                self.assertEqual(j['headers'].get('x-request-id'), rid)
                self.assertEqual(r.header('X-Request-Id'), rid)
                self.assertEqual(len(r.headers_all('X-Request-Id')), 1)

    def test_request_id_replaced_when_malformed(self):
        for rid in ('bad id', 'Z' * 129, 'semi;colon', 'slash/x', 'quote"', 'caf\xe9', '',
                    'a,b'):
            with self.subTest(rid=rid):
                r, j = self.seen('/rid', [('X-Request-Id', rid)])
                got = j['headers'].get('x-request-id')
                self.assertRegex(got or '', UUID_RE)
                self.assertEqual(r.header('X-Request-Id'), got)

    def test_request_id_generated_when_absent_and_unique(self):
        ids = set()
        for _ in range(20):
            r, j = self.seen('/rid')
            got = j['headers'].get('x-request-id')
            self.assertRegex(got or '', UUID_RE)
            self.assertEqual(r.header('X-Request-Id'), got)
            ids.add(got)
        self.assertEqual(len(ids), 20)

    def test_response_headers_added(self):
        r, _ = self.seen('/added')
        self.assertEqual(r.header('X-Backend'), 'b1')
        self.assertEqual(r.header('X-Datacenter'), 'us-east')
        self.assertEqual(r.header('X-Cache'), 'BYPASS')
        self.assertRegex(r.header('X-Request-Id') or '', UUID_RE)
        for name in ('X-Backend', 'X-Datacenter', 'X-Cache', 'X-Request-Id'):
            self.assertEqual(len(r.headers_all(name)), 1, name)
        # also on a passed-through backend error and on a body streamed in chunks
        r = self.get('/status/503')
        self.assertEqual((r.status, r.header('X-Backend'), r.header('X-Cache')),
                         (503, 'b1', 'BYPASS'))
        r = self.get('/chunked?n=2&size=10')
        self.assertEqual((r.header('X-Backend'), r.header('X-Datacenter')), ('b1', 'us-east'))

    def test_hop_by_hop_headers_not_forwarded(self):
        _, j = self.seen('/hop', [
            ('Connection', 'keep-alive, X-Secret, x-other-secret'),
            ('Keep-Alive', 'timeout=5'),
            ('TE', 'trailers'),
            ('Trailer', 'X-T'),
            ('Proxy-Connection', 'keep-alive'),
            ('X-Secret', '1'),
            ('X-OTHER-SECRET', '2'),
            ('X-Kept', '3'),
        ])
        h = j['headers']
        for name in ('keep-alive', 'te', 'trailer', 'proxy-connection', 'x-secret',
                     'x-other-secret'):
            self.assertNotIn(name, h, 'hop-by-hop %s forwarded' % name)
        # the gateway may speak its own Connection to the backend, never the client's
        self.assertNotIn('secret', h.get('connection', '').lower())
        self.assertEqual(h.get('x-kept'), '3')

    def test_client_identity_headers_removed(self):
        _, j = self.seen('/who', [('X-User-Id', 'admin'), ('X-User-Tier', 'enterprise'),
                                  ('x-user-id', 'root')])
        self.assertNotIn('x-user-id', j['headers'])
        self.assertNotIn('x-user-tier', j['headers'])

    def test_other_headers_forwarded_untouched(self):
        _, j = self.seen('/other', [('X-Custom', 'Va"l ue'), ('X-Multi', 'one'),
                                    ('X-Multi', 'two'), ('User-Agent', 'gwtest/1'),
                                    ('Accept', '*/*'), ('Cookie', 'a=b; c=d')])
        h = j['headers']
        self.assertEqual(h.get('x-custom'), 'Va"l ue')
        self.assertEqual(h.get('x-multi'), 'one, two')
        self.assertEqual(h.get('user-agent'), 'gwtest/1')
        self.assertEqual(h.get('cookie'), 'a=b; c=d')
        _, j = self.seen('/host', [('Host', 'example.org:8080')])
        self.assertEqual(j['headers'].get('host'), 'example.org:8080')
        self.assertEqual(j['method'], 'GET')


class CredentialsTest(ProxyTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        ip_limit_exempt 127.0.0.0/8
        route /off auth=off
        route /fwd auth=none forward_auth=on
        route / auth=none
    '''
    CREDS = [('Authorization', 'Bearer not-a-real-token'), ('X-API-Key', 'gw_testkey123')]

    def test_auth_none_does_not_forward_credentials(self):
        r = self.request('GET', '/none', self.CREDS)
        if r.status == 401:
            # once identities are checked, an invalid credential is refused (SPEC 3):
            # the backend must not have seen the request at all
            self.assertGatewayError(r, 401)
            self.assertEqual(self.b1.requests('/none'), 0)
            return
        self.assertEqual(r.status, 200, r.body[:300])
        h = r.json()['headers']
        self.assertNotIn('authorization', h)
        self.assertNotIn('x-api-key', h)

    def test_auth_off_forwards_credentials_untouched(self):
        _, j = self.seen('/off/x', self.CREDS)
        self.assertEqual(j['headers'].get('authorization'), 'Bearer not-a-real-token')
        self.assertEqual(j['headers'].get('x-api-key'), 'gw_testkey123')
        # query credentials are part of the query: untouched on a pass-through route
        _, j = self.seen('/off/q?api_key=abc&x=1')
        self.assertEqual(j['query'], 'api_key=abc&x=1')

    def test_forward_auth_on_forwards_credentials(self):
        # credentials are verified on forward_auth routes too: use a real token and key
        body = json.dumps({'email': 'fwd@example.com', 'password': 'long enough pw'})
        r = self.request('POST', '/auth/register', {'Content-Type': 'application/json'},
                         body=body.encode())
        self.assertEqual(r.status, 201, r.body)
        tok = r.json()['access_token']
        r = self.request('GET', '/fwd/x', {'Authorization': 'Bearer ' + tok})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('authorization'), 'Bearer ' + tok)
        r = self.request('POST', '/auth/api-keys', {'Authorization': 'Bearer ' + tok})
        self.assertEqual(r.status, 201, r.body)
        key = r.json()['api_key']
        r = self.request('GET', '/fwd/y', {'X-API-Key': key})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('x-api-key'), key)

    def test_proxy_authorization_never_forwarded(self):
        _, j = self.seen('/off/pa', [('Proxy-Authorization', 'Basic Zm9vOmJhcg==')])
        self.assertNotIn('proxy-authorization', j['headers'])


# ---------------------------------------------------------------- routes, bodies, targets

class RoutingTest(ProxyTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        ip_limit_exempt 127.0.0.0/8
        route /api/ auth=off
        route /api/v2/ auth=none
        route /static auth=off
    '''
    KEY = [('X-API-Key', 'gw_routekey')]

    def forwarded_key(self, path):
        """True if the route let the key through (auth=off), False if it did not."""
        r = self.request('GET', path, self.KEY)
        if r.status == 401:
            return False  # auth=none checking the (invalid) key: not a pass-through route
        self.assertEqual(r.status, 200, '%s: %r' % (path, r.body[:200]))
        self.assertEqual(r.json()['path'], path.split('?')[0])
        return 'x-api-key' in r.json()['headers']

    def test_longest_prefix_wins(self):
        self.assertTrue(self.forwarded_key('/api/x'))
        self.assertFalse(self.forwarded_key('/api/v2/x'))
        self.assertFalse(self.forwarded_key('/api/v2/deeper/still?q=1'))
        self.assertTrue(self.forwarded_key('/api/v2'))       # not under "/api/v2/"
        self.assertTrue(self.forwarded_key('/api/v3/x'))
        self.assertTrue(self.forwarded_key('/static/app.js'))

    def test_no_matching_route_is_404_not_found(self):
        for path in ('/', '/other', '/ap', '/api', '/API/x'):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertGatewayError(r, 404, 'not_found')
                self.assertIsNone(r.header('X-Backend'))
        paths = self.b1.stats()['by_path']
        for path in ('/', '/other', '/ap', '/api', '/API/x'):
            self.assertNotIn(path, paths)
        # HEAD of a 404 has no body and keeps the connection in sync
        c = self.raw()
        r = c.request('HEAD', '/nothing')
        self.assertEqual((r.status, r.body), (404, b''))
        self.assertEqual(c.request('GET', '/api/sync').json()['path'], '/api/sync')

    def test_builtins_answer_without_a_route(self):
        r = self.get('/health')
        self.assertEqual((r.status, r.json()), (200, {'status': 'ok'}))
        self.assertEqual(self.get('/stats').status, 200)


class BodyAndTargetTest(ProxyTestCase):
    def test_post_and_put_bodies_byte_exact(self):
        for method in ('POST', 'PUT', 'PATCH', 'DELETE'):
            with self.subTest(method=method):
                data = os.urandom(200000)
                r = self.request(method, '/echo', {'Content-Type': 'application/x-test'},
                                 data)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.body, data)
                self.assertEqual(r.header('Content-Type'), 'application/x-test')

    def test_body_with_every_byte_value(self):
        data = bytes(range(256)) * 64 + b'\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n'
        r = self.request('POST', '/echo', body=data)
        self.assertEqual(r.body, data)
        # the connection after it is in sync: the body's bytes were not parsed as requests
        self.assertEqual(self.b1.requests('/'), 0)

    def test_empty_body_and_zero_content_length(self):
        r = self.request('POST', '/empty', {'Content-Length': '0'})
        self.assertEqual(r.json()['body_length'], 0)
        self.assertEqual(r.json()['headers'].get('content-length'), '0')

    def test_query_string_forwarded(self):
        for target, path, query in (('/q/path?a=1&b=%20x&c', '/q/path', 'a=1&b=%20x&c'),
                                    ('/q?', '/q', ''),
                                    ('/q?x=%2F%3F&y=a+b&z=/?', '/q', 'x=%2F%3F&y=a+b&z=/?'),
                                    ('/enc%20oded/p%2Fq', '/enc%20oded/p%2Fq', '')):
            with self.subTest(target=target):
                _, j = self.seen(target)
                self.assertEqual(j['path'], path)
                self.assertEqual(j['query'], query)

    def test_absolute_form_rewritten_to_origin_form(self):
        c = self.raw()
        c.send(b'GET http://example.com/abs/path?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200, r.body[:300])
        j = r.json()
        self.assertEqual((j['method'], j['path'], j['query']), ('GET', '/abs/path', 'x=1'))
        c.send(b'GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.json()['path'], '/')
        c.send(b'POST https://example.com:8443/abs/post HTTP/1.1\r\nHost: example.com\r\n'
               b'Content-Length: 3\r\n\r\nabc')
        r = c.read_response('POST')
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual((r.json()['path'], r.json()['body_length']), ('/abs/post', 3))

    def test_absolute_form_reaches_builtin_endpoints(self):
        c = self.raw()
        c.send(b'GET http://example.com/health HTTP/1.1\r\nHost: example.com\r\n\r\n')
        r = c.read_response()
        self.assertEqual((r.status, r.json()), (200, {'status': 'ok'}))

    def test_method_forwarded(self):
        for method in ('GET', 'DELETE', 'OPTIONS', 'PATCH', 'PROPFIND'):
            with self.subTest(method=method):
                _, j = self.seen('/m', method=method)
                self.assertEqual(j['method'], method)

    def test_upstream_keepalive_reuse_on_one_client_connection(self):
        with self.client() as cl:
            ids = [cl.get('/reuse/%d' % i).json()['connection_id'] for i in range(5)]
        self.assertEqual(len(set(ids)), 1, 'upstream connections %s' % ids)


class UpstreamPoolTest(ProxyTestCase):
    CONFIG = '''
        workers 1
        backend b1 127.0.0.1:{b1} dc=us-east
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def test_upstream_keepalive_reuse_across_client_connections(self):
        ids = [self.get('/reuse/%d' % i).json()['connection_id'] for i in range(5)]
        self.assertEqual(len(set(ids)), 1, 'upstream connections %s' % ids)
        conns = self.b1.stats()['connections_total']
        for i in range(20):
            self.get('/more/%d' % i)
        # health checks open their own connections; the proxied requests do not
        self.assertLessEqual(self.b1.stats()['connections_total'] - conns, 3)

    def test_upstream_closed_while_idle_is_replaced_transparently(self):
        self.assertEqual(self.get('/one').status, 200)
        self.restart_backend(self.b1)   # the pooled connection is now closed
        r = self.get('/two')
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.json()['path'], '/two')

    def test_post_after_backend_restart_is_not_lost(self):
        self.get('/warm')
        self.restart_backend(self.b1)
        r = self.request('POST', '/echo', body=b'payload')
        self.assertEqual((r.status, r.body), (200, b'payload'))


# ---------------------------------------------------------------- backend failures

class BackendFailureTest(ProxyTestCase):
    NBACKENDS = 2
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        backend b2 127.0.0.1:{b2} dc=eu-west
        timeouts connect=3s response=1s client_header=3s client_idle=5s
        circuit failures=1000 open=1s
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def test_backend_5xx_passed_through_not_retried(self):
        for code in (500, 502, 503, 504):
            with self.subTest(code=code):
                r = self.get('/status/%d' % code)
                self.assertEqual(r.status, code)
                self.assertEqual(r.json(), {'status': code})
                self.assertIn(r.header('X-Backend'), ('b1', 'b2'))
                self.assertEqual(self.total_backend_hits('/status/%d' % code), 1,
                                 'a %d answer was retried' % code)

    def test_backend_garbage_is_502(self):
        r = self.get('/garbage')
        self.assertGatewayError(r, 502, 'bad_gateway')
        self.assertIn(self.total_backend_hits('/garbage'), (1, 2))
        self.assertEqual(self.get('/fine').status, 200)

    def test_backend_truncated_response_closes_client(self):
        # several rounds: the backend's last bytes and its FIN arrive together only some
        # of the time; the client must see the close at once either way (response=1s)
        for i in range(6):
            c = self.raw(timeout=5)
            t0 = time.monotonic()
            c.send(build_request('GET', '/truncated', host='x'))
            with self.assertRaises((gwtest.ProtocolError, ConnectionResetError)):
                c.read_response()
            elapsed = time.monotonic() - t0
            self.assertTrue(c.eof or c.closed_by_peer(2))
            self.assertLess(elapsed, 0.9, 'round %d: the truncation was noticed only after '
                            '%.1fs, by the response timer' % (i, elapsed))
        self.assertEqual(self.get('/fine').status, 200)

    def test_backend_reset_mid_head_is_502(self):
        # half a response head, then RST: a broken response, answered at once
        t0 = time.monotonic()
        r = self.get('/reset')
        self.assertGatewayError(r, 502, 'bad_gateway')
        self.assertLess(time.monotonic() - t0, 0.9, 'the reset was noticed only by a timer')

    def test_backend_reset_before_any_byte_is_502(self):
        t0 = time.monotonic()
        r = self.request('POST', '/reset?head=0', body=b'x')
        self.assertGatewayError(r, 502, 'bad_gateway')
        self.assertLess(time.monotonic() - t0, 0.9, 'the reset was noticed only by a timer')

    def test_slow_backend_is_504(self):
        t0 = time.monotonic()
        r = self.request('POST', '/slow?ms=2500', body=b'x')
        elapsed = time.monotonic() - t0
        self.assertGatewayError(r, 504, 'gateway_timeout')
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 2.0, '504 after %.1fs with response=1s' % elapsed)

    def test_slow_backend_on_reused_connection_is_504(self):
        with self.client() as cl:
            self.assertEqual(cl.get('/warm1').status, 200)
            self.assertEqual(cl.get('/warm2').status, 200)
            t0 = time.monotonic()
            r = cl.request('POST', '/slow?ms=2500', body=b'x')
            elapsed = time.monotonic() - t0
        self.assertGatewayError(r, 504, 'gateway_timeout')
        self.assertLess(elapsed, 2.0, '504 after %.1fs with response=1s' % elapsed)

    def test_slow_get_on_single_attempt_is_504_not_503(self):
        # GET is retried on the other backend, which is slow too: still a 504 overall
        t0 = time.monotonic()
        r = self.get('/slow?ms=2500')
        elapsed = time.monotonic() - t0
        self.assertGatewayError(r, 504, 'gateway_timeout')
        self.assertLess(elapsed, 3.0)

    def test_response_within_timeout_is_fine(self):
        r = self.get('/slow?ms=300')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['path'], '/slow')


class SingleSlowBackendTest(ProxyTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        timeouts connect=3s response=1s
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def test_slow_get_with_no_other_backend_is_504(self):
        # the only backend timed out: there is nothing to retry on, the answer is a 504
        r = self.get('/slow?ms=2500')
        self.assertGatewayError(r, 504, 'gateway_timeout')

    def test_slow_get_on_reused_connection_with_no_other_backend_is_504(self):
        with self.client() as cl:
            self.assertEqual(cl.get('/warm').status, 200)   # pools an upstream connection
            t0 = time.monotonic()
            r = cl.get('/slow?ms=2500')
            elapsed = time.monotonic() - t0
        self.assertGatewayError(r, 504, 'gateway_timeout')
        self.assertLess(elapsed, 2.0)
        self.assertEqual(self.b1.requests('/slow'), 1)


class RefusedBackendsTest(gwtest.GatewayTestCase):
    timeout = 60

    def test_connect_refused_on_all_backends(self):
        dead1, dead2 = gwtest.free_ports(2)
        self.start_gateway('''
            backend b1 127.0.0.1:%d dc=us-east
            backend b2 127.0.0.1:%d dc=eu-west
            timeouts connect=1s response=2s
            ip_limit_exempt 127.0.0.0/8
            route / auth=none
        ''' % (dead1, dead2))
        for _ in range(3):
            t0 = time.monotonic()
            r = self.get('/x')
            self.assertLess(time.monotonic() - t0, 3.0)
            self.assertIn(r.status, (502, 503), r)
            ctype = (r.header('Content-Type') or '').split(';')[0]
            self.assertEqual(ctype, 'application/json')
            j = r.json()
            if r.status == 502:
                self.assertEqual(j['error'], 'bad_gateway')
            else:
                self.assertEqual(j['error'], 'no_healthy_backend')
                self.assertTrue(r.header('Retry-After'))
            self.assertTrue(j.get('message'))

    def test_refused_backend_is_skipped_for_idempotent_requests(self):
        live = self.start_backend('b2')
        self.start_gateway('''
            strategy round_robin
            backend b1 127.0.0.1:%d dc=us-east
            backend b2 127.0.0.1:{b1} dc=eu-west
            timeouts connect=1s response=2s
            circuit failures=1000 open=1s
            retries 1
            ip_limit_exempt 127.0.0.0/8
            route / auth=none
        ''' % gwtest.free_port())
        for i in range(6):
            r = self.get('/r/%d' % i)
            self.assertEqual(r.status, 200, r.body[:200])
            self.assertEqual(r.header('X-Backend'), 'b2')
        by_path = live.stats()['by_path']
        self.assertEqual(sum(n for p, n in by_path.items() if p.startswith('/r/')), 6)


# ---------------------------------------------------------------- built-in endpoints

class BuiltinEndpointsTest(ProxyTestCase):
    NBACKENDS = 2
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east weight=2
        backend b2 127.0.0.1:{b2} dc=eu-west
        health_check path=/health interval=200ms timeout=150ms rise=1 fall=1
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def test_health(self):
        r = self.get('/health')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {'status': 'ok'})
        self.assertEqual(r.header('Content-Type').split(';')[0], 'application/json')
        self.assertIsNone(r.header('X-Backend'))

    def test_ready_follows_backend_health(self):
        self.assertEqual(self.get('/ready').status, 200)
        self.bs[0].stop()
        self.bs[1].stop()
        gwtest.wait_until(lambda: self.get('/ready').status == 503, timeout=5,
                          message='/ready 503 with every backend down')
        r = self.get('/ready')
        self.assertEqual(r.header('Content-Type').split(';')[0], 'application/json')
        self.assertTrue(r.header('Retry-After'))
        r = self.get('/proxied')
        self.assertGatewayError(r, 503, 'no_healthy_backend')
        self.assertTrue(r.header('Retry-After'))
        self.restart_backend(self.bs[1])
        gwtest.wait_until(lambda: self.get('/ready').status == 200, timeout=5,
                          message='/ready 200 after a backend came back')
        gwtest.wait_until(lambda: self.get('/again').status == 200, timeout=5,
                          message='requests served again')

    def test_stats_shape(self):
        r = self.get('/stats')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header('Content-Type').split(';')[0], 'application/json')
        s = r.json()
        for key in ('strategy', 'uptime_seconds', 'total_requests', 'backends', 'cache',
                    'queue', 'rate_limit'):
            self.assertIn(key, s)
        self.assertEqual(s['strategy'], 'round_robin')
        self.assertIsInstance(s['uptime_seconds'], (int, float))
        self.assertIsInstance(s['total_requests'], (int, float))
        self.assertEqual([b['id'] for b in s['backends']], ['b1', 'b2'])
        for b in s['backends']:
            for key in ('id', 'address', 'dc', 'healthy', 'circuit', 'weight',
                        'active_connections', 'requests', 'failures', 'avg_response_ms'):
                self.assertIn(key, b)
            self.assertIn(b['circuit'], ('closed', 'open', 'half_open'))
            self.assertIs(b['healthy'], True)
        b1, b2 = s['backends']
        self.assertEqual((b1['address'], b1['dc'], b1['weight']),
                         ('127.0.0.1:%d' % self.bs[0].port, 'us-east', 2))
        self.assertEqual((b2['dc'], b2['weight']), ('eu-west', 1))
        for key in ('hits', 'misses', 'hit_rate', 'entries', 'bytes'):
            self.assertIn(key, s['cache'])
        for key in ('depth', 'max', 'rejected'):
            self.assertIn(key, s['queue'])
        for key in ('allowed', 'rejected', 'banned'):
            self.assertIn(key, s['rate_limit'])

    def test_stats_counters_move_with_traffic(self):
        before = self.get('/stats').json()
        for i in range(10):
            self.assertEqual(self.get('/count/%d' % i).status, 200)
        self.assertEqual(self.get('/status/500').status, 500)

        def backend_requests(stats):
            return sum(b['requests'] for b in stats['backends'])
        # a worker counts a response right after its last byte went out: the client can
        # ask /stats (on another worker) a moment before that
        gwtest.wait_until(lambda: backend_requests(self.get('/stats').json()) -
                          backend_requests(before) >= 11, 2, message='11 backend requests')
        after = self.get('/stats').json()
        self.assertGreaterEqual(after['total_requests'] - before['total_requests'], 12)
        reqs = backend_requests(after) - backend_requests(before)
        self.assertEqual(reqs, 11)
        fails = sum(b['failures'] for b in after['backends']) - \
            sum(b['failures'] for b in before['backends'])
        self.assertEqual(fails, 1)
        self.assertTrue(all(b['requests'] > 0 for b in after['backends']), after['backends'])
        self.assertTrue(any(b['avg_response_ms'] > 0 for b in after['backends']))
        self.assertEqual(sum(b['active_connections'] for b in after['backends']), 0)
        self.assertGreaterEqual(after['uptime_seconds'], before['uptime_seconds'])

    def test_builtins_refuse_other_methods(self):
        r = self.request('POST', '/health', body=b'{}')
        self.assertGatewayError(r, 405)
        self.assertTrue(r.header('Allow'))
        r = self.request('HEAD', '/stats')
        self.assertEqual((r.status, r.body), (200, b''))


class ChangeStrategyTest(ProxyTestCase):
    NBACKENDS = 2
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        backend b2 127.0.0.1:{b2} dc=eu-west
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def change(self, body, token=gwtest.ADMIN_TOKEN):
        headers = [('Content-Type', 'application/json')]
        if token is not None:
            headers.append(('Authorization', 'Bearer ' + token))
        return self.request('POST', '/change_strategy', headers,
                            body if isinstance(body, bytes) else json.dumps(body).encode())

    def test_without_token_is_401(self):
        r = self.change({'strategy': 'ip_hash'}, token=None)
        self.assertGatewayError(r, 401)
        self.assertTrue(r.header('WWW-Authenticate'))
        self.assertEqual(self.get('/stats').json()['strategy'], 'round_robin')

    def test_wrong_token_is_401(self):
        for tok in ('nope', gwtest.ADMIN_TOKEN + 'x', gwtest.ADMIN_TOKEN[:-1], ''):
            with self.subTest(tok=tok):
                r = self.change({'strategy': 'ip_hash'}, token=tok)
                self.assertGatewayError(r, 401)
        r = self.request('POST', '/change_strategy',
                         [('Authorization', 'Basic ' + gwtest.ADMIN_TOKEN)],
                         b'{"strategy":"ip_hash"}')
        self.assertGatewayError(r, 401)
        self.assertEqual(self.get('/stats').json()['strategy'], 'round_robin')

    def test_unknown_strategy_is_400_with_valid_names(self):
        r = self.change({'strategy': 'fastest_please'})
        j = self.assertGatewayError(r, 400, 'invalid_request')
        text = json.dumps(j)
        for name in STRATEGIES:
            self.assertIn(name, text)
        self.assertEqual(self.get('/stats').json()['strategy'], 'round_robin')

    def test_bad_bodies_are_400(self):
        for body in (b'not json', b'[]', b'{}', b'{"strategy": 5}', b''):
            with self.subTest(body=body):
                r = self.change(body)
                self.assertGatewayError(r, 400, 'invalid_request')

    def test_change_is_200_and_visible_in_stats(self):
        for name in ('ip_hash', 'least_connections', 'weighted', 'adaptive', 'round_robin'):
            with self.subTest(name=name):
                r = self.change({'strategy': name})
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json().get('strategy'), name)
                self.assertEqual(self.get('/stats').json()['strategy'], name)

    def test_ip_hash_sticks_after_change(self):
        self.assertEqual(self.change({'strategy': 'ip_hash'}).status, 200)
        seen = {self.get('/sticky/%d' % i).json()['backend'] for i in range(10)}
        self.assertEqual(len(seen), 1, seen)
        self.assertEqual(self.change({'strategy': 'round_robin'}).status, 200)
        seen = {self.get('/spread/%d' % i).json()['backend'] for i in range(10)}
        self.assertEqual(seen, {'b1', 'b2'})

    def test_get_is_405(self):
        r = self.get('/change_strategy', self.admin_headers())
        self.assertGatewayError(r, 405)


class AdminAllowTest(ProxyTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        admin_allow 10.0.0.0/8
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def test_non_admin_address_is_403_even_with_the_token(self):
        r = self.request('POST', '/change_strategy',
                         [('Content-Type', 'application/json')] +
                         list(self.admin_headers().items()), b'{"strategy":"ip_hash"}')
        self.assertGatewayError(r, 403, 'forbidden')
        self.assertEqual(self.get('/stats').json()['strategy'], 'round_robin')

    def test_forged_x_forwarded_for_does_not_grant_admin(self):
        r = self.request('POST', '/change_strategy',
                         [('Content-Type', 'application/json'),
                          ('X-Forwarded-For', '10.1.2.3')] +
                         list(self.admin_headers().items()), b'{"strategy":"ip_hash"}')
        self.assertGatewayError(r, 403, 'forbidden')


# ---------------------------------------------------------------- configuration

class ConfigCheckTest(gwtest.GatewayTestCase):
    timeout = 30

    GOOD = '''
        # a comment
        listen 127.0.0.1:18080
        workers 2
        strategy least_connections
        backend b1 127.0.0.1:5001 weight=2 dc=us-east max_conns=256
        backend b2 127.0.0.1:5002 dc=eu-west
        timeouts connect=2s response=30s client_header=10s client_idle=60s
        limits header=32kb headers=100 body=1mb uri=8kb
        health_check path=/health interval=10s timeout=2s rise=2 fall=2
        circuit failures=5 open=30s
        retries 1
        queue max=1024 timeout=5s
        ip_limit 100/60s
        ip_limit_exempt 10.0.0.0/8
        admin_allow 127.0.0.0/8
        trusted_proxy 127.0.0.0/8
        datacenter us-east lat=39.04 lon=-77.49
        datacenter eu-west lat=53.35 lon=-6.26
        route /api/ auth=off
        route / auth=none
    '''

    def check(self, text):
        return self.check_config(text, auto=False)

    def test_good_file_exit_0(self):
        rc, err, path = self.check(self.GOOD)
        self.assertEqual(rc, 0, err)

    def assertRefused(self, text, line, pattern=None):
        rc, err, path = self.check(text)
        self.assertEqual(rc, 1, 'accepted: %r' % err)
        m = re.search(r'(?m)^%s:(\d+): (.+)$' % re.escape(path), err)
        self.assertIsNotNone(m, 'no "file:line: message" in %r' % err)
        self.assertEqual(int(m.group(1)), line, err)
        if pattern:
            self.assertRegex(m.group(2), pattern)
        return m.group(2)

    def test_unknown_directive(self):
        self.assertRefused('listen 127.0.0.1:18080\n\n# c\nfrobnicate yes\n', 4,
                           r'(?i)unknown.*frobnicate|frobnicate.*unknown')

    def test_bad_values(self):
        cases = [
            ('timeouts connect=abc\n', r'connect'),
            ('limits body=12parsecs\n', r'body'),
            ('strategy fastest\n', r'fastest|strategy'),
            ('backend b1 127.0.0.1:99999\n', r'99999|port'),
            ('backend b1 127.0.0.1:5001 weight=-3\n', r'weight'),
            ('workers many\n', r'workers'),
            ('route / auth=maybe\n', r'auth'),
            ('ip_limit 100 per minute\n', r'ip_limit'),
            ('listen 127.0.0.1:18080 tls cert=/nonexistent/c.pem key=/nonexistent/k.pem\n',
             r'nonexistent|cert'),
        ]
        for line, pattern in cases:
            with self.subTest(line=line):
                self.assertRefused('listen 127.0.0.1:18080\n' + line, 2, pattern)

    def test_cache_directive_checked(self):
        # the cache has landed: its directive is accepted, and its values checked
        rc, err, _ = self.check('listen 127.0.0.1:18080\nbackend b1 127.0.0.1:1\ncache ttl=30s\n'
                                'route / auth=none cache=on\n')
        self.assertEqual(rc, 0, err)
        msg = self.assertRefused('listen 127.0.0.1:18080\ncache max_memory=lots\n', 2)
        self.assertIn('max_memory', msg)

    def test_missing_file(self):
        cp = subprocess.run([gwtest.GATEWAYD, '-t', '-c', '/nonexistent/gatewayd.conf'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(cp.returncode, 1)
        self.assertIn(b'/nonexistent/gatewayd.conf', cp.stderr)

    def test_bad_d_override_is_refused(self):
        self._gw_state()
        path, _ = self.write_config('listen 127.0.0.1:18080\n', auto=False)
        cp = subprocess.run([gwtest.GATEWAYD, '-t', '-c', path, '-d', 'strategy=bogus'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(cp.returncode, 1)
        self.assertIn(b'bogus', cp.stderr)

    def test_d_override_visible_in_stats(self):
        b = self.start_backend('b1')
        self.start_gateway('''
            strategy round_robin
            backend b1 127.0.0.1:{b1}
            ip_limit_exempt 127.0.0.0/8
            route / auth=none
        ''', args=['-d', 'strategy=ip_hash'])
        self.assertEqual(self.get('/stats').json()['strategy'], 'ip_hash')
        self.assertEqual(self.get('/x').status, 200)


if __name__ == '__main__':
    unittest.main()
