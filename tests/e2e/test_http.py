"""End-to-end tests of gatewayd's HTTP engine: strict parsing, limits, connection
management, streaming, timeouts, memory per connection, WebSocket tunnels and TLS.

Everything runs against the real bin/gatewayd and bin/mockbackend on loopback ports, over
raw sockets with exact bytes where the bytes matter. Errors the gateway produces itself
must be SPEC section 4 JSON: {"error": ..., "message": ...}, Content-Type
application/json. Where the SPEC is silent the tests expect what nginx or HAProxy do.
"""

import os
import re
import resource
import select
import socket
import ssl
import subprocess
import threading
import time
import unittest

import gwtest
from gwtest import RawConn, build_request, chunked_body

UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')

# The mockbackend's body pattern: byte i of a /bytes or /chunked body is 'a' + i % 26.
_PATTERN = bytes(97 + i % 26 for i in range(26 * 4096))


def pattern(offset, n):
    out = bytearray()
    while n > 0:
        start = offset % 26
        take = min(n, len(_PATTERN) - start)
        out += _PATTERN[start:start + take]
        offset += take
        n -= take
    return bytes(out)


class PatternChecker:
    """A read_response sink that checks the /bytes pattern as the body streams by."""

    def __init__(self, on_piece=None):
        self.offset = 0
        self.bad_at = None
        self.on_piece = on_piece

    def __call__(self, piece):
        if self.bad_at is None and piece != pattern(self.offset, len(piece)):
            self.bad_at = self.offset
        self.offset += len(piece)
        if self.on_piece is not None:
            self.on_piece(self.offset)


