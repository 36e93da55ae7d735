"""End-to-end tests of the web dashboard (GET /dashboard) and its WebSocket (GET /ws).

- the page: self-contained HTML (no external URL anywhere), the headers (type, no
  caching, a Content-Security-Policy), the stable element ids the live data goes into;
- the handshake (RFC 6455): Sec-WebSocket-Accept, and 400 with the SPEC section 4 error
  JSON for every malformed upgrade;
- the stream: the PUB stream's `stats` and `log` JSON as text frames, ping answered by
  pong, close answered by close and the connection ended, unmasked frames refused with
  1002, a client that never reads does not stop the others, SIGTERM closes with 1001;
- a real browser: headless Chromium loads /dashboard, the test reads the live numbers
  twice over the Chrome DevTools Protocol while traffic flows and asserts they moved,
  and saves a screenshot under /tmp/gatewayd-artifacts/ (skipped without chromium).
"""

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import gwtest
import test_metrics

# The browser test's steady traffic would run into the default per-IP limit (and a ban
# that would refuse the page's admin calls): loopback is exempt here.
CONFIG = '''
    backend b1 127.0.0.1:{b1} dc=us-east
    backend b2 127.0.0.1:{b2} dc=eu-west
    ip_limit_exempt 127.0.0.0/8
    route /api auth=none
'''

ARTIFACT_DIR = os.environ.get('GWTEST_ARTIFACTS', '/tmp/gatewayd-artifacts')


def recv_json(ws, want_type, deadline_s=8.0):
    """The next text frame whose JSON has type want_type (others skipped)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ws.conn.settimeout(max(0.1, end - time.monotonic()))
        op, payload = ws.recv()
        if op != gwtest.WS_TEXT:
            continue
        msg = json.loads(payload.decode())
        if msg.get('type') == want_type:
            return msg
    raise AssertionError('no %r message within %.0f s' % (want_type, deadline_s))


def wait_close(ws):
    """The payload of the server's close frame (broadcasts before it are skipped)."""
    while True:
        op, payload = ws.recv()
        if op == gwtest.WS_CLOSE:
            return payload


def ping(ws, data):
    """Sends a ping; the payload of the pong (broadcasts before it are skipped)."""
    ws.send_frame(gwtest.WS_PING, data)
    while True:
        op, payload = ws.recv()
        if op == gwtest.WS_PONG:
            return payload


def close_code(payload):
    return struct.unpack('!H', payload[:2])[0]


class DashboardCase(gwtest.GatewayTestCase):
    """Two backends and a gateway with CONFIG."""

    def setUp(self):
        self.start_backends(2)
        self.start_gateway(CONFIG)