def raise_nofile(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class HttpTestCase(gwtest.GatewayTestCase):
    timeout = 60

    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        timeouts connect=1s response=5s client_header=2s client_idle=5s
        limits header=8kb headers=30 body=64kb uri=1kb
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def setUp(self):
        super().setUp()
        self.b1 = self.start_backend('b1')
        self.gw = self.start_gateway(self.CONFIG)

    # -- helpers

    def assertGatewayError(self, r, status, code=None):
        """A SPEC section 4 error: JSON object with error and message, the right type."""
        self.assertEqual(r.status, status, 'expected %d, got %d %s: %r' % (
            status, r.status, r.reason, r.body[:300]))
        ctype = (r.header('Content-Type') or '').split(';')[0].strip().lower()
        self.assertEqual(ctype, 'application/json', 'error %d has Content-Type %r' % (
            status, r.header('Content-Type')))
        j = r.json()
        self.assertIsInstance(j, dict)
        self.assertIsInstance(j.get('error'), str, j)
        self.assertIsInstance(j.get('message'), str, j)
        self.assertTrue(j['message'], j)
        if code is not None:
            self.assertEqual(j['error'], code, j)
        return j

    def send_bad(self, data, status, code='invalid_request', method='GET', closes=True):
        """Sends exact bytes on a new connection; expects one error answer, then a close."""
        c = self.raw(timeout=5)
        c.send(data)
        r = c.read_response(method)
        self.assertGatewayError(r, status, code)
        if closes:
            self.assertTrue(c.closed_by_peer(3), 'connection left open after a %d for %r' % (
                status, data[:120]))
        return r

    def backend_paths(self):
        return self.b1.stats()['by_path']


# ---------------------------------------------------------------- strict parsing

class StrictParsingTest(HttpTestCase):
    def test_content_length_and_transfer_encoding_together(self):
        smuggle = (b'POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n'
                   b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /inner HTTP/1.1\r\n'
                   b'Host: x\r\n\r\n')
        r = self.send_bad(smuggle, 400)
        self.assertIn('close', (r.header('Connection') or '').lower())
        # the order of the two headers does not matter
        self.send_bad(b'POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                      b'Content-Length: 5\r\n\r\n0\r\n\r\n', 400)
        paths = self.backend_paths()
        self.assertNotIn('/smuggle', paths)
        self.assertNotIn('/inner', paths)

    def test_differing_duplicate_content_length(self):
        self.send_bad(b'POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n'
                      b'Content-Length: 6\r\n\r\nhello!', 400)
        self.send_bad(b'POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!',
                      400)
        self.assertNotIn('/dup', self.backend_paths())

    def test_malformed_content_length(self):
        for value in (b'-1', b'+5', b'5x', b'0x5', b'', b'99999999999999999999999'):
            with self.subTest(value=value):
                self.send_bad(b'POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: ' + value +
                              b'\r\n\r\nhello', 400)

    def test_bad_chunk_size(self):
        for body in (b'zz\r\nhello\r\n0\r\n\r\n', b'-5\r\nhello\r\n0\r\n\r\n',
                     b'5 5\r\nhello\r\n0\r\n\r\n', b'\r\nhello\r\n0\r\n\r\n'):
            with self.subTest(body=body):
                self.send_bad(b'POST /chunk HTTP/1.1\r\nHost: x\r\n'
                              b'Transfer-Encoding: chunked\r\n\r\n' + body, 400, method='POST')

    def test_chunk_data_not_followed_by_crlf(self):
        self.send_bad(b'POST /chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
                      b'5\r\nhelloXX0\r\n\r\n', 400, method='POST')

    def test_obs_fold(self):
        self.send_bad(b'GET /fold HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n', 400)
        self.send_bad(b'GET /fold HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n\tb\r\n\r\n', 400)
        self.assertNotIn('/fold', self.backend_paths())

    def test_bare_lf(self):
        self.send_bad(b'GET /lf HTTP/1.1\nHost: x\n\n', 400)
        self.send_bad(b'GET /lf HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n', 400)
        self.send_bad(b'GET /lf HTTP/1.1\r\nHost: x\r\nX-A: b\n\r\n', 400)

    def test_bare_cr_and_control_characters(self):
        self.send_bad(b'GET /cr HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n', 400)
        self.send_bad(b'GET /cr HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n', 400)
        self.send_bad(b'GET /c\x01r HTTP/1.1\r\nHost: x\r\n\r\n', 400)
        self.assertNotIn('/cr', self.backend_paths())

    def test_invalid_header_names(self):
        for line in (b'Bad Name: x', b'X(y): z', b'X-Foo : bar', b': empty', b'X\x7fA: y',
                     b'X"q: y', b'X/y: z', b'NoColon'):
            with self.subTest(line=line):
                self.send_bad(b'GET /names HTTP/1.1\r\nHost: x\r\n' + line + b'\r\n\r\n', 400)
        self.assertNotIn('/names', self.backend_paths())

    def test_whitespace_before_first_header(self):
        # RFC 9112 2.2: a line starting with whitespace right after the start line
        self.send_bad(b'GET /ws1 HTTP/1.1\r\n Host: x\r\n\r\n', 400)

    def test_bad_request_lines(self):
        for line in (b'GET  /two-spaces HTTP/1.1', b'GET /x HTTP/1.1 extra', b'GET',
                     b'G(T / HTTP/1.1', b'GET noslash HTTP/1.1', b'/x HTTP/1.1'):
            with self.subTest(line=line):
                self.send_bad(line + b'\r\nHost: x\r\n\r\n', 400)

    def test_missing_host_in_http11(self):
        self.send_bad(b'GET /nohost HTTP/1.1\r\n\r\n', 400)
        self.send_bad(b'GET /nohost HTTP/1.1\r\nX-A: b\r\n\r\n', 400)
        self.assertNotIn('/nohost', self.backend_paths())

    def test_duplicate_host(self):
        # RFC 9112 3.2: more than one Host field line is a 400
        self.send_bad(b'GET /twohosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400)

    def test_http10_without_host_is_fine(self):
        c = self.raw()
        c.send(b'GET /old HTTP/1.0\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['path'], '/old')

    def test_unsupported_transfer_coding(self):
        # nginx answers 501 for an unknown coding; a 400 is the other acceptable answer
        for te in (b'gzip', b'chunked, gzip', b'identity', b'chunked, chunked'):
            with self.subTest(te=te):
                c = self.raw(timeout=5)
                c.send(b'POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ' + te +
                       b'\r\n\r\n0\r\n\r\n')
                r = c.read_response('POST')
                self.assertIn(r.status, (400, 501), r)
                self.assertGatewayError(r, r.status)
                self.assertTrue(c.closed_by_peer(3))
        self.assertNotIn('/te', self.backend_paths())

    def test_http2_version_is_505(self):
        r = self.send_bad(b'GET / HTTP/2.0\r\nHost: x\r\n\r\n', 505, code=None)
        self.assertEqual(r.json()['error'], 'invalid_request')
        self.send_bad(b'GET / HTTP/3.0\r\nHost: x\r\n\r\n', 505, code=None)
        # the HTTP/2 connection preface sent to an HTTP/1 port
        c = self.raw(timeout=5)
        c.send(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
        r = c.read_response()
        self.assertIn(r.status, (400, 505))
        self.assertGatewayError(r, r.status)
        self.assertTrue(c.closed_by_peer(3))

    def test_garbage_version_is_400(self):
        for version in (b'HTTP/1', b'HTTX/1.1', b'http/1.1', b'HTTP/1.1.1', b'HTTP/a.b',
                        b'FOO'):
            with self.subTest(version=version):
                self.send_bad(b'GET / ' + version + b'\r\nHost: x\r\n\r\n', 400)

    def test_binary_garbage_is_400(self):
        self.send_bad(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + os.urandom(64) +
                      b'\r\n\r\n', 400)

    def test_good_request_after_errors_still_served(self):
        self.send_bad(b'GET / HTTP/1.1\r\n\r\n', 400)
        r = self.get('/fine')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['path'], '/fine')


# ---------------------------------------------------------------- limits

class LimitsTest(HttpTestCase):
    def test_uri_over_limit_is_414(self):
        ok = self.get('/' + 'a' * 900)
        self.assertEqual(ok.status, 200)
        self.send_bad(b'GET /' + b'a' * 2000 + b' HTTP/1.1\r\nHost: x\r\n\r\n', 414,
                      'uri_too_long')
        # a long query string counts too
        self.send_bad(b'GET /q?' + b'b' * 2000 + b' HTTP/1.1\r\nHost: x\r\n\r\n', 414,
                      'uri_too_long')

    def test_uri_over_limit_before_the_line_ends(self):
        # a request line that never ends must be refused once it cannot fit, not waited for
        c = self.raw(timeout=5)
        c.send(b'GET /' + b'a' * 20000)
        r = c.read_response()
        self.assertGatewayError(r, 414, 'uri_too_long')
        self.assertTrue(c.closed_by_peer(3))

    def test_header_bytes_over_limit_is_431(self):
        self.assertEqual(self.get('/h', headers={'X-Big': 'v' * 6000}).status, 200)
        self.send_bad(build_request('GET', '/h', {'X-Big': 'v' * 9000}, host='x'), 431,
                      'headers_too_large')
        # many medium headers adding up past 8 kB
        self.send_bad(build_request('GET', '/h', [('X-H%d' % i, 'v' * 700) for i in range(15)],
                                    host='x'), 431, 'headers_too_large')

    def test_header_bytes_over_limit_without_end_of_head(self):
        c = self.raw(timeout=5)
        c.send(b'GET /h HTTP/1.1\r\nHost: x\r\nX-Endless: ' + b'v' * 20000)
        r = c.read_response()
        self.assertGatewayError(r, 431, 'headers_too_large')
        self.assertTrue(c.closed_by_peer(3))

    def test_header_count_over_limit_is_431(self):
        ok = build_request('GET', '/n', [('X-H%d' % i, 'v') for i in range(25)], host='x')
        c = self.raw()
        c.send(ok)
        self.assertEqual(c.read_response().status, 200)
        self.send_bad(build_request('GET', '/n', [('X-H%d' % i, 'v') for i in range(40)],
                                    host='x'), 431, 'headers_too_large')

    def test_content_length_over_limit_is_413(self):
        c = self.raw(timeout=5)
        t0 = time.monotonic()
        # the body is not sent: the answer must not wait for it
        c.send(b'POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % (65 * 1024))
        r = c.read_response('POST')
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertGatewayError(r, 413, 'body_too_large')
        self.assertTrue(c.closed_by_peer(3))
        self.assertNotIn('/big', self.backend_paths())
        # exactly at the limit is fine
        r = self.request('POST', '/big', body=b'x' * (64 * 1024))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], 64 * 1024)

    def test_chunked_body_over_limit_is_413(self):
        c = self.raw(timeout=5)
        c.send(b'POST /bigchunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
        r = None
        try:
            for _ in range(40):  # 80 kB in 2 kB chunks, past the 64 kB limit
                c.send(b'800\r\n' + b'c' * 2048 + b'\r\n')
            c.send(b'0\r\n\r\n')
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer and close before we are done sending
        r = c.read_response('POST')
        self.assertGatewayError(r, 413, 'body_too_large')
        self.assertTrue(c.closed_by_peer(3))
        # a chunked body under the limit goes through
        r = self.request('POST', '/smallchunks', headers=[('Transfer-Encoding', 'chunked')],
                         body=chunked_body([b'c' * 2048] * 10))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], 20480)

    def test_chunk_size_over_limit_is_413_at_once(self):
        # One chunk whose declared size alone is past the 64 kB limit: the 413 comes as
        # soon as the size line is read, without waiting for the data (no 408, no reset).
        for split in (True, False):
            with self.subTest(split=split):
                c = self.raw(timeout=5)
                head = b'POST /hugechunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
                t0 = time.monotonic()
                if split:
                    c.send(head)
                    time.sleep(0.2)
                    c.send(b'100000\r\nabcdef')
                else:
                    c.send(head + b'100000\r\nabcdef')
                r = c.read_response('POST')
                self.assertLess(time.monotonic() - t0, 2.0)
                self.assertGatewayError(r, 413, 'body_too_large')
                self.assertTrue(c.closed_by_peer(3))

    def test_small_chunks_over_limit_in_one_packet_is_413(self):
        # the whole over-limit body arrives with the head
        c = self.raw(timeout=5)
        c.send(b'POST /allchunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' +
               chunked_body([b'd' * 4096] * 17))
        r = c.read_response('POST')
        self.assertGatewayError(r, 413, 'body_too_large')
        self.assertTrue(c.closed_by_peer(3))

    def test_expect_continue_over_limit_gets_413_without_100(self):
        c = self.raw(timeout=5)
        c.send(b'POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n'
               b'Expect: 100-continue\r\n\r\n')
        r = c.read_response('POST')
        self.assertEqual([s for s, _ in r.interim], [])
        self.assertGatewayError(r, 413, 'body_too_large')


# ---------------------------------------------------------------- connections

class ConnectionTest(HttpTestCase):
    def test_keepalive_many_requests_on_one_connection(self):
        with self.client() as cl:
            for i in range(50):
                path = '/health' if i % 10 == 9 else '/ka/%d' % i
                r = cl.get(path)
                self.assertEqual(r.status, 200, path)
                if path != '/health':
                    self.assertEqual(r.json()['path'], path)
                self.assertTrue(r.keep_alive, r.headers)
            self.assertEqual(cl.connections, 1)

    def test_pipelining_answers_in_order(self):
        data = (build_request('GET', '/p1', host='x') +
                build_request('GET', '/health', host='x') +
                build_request('POST', '/echo', body=b'pipelined body', host='x') +
                build_request('HEAD', '/p4', host='x') +
                build_request('GET', '/p5?q=5', host='x'))
        c = self.raw()
        c.send(data)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response('POST')
        r4 = c.read_response('HEAD')
        r5 = c.read_response()
        self.assertEqual((r1.status, r1.json()['path']), (200, '/p1'))
        self.assertEqual((r2.status, r2.json()), (200, {'status': 'ok'}))
        self.assertEqual((r3.status, r3.body), (200, b'pipelined body'))
        self.assertEqual((r4.status, r4.body), (200, b''))
        self.assertEqual((r5.status, r5.json()['path'], r5.json()['query']), (200, '/p5', 'q=5'))
        # and the connection is still usable
        r = c.request('GET', '/after')
        self.assertEqual(r.json()['path'], '/after')

    def test_empty_line_before_request_line_is_ignored(self):
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
        # request-line (old clients send a CRLF after a POST body); nginx and HAProxy do
        c = self.raw()
        c.send(b'\r\nGET /lead HTTP/1.1\r\nHost: x\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(r.json()['path'], '/lead')
        c.send(b'POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\r\n'
               b'GET /next HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertEqual(c.read_response('POST').json()['body_length'], 5)
        r = c.read_response()
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(r.json()['path'], '/next')

    def test_pipelining_split_across_sends(self):
        data = b''.join(build_request('GET', '/s%d' % i, host='x') for i in range(10))
        c = self.raw()
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
        for i in range(10):
            self.assertEqual(c.read_response().json()['path'], '/s%d' % i)

    def test_http10_closes_unless_keepalive(self):
        c = self.raw()
        c.send(b'GET /ten HTTP/1.0\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['path'], '/ten')
        self.assertFalse(r.keep_alive, r.headers)
        self.assertTrue(c.closed_by_peer(3), 'HTTP/1.0 connection left open')

        c = self.raw()
        for i in range(3):
            c.send(b'GET /tenka%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' % i)
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['path'], '/tenka%d' % i)
            self.assertIn('keep-alive', (r.header('Connection') or '').lower())
            self.assertNotEqual(r.framing, 'chunked')
        # built-in endpoints honour it too
        c.send(b'GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertIn('keep-alive', (r.header('Connection') or '').lower())
        c.send(b'GET /last HTTP/1.0\r\n\r\n')
        self.assertEqual(c.read_response().status, 200)
        self.assertTrue(c.closed_by_peer(3))

    def test_http10_client_never_gets_chunked(self):
        c = self.raw()
        c.send(b'GET /chunked?n=3&size=4 HTTP/1.0\r\n\r\n')
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header('Transfer-Encoding'))
        self.assertEqual(r.body, pattern(0, 12))

    def test_connection_close_is_honoured(self):
        c = self.raw()
        r = c.request('GET', '/bye', headers={'Connection': 'close'})
        self.assertEqual(r.status, 200)
        self.assertIn('close', (r.header('Connection') or '').lower())
        self.assertTrue(c.closed_by_peer(3))

    def test_head_has_no_body(self):
        c = self.raw()
        r = c.request('HEAD', '/bytes?n=5000')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header('Content-Length'), '5000')
        r = c.request('HEAD', '/chunked?n=5&size=10')
        self.assertEqual(r.status, 200)
        r = c.request('HEAD', '/health')
        self.assertEqual(r.status, 200)
        r = c.request('HEAD', '/no/such/thing')
        self.assertEqual(r.status, 200)
        # any stray body byte would show up here as a bad status line
        r = c.request('GET', '/insync')
        self.assertEqual(r.json()['path'], '/insync')
        self.assertEqual(r.json()['method'], 'GET')

    def test_expect_100_continue(self):
        c = self.raw(timeout=5)
        c.send(b'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n'
               b'Expect: 100-continue\r\n\r\n')
        interim = c.read_response('POST', keep_interim=True)
        self.assertEqual(interim.status, 100, 'no 100 Continue before the body was sent')
        c.send(b'hello world')
        r = c.read_response('POST')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], 11)
        # the connection goes on
        self.assertEqual(c.request('GET', '/next').json()['path'], '/next')

    def test_expect_100_continue_with_chunked_body(self):
        c = self.raw(timeout=5)
        c.send(b'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
               b'Expect: 100-continue\r\n\r\n')
        interim = c.read_response('POST', keep_interim=True)
        self.assertEqual(interim.status, 100)
        c.send(chunked_body([b'abc', b'defgh']))
        r = c.read_response('POST')
        self.assertEqual((r.status, r.body), (200, b'abcdefgh'))

    def test_expect_100_continue_body_sent_anyway(self):
        # a client that does not wait for the 100 (curl after 1 s) must still work
        c = self.raw(timeout=5)
        c.send(b'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n'
               b'Expect: 100-continue\r\n\r\nhello')
        r = c.read_response('POST')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], 5)
        self.assertEqual(c.request('GET', '/next').json()['path'], '/next')

    def test_chunked_request_body_forwarded_intact(self):
        body = chunked_body([b'a' * 10, b'b' * 5000, b'c', b'd' * 30000],
                            trailers=[('X-Sum', '1')], ext='name=value')
        r = self.request('POST', '/upload', headers=[('Transfer-Encoding', 'chunked')],
                         body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], 35011)
        data = os.urandom(40000)
        pieces = [data[i:i + 3333] for i in range(0, len(data), 3333)]
        r = self.request('POST', '/echo', headers=[('Transfer-Encoding', 'chunked')],
                         body=chunked_body(pieces))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, data)

    def test_chunked_request_body_trickled(self):
        c = self.raw(timeout=5)
        c.send(b'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
        body = chunked_body([b'first ', b'second ', b'third'])
        for i in range(0, len(body), 3):
            c.send(body[i:i + 3])
            time.sleep(0.005)
        r = c.read_response('POST')
        self.assertEqual((r.status, r.body), (200, b'first second third'))

    def test_chunked_response_passed_through(self):
        with self.client() as cl:
            r = cl.get('/chunked?n=50&size=1000')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.framing, 'chunked')
            self.assertEqual(r.body, pattern(0, 50000))
            r = cl.get('/chunked?n=40&size=100000')
            self.assertEqual(r.body_length, 4000000)
            self.assertTrue(r.body == pattern(0, 4000000), 'chunked body corrupted')
            self.assertEqual(cl.get('/after').json()['path'], '/after')
            self.assertEqual(cl.connections, 1)

    def test_eof_delimited_backend_response(self):
        # several rounds: the backend's last bytes and its FIN arrive together only some
        # of the time, and the end must be seen at once either way (response=5s here)
        for i in range(6):
            c = self.raw()
            t0 = time.monotonic()
            r = c.request('GET', '/close')
            elapsed = time.monotonic() - t0
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['path'], '/close')
            self.assertIn('close', (r.header('Connection') or '').lower(), r.headers)
            self.assertTrue(c.closed_by_peer(3))
            self.assertLess(elapsed, 1.0, 'round %d: the EOF-delimited body ended only after '
                            '%.1fs' % (i, elapsed))
        # the gateway is fine afterwards
        self.assertEqual(self.get('/later').status, 200)
        # and counted every response, however it ended
        served = sum(b['requests'] for b in self.gw.get('/stats').json()['backends'])
        self.assertEqual(served, 7)

    def test_204_and_304_without_body(self):
        c = self.raw()
        for code in (204, 304):
            r = c.request('GET', '/status/%d' % code)
            self.assertEqual(r.status, code)
            self.assertIsNone(r.header('Transfer-Encoding'))
            self.assertIn(r.header('Content-Length'), (None, '0'))
        # a stray body byte after the 204/304 would break this response
        r = c.request('GET', '/insync')
        self.assertEqual(r.json()['path'], '/insync')

    def test_interim_1xx_from_backend_does_not_break_the_exchange(self):
        c = self.raw()
        r = c.request('GET', '/status/103')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {'status': 103})
        self.assertEqual(c.request('GET', '/next').json()['path'], '/next')

    def test_half_closed_client_still_gets_its_answer(self):
        c = self.raw()
        c.send(build_request('GET', '/half', host='x'))
        c.shutdown_write()
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['path'], '/half')
        # nothing more can come from this client: the connection ends now, not after
        # client_idle (5s here), as with nginx and HAProxy
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(4.0))
        self.assertLess(time.monotonic() - t0, 1.0, 'a half-closed client was kept until '
                        'client_idle')


# ---------------------------------------------------------------- streaming and memory

class StreamingTest(HttpTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        timeouts connect=1s response=10s client_header=5s client_idle=10s
        limits body=300mb
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    @gwtest.timeout(90)
    @gwtest.skip_sanitized('RSS bounds do not hold under ASan')
    def test_50mb_response_streamed_with_bounded_rss(self):
        for _ in range(20):  # warm up the pools and buffers
            self.get('/bytes?n=100000')
        base = self.gw.rss_kb()
        peak = [base]
        n = 50 * 1024 * 1024
        c = self.raw(timeout=30)
        c.send(build_request('GET', '/bytes?n=%d' % n, host='x'))
        # a slow reader first: the gateway must not buffer what the client does not take
        time.sleep(1.0)
        peak[0] = max(peak[0], self.gw.rss_kb())
        last = [0]

        def sample(offset):
            if offset - last[0] >= 2 * 1024 * 1024:
                last[0] = offset
                peak[0] = max(peak[0], self.gw.rss_kb())
        check = PatternChecker(sample)
        r = c.read_response(sink=check)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body_length, n)
        self.assertIsNone(check.bad_at, 'body differs from the pattern at %s' % check.bad_at)
        growth = peak[0] - base
        self.assertLess(growth, 16 * 1024,
                        'gatewayd RSS grew by %d kB while streaming 50 MB (base %d kB)' %
                        (growth, base))
        self.assertEqual(c.request('GET', '/after').json()['path'], '/after')

    @gwtest.timeout(120)
    @gwtest.skip_sanitized('RSS bounds do not hold under ASan')
    def test_200mb_upload_streamed_with_rss_under_64mb(self):
        total = 200 * 1024 * 1024
        c = self.raw(timeout=30)
        c.send(b'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % total)
        block = b'u' * (1024 * 1024)
        peak = 0
        for i in range(total // len(block)):
            c.send(block)
            if i % 10 == 0:
                peak = max(peak, self.gw.rss_kb())
        r = c.read_response('POST')
        peak = max(peak, self.gw.rss_kb())
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], total)
        self.assertLess(peak, 64 * 1024, 'gatewayd RSS reached %d kB during a 200 MB upload'
                        % peak)

    @gwtest.timeout(90)
    @gwtest.skip_sanitized('RSS bounds do not hold under ASan')
    def test_chunked_upload_100mb_streamed(self):
        total = 100 * 1024 * 1024
        c = self.raw(timeout=30)
        c.send(b'POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
        block = b'z' * (1024 * 1024)
        chunk = b'%x\r\n' % len(block) + block + b'\r\n'
        peak = 0
        for i in range(total // len(block)):
            c.send(chunk)
            if i % 10 == 0:
                peak = max(peak, self.gw.rss_kb())
        c.send(b'0\r\n\r\n')
        r = c.read_response('POST')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], total)
        self.assertLess(peak, 64 * 1024, 'gatewayd RSS reached %d kB' % peak)