class DashboardTest(DashboardCase):

    def test_page(self):
        r = self.get('/dashboard')
        self.assertStatus(r, 200)
        self.assertEqual(r.header('content-type'), 'text/html; charset=utf-8')
        self.assertIn('no-', r.header('cache-control'))
        csp = r.header('content-security-policy')
        self.assertIsNotNone(csp)
        self.assertIn("default-src 'none'", csp)
        self.assertIn('connect-src', csp)
        page = r.body.decode()
        self.assertTrue(page.startswith('<!DOCTYPE html>'))
        for ident in ('rps', 'total-requests', 'p50', 'p99', 'error-rate', 'cache-hit',
                      'queue-depth', 'strategy', 'backends', 'top-keys', 'datacenters',
                      'log-body', 'sparkline', 'strategy-select', 'admin-token',
                      'rl-rejected', 'auth-jwt', 'ws-status'):
            self.assertIn('id="%s"' % ident, page, ident)
        self.assertIn('/ws', page)
        self.assertIn('sessionStorage', page)
        # nothing is fetched from elsewhere: no absolute URL in any src/href/url()
        self.assertIsNone(re.search(r'''(src|href)\s*=\s*["']?(https?:)?//''', page))
        self.assertIsNone(re.search(r'url\(\s*["\']?(https?:)?//', page))
        self.assertNotIn('@import', page)
        h = self.request('HEAD', '/dashboard')
        self.assertStatus(h, 200)
        self.assertEqual(h.body, b'')
        self.assertEqual(int(h.header('content-length')), len(r.body))
        self.assertStatus(self.request('POST', '/dashboard', body=b''), 405)

    def handshake(self, headers):
        c = self.raw()
        c.send(gwtest.build_request('GET', '/ws', headers, host='127.0.0.1'))
        return c.read_response()

    def test_handshake_refused(self):
        key = base64.b64encode(os.urandom(16)).decode()
        good = [('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                ('Sec-WebSocket-Key', key), ('Sec-WebSocket-Version', '13')]
        cases = {
            'plain GET': [],
            'no Upgrade': [h for h in good if h[0] != 'Upgrade'],
            'no Connection upgrade': [h if h[0] != 'Connection' else ('Connection', 'keep-alive')
                                      for h in good],
            'other protocol': [h if h[0] != 'Upgrade' else ('Upgrade', 'h2c') for h in good],
            'short key': [h if h[0] != 'Sec-WebSocket-Key' else (h[0], 'c2hvcnQ=')
                          for h in good],
            'key not base64': [h if h[0] != 'Sec-WebSocket-Key' else (h[0], '!' * 22 + '==')
                               for h in good],
            'no key': [h for h in good if h[0] != 'Sec-WebSocket-Key'],
        }
        for name, headers in cases.items():
            r = self.handshake(headers)
            self.assertEqual(r.status, 400, name)
            self.assertEqual(r.json()['error'], 'invalid_request', name)
            self.assertIn('message', r.json(), name)
        r = self.handshake([h if h[0] != 'Sec-WebSocket-Version' else (h[0], '8')
                            for h in good])
        self.assertEqual(r.status, 400)
        self.assertEqual(r.header('sec-websocket-version'), '13')
        # and the good one is accepted with the RFC 6455 accept value
        ws = self.ws()
        self.assertEqual(ws.response.status, 101)
        self.assertEqual(ws.response.header('upgrade').lower(), 'websocket')
        self.assertIsNotNone(ws.response.header('x-request-id'))

    def traffic(self, n=20):
        for _ in range(n):
            self.assertStatus(self.get('/api/x'), 200)

    def test_stream(self):
        ws = self.ws()
        self.traffic()
        stats = recv_json(ws, 'stats')
        for field in ('strategy', 'total_requests', 'backends', 'rps', 'p50_ms', 'p99_ms',
                      'error_rate', 'rate_limit', 'queue'):
            self.assertIn(field, stats)
        self.assertEqual(sorted(b['id'] for b in stats['backends']), ['b1', 'b2'])
        self.traffic(3)
        log = recv_json(ws, 'log')
        self.assertIn(log['method'], ('GET', 'HEAD'))
        self.assertIn('status', log)
        # the numbers move with the traffic
        before = stats['total_requests']
        self.traffic(10)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            later = recv_json(ws, 'stats')
            if later['total_requests'] >= before + 10:
                break
        else:
            self.fail('total_requests did not grow over the stream')
        # ping -> pong with the same payload (broadcasts may come first)
        self.assertEqual(ping(ws, b'are you there'), b'are you there')
        # close -> the same code back, then the server ends the connection
        payload = ws.close(1000, b'bye')
        self.assertIsNotNone(payload)
        self.assertEqual(close_code(payload), 1000)

    def test_close_then_eof(self):
        ws = self.ws()
        ws.send_frame(gwtest.WS_CLOSE, struct.pack('!H', 1001))
        self.assertEqual(close_code(wait_close(ws)), 1001)
        self.assertTrue(ws.conn.closed_by_peer(timeout=3))

    def test_unmasked_frame_refused(self):
        ws = self.ws()
        ws.send_frame(gwtest.WS_TEXT, b'hello', mask=False)
        self.assertEqual(close_code(wait_close(ws)), 1002)
        self.assertTrue(ws.conn.closed_by_peer(timeout=3))

    def test_oversized_frame_refused(self):
        ws = self.ws()
        ws.send_frame(gwtest.WS_BINARY, b'x' * (65536 + 1))
        self.assertEqual(close_code(wait_close(ws)), 1009)

    def test_stalled_client_does_not_block_others(self):
        stalled = self.ws()
        stalled.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ws = self.ws()
        self.traffic(5)
        for _ in range(3):
            recv_json(ws, 'stats')
        # the gateway still answers while one client reads nothing at all
        self.assertStatus(self.get('/health'), 200)
        stalled.conn.close()

    def test_sigterm_closes_going_away(self):
        ws = self.ws()
        self.gateway.proc.send_signal(15)
        payload = wait_close(ws)
        self.assertEqual(close_code(payload), 1001)
        ws.send_frame(gwtest.WS_CLOSE, payload[:2])
        self.gateway.proc.wait(timeout=5)
        self.assertEqual(self.gateway.proc.returncode, 0)


class WsMetricsTest(DashboardCase):
    """gatewayd_ws_clients, gatewayd_ws_messages_total and gatewayd_ws_disconnects_total
    in /metrics follow what the /ws clients do."""

    def scrape(self):
        r = self.get('/metrics')
        self.assertStatus(r, 200)
        return test_metrics.Scrape(r.body.decode())

    def ws_values(self, m):
        return (m.get('gatewayd_ws_clients'),
                m.get('gatewayd_ws_messages_total', result='sent'),
                m.get('gatewayd_ws_messages_total', result='dropped'),
                {r: m.get('gatewayd_ws_disconnects_total', reason=r)
                 for r in ('closed', 'error', 'silent', 'slow')})

    def test_ws_metrics(self):
        m = self.scrape()
        for name, typ in (('gatewayd_ws_clients', 'gauge'),
                          ('gatewayd_ws_messages_total', 'counter'),
                          ('gatewayd_ws_disconnects_total', 'counter')):
            self.assertEqual(m.fams.get(name, {}).get('type'), typ, name)
            self.assertTrue(m.fams[name].get('help'), name)
        self.assertEqual(self.ws_values(m), (0, 0, 0, {'closed': 0, 'error': 0, 'silent': 0,
                                                       'slow': 0}))
        a, b = self.ws(), self.ws()
        self.assertStatus(self.get('/api/x'), 200)
        recv_json(a, 'stats')
        recv_json(b, 'stats')
        clients, sent, dropped, _ = self.ws_values(self.scrape())
        self.assertEqual(clients, 2)
        self.assertGreaterEqual(sent, 2)  # at least the stats message, to each client
        self.assertEqual(dropped, 0)
        # a clean closing handshake, then a protocol error (an unmasked frame)
        self.assertEqual(close_code(a.close(1000)), 1000)
        b.send_frame(gwtest.WS_TEXT, b'hello', mask=False)
        self.assertEqual(close_code(wait_close(b)), 1002)
        self.assertTrue(b.conn.closed_by_peer(timeout=3))
        want = {'closed': 1, 'error': 1, 'silent': 0, 'slow': 0}
        got = []

        def ended():
            got[:] = [self.scrape()]
            return self.ws_values(got[0])[3] == want

        gwtest.wait_until(ended, timeout=5, message='disconnects counted')
        self.assertEqual(self.ws_values(got[0])[0], 0)
        tool = shutil.which('promtool')
        if tool is not None:
            p = subprocess.run([tool, 'check', 'metrics'], input=got[0].text.encode(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual((p.returncode, p.stdout.decode().strip()), (0, ''))


class DashboardTlsTest(gwtest.GatewayTestCase):
    """wss:// on a TLS listener: the same frames through OpenSSL."""

    def test_stream_over_tls(self):
        self.start_backends(1)
        cert, key = gwtest.self_signed_cert(self.tmp)
        gw = self.start_gateway('''
            listen 127.0.0.1:{port} tls cert=%s key=%s
            backend b1 127.0.0.1:{b1} dc=us-east
            route /api auth=none
        ''' % (cert, key))
        ws = gwtest.WebSocket.connect(gw.port, '/ws', tls=True)
        self.addCleanup(ws.conn.close)
        with gwtest.Client(gw.port, tls=True) as cl:
            for _ in range(3):
                self.assertStatus(cl.get('/api/tls'), 200)
        stats = recv_json(ws, 'stats')
        self.assertEqual([b['id'] for b in stats['backends']], ['b1'])
        self.assertEqual(ping(ws, b'tls'), b'tls')
        self.assertEqual(close_code(ws.close(1000)), 1000)


def chromium_binary():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over gwtest's WebSocket client."""

    def __init__(self, port):
        deadline = time.monotonic() + 20
        targets = None
        while time.monotonic() < deadline:
            try:
                r = gwtest.http_get(port, '/json/list', timeout=2)
                targets = [t for t in r.json() if t.get('type') == 'page']
                if targets:
                    break
            except (OSError, ValueError, gwtest.ProtocolError):
                pass
            time.sleep(0.2)
        if not targets:
            raise AssertionError('chromium DevTools did not list a page on port %d' % port)
        path = re.sub(r'^ws://[^/]+', '', targets[0]['webSocketDebuggerUrl'])
        self.ws = gwtest.WebSocket.connect(port, path, timeout=20)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({'id': self.next_id, 'method': method, 'params': params}))
        while True:
            data = b''
            while True:
                fin, op, payload = self.ws.recv_frame()
                data += payload
                if fin:
                    break
            msg = json.loads(data.decode())
            if msg.get('id') == self.next_id:
                if 'error' in msg:
                    raise AssertionError('%s: %r' % (method, msg['error']))
                return msg['result']

    def evaluate(self, expression):
        r = self.call('Runtime.evaluate', expression=expression, returnByValue=True)
        return r['result'].get('value')

    def close(self):
        self.ws.conn.close()


class DashboardBrowserTest(gwtest.GatewayTestCase):
    timeout = 90

    def check_admin_actions(self, cdp, gw):
        """The strategy selector: refused without a token, 401 JSON shown with a wrong
        one, applied with the admin token (which the page keeps in sessionStorage)."""
        def result():
            return cdp.evaluate("document.getElementById('admin-result').textContent")

        def apply(token):
            cdp.evaluate(
                "(() => { const t = (id) => document.getElementById(id);"
                " t('admin-result').textContent = '';"
                " if (%s !== null) { t('admin-token').value = %s; t('token-save').click(); }"
                " t('strategy-select').value = 'least_connections';"
                " t('strategy-apply').click(); })()" % (json.dumps(token), json.dumps(token)))
            gwtest.wait_until(lambda: result(), timeout=10, message='an admin result')
            return result()

        self.assertIn('admin token first', apply(None))
        refused = apply('not-the-token')
        self.assertIn('401', refused)
        self.assertIn('invalid_token', refused)
        ok = apply(gwtest.ADMIN_TOKEN)
        self.assertIn('-> 200', ok)
        self.assertEqual(gwtest.http_get(gw.port, '/stats').json()['strategy'],
                         'least_connections')
        self.assertEqual(cdp.evaluate("sessionStorage.getItem('gatewayd-admin-token')"),
                         gwtest.ADMIN_TOKEN)
        gwtest.wait_until(
            lambda: cdp.evaluate("document.getElementById('strategy').textContent")
            == 'least_connections', timeout=10, message='the page shows the new strategy')

    def test_live_numbers_in_chromium(self):
        chromium = chromium_binary()
        if chromium is None:
            self.skipTest('chromium not installed (apt-get install chromium)')
        self.start_backends(2)
        gw = self.start_gateway(CONFIG)
        profile = os.path.join(self.tmp, 'chromium-profile')
        os.makedirs(profile)
        dport = gwtest.free_port()
        self.start_process('chromium', [
            chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
            '--no-first-run', '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--disable-dev-shm-usage', '--user-data-dir=' + profile,
            '--remote-debugging-port=%d' % dport, '--window-size=1400,1100',
            gw.url('/dashboard')])
        cdp = DevTools(dport)
        self.addCleanup(cdp.close)

        stop = threading.Event()

        def traffic():
            while not stop.is_set():
                try:
                    gwtest.http_get(gw.port, '/api/browser', timeout=2)
                except (OSError, gwtest.ProtocolError):
                    pass
                time.sleep(0.02)

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        self.addCleanup(stop.set)

        def read():
            """The page's numbers, or {} while it is still loading."""
            text = cdp.evaluate(
                "(() => { const t = (id) => document.getElementById(id);"
                " if (!t('log-body')) return null;"
                " return JSON.stringify({status: t('ws-status').textContent,"
                " total: t('total-requests').textContent, msgs: t('msg-count').textContent,"
                " rps: t('rps').textContent, backends: t('backends').rows.length,"
                " log: t('log-body').rows.length, dcs: String(t('datacenters').rows.length)});"
                " })()")
            return json.loads(text) if text else {}

        def number(text):
            digits = text.replace(',', '')
            return int(digits) if digits.isdigit() else -1

        gwtest.wait_until(lambda: number(read().get('total', '')) > 0, timeout=15,
                          message='the dashboard shows a first stats message')
        first = read()
        self.assertEqual(first['status'], 'live')
        time.sleep(2.5)
        second = read()
        self.assertGreater(number(second['total']), number(first['total']),
                           'total requests did not update: %r then %r' % (first, second))
        self.assertGreater(number(second['msgs']), number(first['msgs']))
        self.assertEqual(second['backends'], 2)
        self.assertGreater(second['log'], 0)

        self.assertGreater(number(second['dcs']), 0)
        self.check_admin_actions(cdp, gw)

        shot = cdp.call('Page.captureScreenshot', format='png')
        os.makedirs(ARTIFACT_DIR, exist_ok=True)
        path = os.path.join(ARTIFACT_DIR, 'dashboard.png')
        png = base64.b64decode(shot['data'])
        self.assertTrue(png.startswith(b'\x89PNG'))
        with open(path, 'wb') as f:
            f.write(png)
        print('\n  screenshot: %s (%d bytes); numbers: %r -> %r'
              % (path, len(png), first, second))
        stop.set()
        t.join(timeout=5)