# ---------------------------------------------------------------- timeouts

class TimeoutTest(HttpTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        timeouts connect=1s response=5s client_header=2s client_idle=1s
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    @staticmethod
    def _closed_now(conn):
        """True if the peer closed (EOF, reset, or an error answer then EOF)."""
        r, _, _ = select.select([conn.sock], [], [], 0)
        if not r:
            return False
        try:
            data = conn.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not data:
            return True
        conn.buf += data
        # a 408 before the close is acceptable (HAProxy does that); wait for the EOF
        return conn.closed_by_peer(1.0)

    def test_slowloris_is_closed_after_client_header_while_others_are_served(self):
        slow = self.raw(timeout=5)
        slow.send(b'GET /slow-head HTTP/1.1\r\n')
        t0 = time.monotonic()
        rest = b'Host: x\r\n' + b''.join(b'X-Drip-%d: %d\r\n' % (i, i) for i in range(20))
        good = self.client()
        closed_at = None
        i = 0
        served = 0
        while time.monotonic() - t0 < 8.0:
            now = time.monotonic() - t0
            if now >= i + 1 and i < len(rest):
                try:
                    slow.send(rest[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = now
                    break
                i += 1
            if self._closed_now(slow):
                closed_at = time.monotonic() - t0
                break
            r = good.get('/good/%d' % served)
            self.assertEqual(r.status, 200)
            served += 1
            time.sleep(0.1)
        good.close()
        self.assertIsNotNone(closed_at, 'a client dripping one header byte a second was not '
                             'closed within 8 s (client_header=2s)')
        self.assertGreater(closed_at, 1.5, 'closed before client_header elapsed')
        self.assertLess(closed_at, 4.0, 'closed %.1fs after it started (client_header=2s)'
                        % closed_at)
        self.assertGreater(served, 10)
        if slow.buf:
            self.assertTrue(slow.buf.startswith(b'HTTP/1.1 408'), bytes(slow.buf[:100]))
        self.assertNotIn('/slow-head', self.backend_paths())

    def test_idle_keepalive_client_is_closed_after_client_idle(self):
        c = self.raw(timeout=5)
        r = c.request('GET', '/idle')
        self.assertEqual(r.status, 200)
        t0 = time.monotonic()
        self.assertFalse(c.closed_by_peer(0.5), 'closed before client_idle=1s')
        self.assertTrue(c.closed_by_peer(3.0), 'idle keep-alive connection not closed')
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 2.5)
        self.assertEqual(c.buf, b'', 'bytes sent on an idle connection: %r' % bytes(c.buf))

    def test_connection_without_request_is_closed_after_client_header(self):
        c = self.raw(timeout=5)
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(5.0), 'silent connection never closed')
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 3.5)

    def test_busy_keepalive_client_is_not_closed(self):
        # requests spaced under client_idle keep the connection: its timer restarts
        with self.client() as cl:
            for i in range(6):
                self.assertEqual(cl.get('/busy/%d' % i).status, 200)
                time.sleep(0.6)
            self.assertEqual(cl.connections, 1)

    def test_upload_longer_than_response_timeout_is_not_cut(self):
        # `response` bounds the backend's silence, not how long the client takes to send
        # a body that keeps moving (nginx: proxy_read_timeout starts once the request is
        # sent; HAProxy: timeout server is an inactivity timeout)
        self.gw.stop()
        self.gw = self.start_gateway('''
            backend b1 127.0.0.1:{b1} dc=us-east
            timeouts connect=5s response=1s client_header=2s client_idle=5s
            ip_limit_exempt 127.0.0.1/32
            route / auth=none
        ''', port=gwtest.free_port())
        c = self.raw(timeout=10)
        c.send(b'POST /longupload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n')
        try:
            for ch in b'0123456789':
                time.sleep(0.25)
                c.send(bytes([ch]))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response('POST')
        self.assertEqual(r.status, 200, 'upload of 2.5 s with response=1s: %r %r' % (
            r, r.body[:200]))
        self.assertEqual(r.json()['body_length'], 10)

    def test_slow_body_is_not_cut_by_client_header(self):
        # client_header bounds the head only; a body trickling for longer still arrives
        c = self.raw(timeout=10)
        c.send(b'POST /slowbody HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n')
        try:
            for ch in b'abcdef':
                time.sleep(0.5)
                c.send(bytes([ch]))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer below says why
        r = c.read_response('POST')
        self.assertEqual(r.status, 200, 'a 3 s upload (client_header=2s, connect=1s, '
                         'response=5s) got %r %r' % (r, r.body[:200]))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_length'], 6)


class IdleConnectionMemoryTest(HttpTestCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1} dc=us-east
        timeouts connect=1s response=5s client_header=20s client_idle=60s
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    @gwtest.timeout(90)
    def test_1000_idle_keepalive_connections_cost_under_8kb_each(self):
        n = 1000
        if raise_nofile(n + 500) < n + 200:
            self.skipTest('cannot open %d sockets' % n)
        for _ in range(50):
            self.get('/warm')
        conns = []
        try:
            base = self.gw.rss_kb()
            for i in range(n):
                c = RawConn(self.gw.port, timeout=10)
                conns.append(c)
                r = c.request('GET', '/idle/%d' % i if i % 2 else '/health')
                self.assertEqual(r.status, 200)
            time.sleep(0.5)
            after = self.gw.rss_kb()
            per_conn = (after - base) * 1024.0 / n
            self.assertLess(per_conn, 8192, 'each idle keep-alive connection costs %.0f bytes '
                            'of gatewayd RSS (%d -> %d kB)' % (per_conn, base, after))
            # all of them are still open and usable
            self.assertLessEqual(gwtest.fd_count(self.gw.pid), 10 ** 5)
            for c in conns[::100]:
                self.assertEqual(c.request('GET', '/again').json()['path'], '/again')
        finally:
            for c in conns:
                c.close()


# ---------------------------------------------------------------- WebSocket

class WebSocketTest(HttpTestCase):
    def test_websocket_upgrade_and_echo_both_ways(self):
        ws = self.ws('/chat')
        self.assertEqual(ws.response.status, 101)
        self.assertEqual((ws.response.header('Upgrade') or '').lower(), 'websocket')
        self.assertIn('upgrade', (ws.response.header('Connection') or '').lower())
        ws.send('hello')
        self.assertEqual(ws.recv(), (gwtest.WS_TEXT, b'hello'))
        ws.send(b'\x00\x01\x02')
        self.assertEqual(ws.recv(), (gwtest.WS_BINARY, b'\x00\x01\x02'))
        big = os.urandom(200000)
        ws.send(big)
        self.assertEqual(ws.recv(), (gwtest.WS_BINARY, big))
        for i in range(20):
            ws.send('m%d' % i)
        for i in range(20):
            self.assertEqual(ws.recv(), (gwtest.WS_TEXT, b'm%d' % i))
        ws.send_frame(gwtest.WS_PING, b'pp')
        self.assertEqual(ws.recv(), (gwtest.WS_PONG, b'pp'))
        self.assertEqual(ws.close(1000, b'bye'), (1000).to_bytes(2, 'big') + b'bye')
        self.assertEqual(self.b1.requests('/chat'), 1)

    def test_websocket_backend_sees_upgrade_headers(self):
        # the handshake reached the backend with its Upgrade and a Connection: upgrade
        ws = self.ws('/chat2')
        ws.close()
        r = self.get('/plain')
        self.assertEqual(r.status, 200)
        self.assertNotIn('upgrade', r.json()['headers'])

    def test_two_websockets_at_once(self):
        a, b = self.ws('/a'), self.ws('/b')
        a.send('to a')
        b.send('to b')
        self.assertEqual(b.recv(), (gwtest.WS_TEXT, b'to b'))
        self.assertEqual(a.recv(), (gwtest.WS_TEXT, b'to a'))
        a.close()
        b.send('still here')
        self.assertEqual(b.recv(), (gwtest.WS_TEXT, b'still here'))
        b.close()


# ---------------------------------------------------------------- TLS

class TlsTest(gwtest.GatewayTestCase):
    timeout = 60

    def setUp(self):
        super().setUp()
        self.b1 = self.start_backend('b1')
        self.cert, self.key = gwtest.self_signed_cert(self.tmp)
        self.gw = self.start_gateway('''
            listen 127.0.0.1:{port} tls cert=%s key=%s
            backend b1 127.0.0.1:{b1} dc=us-east
            timeouts client_header=3s client_idle=5s
            ip_limit_exempt 127.0.0.0/8
            route / auth=none
        ''' % (self.cert, self.key))

    def test_request_over_tls(self):
        with gwtest.Client(self.gw.port, tls=True) as cl:
            r = cl.get('/secure?x=1')
            self.assertEqual(r.status, 200)
            j = r.json()
            self.assertEqual(j['path'], '/secure')
            self.assertEqual(j['headers'].get('x-forwarded-proto'), 'https')
            self.assertEqual(r.header('X-Backend'), 'b1')
            for i in range(10):
                self.assertEqual(cl.get('/k%d' % i).json()['path'], '/k%d' % i)
            self.assertEqual(cl.get('/health').status, 200)
            data = os.urandom(300000)
            r = cl.request('POST', '/echo', body=data)
            self.assertEqual(r.body, data)
            check = PatternChecker()
            r = cl.request('GET', '/bytes?n=3000000', sink=check)
            self.assertEqual(r.body_length, 3000000)
            self.assertIsNone(check.bad_at)
            self.assertEqual(cl.connections, 1)

    def test_tls12_and_tls13_are_accepted(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=version):
                ctx = gwtest.insecure_ssl_context()
                ctx.minimum_version = ctx.maximum_version = version
                with RawConn(self.gw.port, ssl_context=ctx) as c:
                    self.assertEqual(c.sock.version(), version.name.replace('v1_', 'v1.'))
                    self.assertEqual(c.request('GET', '/v').status, 200)

    def test_tls11_is_refused(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers('ALL:@SECLEVEL=0')
        except (ValueError, ssl.SSLError) as e:
            self.skipTest('this Python/OpenSSL cannot offer TLS 1.1: %s' % e)
        sock = socket.create_connection((gwtest.HOST, self.gw.port), timeout=5)
        try:
            with self.assertRaises((ssl.SSLError, ConnectionError)) as cm:
                tls = ctx.wrap_socket(sock, server_hostname='localhost')
                tls.close()
            if 'NO_PROTOCOLS_AVAILABLE' in str(cm.exception).upper():
                self.skipTest('the client refused to offer TLS 1.1 itself')
        finally:
            sock.close()
        # still serving TLS 1.2+
        with gwtest.Client(self.gw.port, tls=True) as cl:
            self.assertEqual(cl.get('/after').status, 200)

    def test_plain_http_on_tls_port_is_not_served(self):
        c = self.raw(timeout=5)
        c.send(b'GET /plain HTTP/1.1\r\nHost: x\r\n\r\n')
        try:
            data = c.read_until_close(limit=65536)
        except (ConnectionResetError, socket.timeout) as e:
            data = b''
            self.assertNotIsInstance(e, socket.timeout, 'a plain request on a TLS port hangs')
        self.assertFalse(data.startswith(b'HTTP/1.1 200'), data[:100])
        self.assertNotIn('/plain', self.b1.stats()['by_path'])
        with gwtest.Client(self.gw.port, tls=True) as cl:
            self.assertEqual(cl.get('/after').status, 200)

    def test_tls_client_that_never_handshakes_is_closed(self):
        # client_header bounds the TLS handshake too (nginx does the same). In steady
        # state: the first moments after start are the next test's business.
        time.sleep(0.5)
        with gwtest.Client(self.gw.port, tls=True) as cl:
            self.assertEqual(cl.get('/first').status, 200)
        c = self.raw(timeout=6)
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(6.0), 'TLS connection without handshake kept open')
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 4.5, 'closed after %.1fs (client_header=3s)' % elapsed)

    def test_tls_client_connecting_right_after_start_is_bounded_by_client_header(self):
        # the very first connections, accepted as soon as the port is open, get the same
        # handshake deadline as later ones
        c = self.raw(timeout=8)
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(8.0), 'TLS connection without handshake kept open')
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 4.5, 'closed after %.1fs (client_header=3s)' % elapsed)


class TlsConfigTest(gwtest.GatewayTestCase):
    timeout = 60

    def _certs(self):
        self._gw_state()
        a = os.path.join(self.tmp, 'a')
        b = os.path.join(self.tmp, 'b')
        os.mkdir(a)
        os.mkdir(b)
        return gwtest.self_signed_cert(a), gwtest.self_signed_cert(b)

    def test_good_cert_passes_check(self):
        (cert, key), _ = self._certs()
        rc, err, path = self.check_config('''
            listen 127.0.0.1:%d tls cert=%s key=%s
            backend b1 127.0.0.1:9
        ''' % (gwtest.free_port(), cert, key))
        self.assertEqual(rc, 0, err)

    def test_mismatched_cert_and_key_fail_the_check(self):
        (cert_a, _), (_, key_b) = self._certs()
        rc, err, path = self.check_config('''
            backend b1 127.0.0.1:9
            listen 127.0.0.1:%d tls cert=%s key=%s
        ''' % (gwtest.free_port(), cert_a, key_b))
        self.assertEqual(rc, 1, 'gatewayd -t accepted a certificate with another key: %r' %
                         err)
        self.assertRegex(err, r'(?m)^%s:2: ' % re.escape(path))
        self.assertRegex(err.lower(), r'key')

    def test_missing_key_file_fails_the_check(self):
        (cert, _), _ = self._certs()
        rc, err, path = self.check_config('''
            listen 127.0.0.1:%d tls cert=%s key=%s/nope.pem
            backend b1 127.0.0.1:9
        ''' % (gwtest.free_port(), cert, self.tmp))
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r'(?m)^%s:1: ' % re.escape(path))

    def test_garbage_cert_file_fails_the_check(self):
        (_, key), _ = self._certs()
        junk = os.path.join(self.tmp, 'junk.pem')
        with open(junk, 'w') as f:
            f.write('-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n')
        rc, err, path = self.check_config('''
            listen 127.0.0.1:%d tls cert=%s key=%s
            backend b1 127.0.0.1:9
        ''' % (gwtest.free_port(), junk, key))
        self.assertEqual(rc, 1, 'gatewayd -t accepted a garbage certificate: %r' % err)
        self.assertRegex(err, r'(?m)^%s:1: ' % re.escape(path))


if __name__ == '__main__':
    unittest.main()
