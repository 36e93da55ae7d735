"""End-to-end test that no secret leaks: a run that uses every secret the gateway handles
(JWT_SECRET_KEY, GATEWAYD_ADMIN_TOKEN, API keys in X-API-Key and ?api_key=, passwords at
/auth/register and /auth/login, refresh and access tokens, the Authorization header, and
wrong ones of each), then a search of everything the gateway shows: its stderr log, the
access_log file, /stats, /logs, /admin/logs, /metrics, /geo/stats, the error bodies it
produced, `gatectl status --json` and the PUB stream. None may contain any of them.

Admin endpoints are also checked unreachable from outside admin_allow (a peer that is not
in it gets 403 even with the right token).
"""

import base64
import json
import os
import secrets
import subprocess
import threading
import time

import gwtest
import nngsub
from gwtest import RawConn

GATECTL = os.path.join(gwtest.BIN, 'gatectl')


class PubCollector(threading.Thread):
    """Every PUB-stream message, collected in the background until stop()."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.sub = nngsub.NngSub(url)
        self.messages = []
        self.running = True

    def run(self):
        # the socket is used and closed by this thread only: nng_close from another
        # thread races this one's receive inside libnng, where no signal reaches
        try:
            while self.running:
                data = self.sub.recv(timeout=0.2)
                if data is not None:
                    self.messages.append(data)
        finally:
            self.sub.close()

    def stop(self):
        self.running = False
        self.join(5)


class SecretsTest(gwtest.GatewayTestCase):
    timeout = 120

    def setUp(self):
        self._gw_state()
        if nngsub.lib() is None:
            self.skipTest('libnng is not installed')
        self.jwt_secret = 'jwtsecret-' + secrets.token_hex(20)
        self.admin_token = 'admintoken-' + secrets.token_hex(20)
        self.start_backend('b1')
        self.access_log = os.path.join(self.tmp, 'access.log')
        self.gw = self.start_gateway('''
            backend b1 127.0.0.1:{b1} dc=us-east
            access_log %s
            admin_allow 127.0.0.1/32
            ip_limit_exempt 127.0.0.0/8
            tier free 1000/60s
            route /k auth=apikey
            route /j auth=jwt
            route / auth=any
        ''' % self.access_log, env={'JWT_SECRET_KEY': self.jwt_secret,
                                    'GATEWAYD_ADMIN_TOKEN': self.admin_token})
        self.pub = PubCollector(self.gw.publish_url)
        self.pub.start()
        self.addCleanup(self.pub.stop)
        self.secrets = {'JWT_SECRET_KEY': self.jwt_secret, 'admin token': self.admin_token}
        self.error_bodies = []
        time.sleep(0.3)  # the SUB socket connects

    def secret(self, name, value):
        self.assertGreaterEqual(len(value), 12, name)
        self.secrets[name] = value
        # a token's signature alone is the secret part of a JWT
        if value.count('.') == 2:
            self.secrets[name + ' (signature)'] = value.rsplit('.', 1)[1]
        return value

    def call(self, method, path, headers=None, body=None, expect=None):
        h = dict(headers or {})
        data = None
        if body is not None:
            h['Content-Type'] = 'application/json'
            data = json.dumps(body).encode()
        r = self.request(method, path, h, data)
        if expect is not None:
            self.assertEqual(r.status, expect, '%s %s: %d %r' % (method, path, r.status,
                                                                r.body[:300]))
        if r.status >= 400:
            # the body and headers only: the request line is the test's own text
            self.error_bodies.append(r.raw_head.decode('latin-1') + r.text)
        return r

    def use_every_secret(self):
        email = 'secret-%s@example.com' % secrets.token_hex(4)
        password = self.secret('password', 'pw-' + secrets.token_hex(12))
        wrong_password = self.secret('wrong password', 'wrongpw-' + secrets.token_hex(12))
        j = self.call('POST', '/auth/register', body={'email': email, 'password': password},
                      expect=201).json()
        self.secret('access token 1', j['access_token'])
        refresh1 = self.secret('refresh token 1', j['refresh_token'])
        self.call('POST', '/auth/login', body={'email': email, 'password': wrong_password},
                  expect=401)
        self.call('POST', '/auth/register', body={'email': email, 'password': password},
                  expect=409)
        j = self.call('POST', '/auth/login', body={'email': email, 'password': password},
                      expect=200).json()
        self.secret('access token 2', j['access_token'])
        refresh2 = self.secret('refresh token 2', j['refresh_token'])
        j = self.call('POST', '/auth/refresh', body={'refresh_token': refresh2},
                      expect=200).json()
        access = self.secret('access token 3', j['access_token'])
        self.secret('refresh token 3', j['refresh_token'])
        # reuse of a rotated refresh token (revokes the family), and an unknown one
        self.call('POST', '/auth/refresh', body={'refresh_token': refresh2})
        self.call('POST', '/auth/refresh', body={'refresh_token': refresh1 + 'x'})
        j = self.call('POST', '/auth/login', body={'email': email, 'password': password},
                      expect=200).json()
        access = self.secret('access token 4', j['access_token'])
        bearer = {'Authorization': 'Bearer ' + access}
        key = self.secret('api key', self.call('POST', '/auth/api-keys', bearer,
                                               expect=201).json()['api_key'])
        bad_key = self.secret('wrong api key', 'gw_' + secrets.token_hex(20))
        bad_token = self.secret('wrong token', access.rsplit('.', 1)[0] + '.' +
                                base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('='))
        basic = self.secret('basic credentials', base64.b64encode(
            ('%s:%s' % (email, password)).encode()).decode())

        for i in range(3):
            self.call('GET', '/k/header/%d' % i, {'X-API-Key': key}, expect=200)
            self.call('GET', '/k/query/%d?a=1&api_key=%s&b=2' % (i, key), expect=200)
            self.call('GET', '/j/bearer/%d' % i, bearer, expect=200)
            self.call('GET', '/any/%d?api_key=%s' % (i, key), expect=200)
        self.call('GET', '/k/bad', {'X-API-Key': bad_key}, expect=401)
        self.call('GET', '/k/badq?api_key=' + bad_key, expect=401)
        self.call('GET', '/j/bad', {'Authorization': 'Bearer ' + bad_token}, expect=401)
        self.call('GET', '/j/basic', {'Authorization': 'Basic ' + basic})
        self.call('GET', '/auth/me', bearer, expect=200)
        self.call('GET', '/auth/api-keys', bearer, expect=200)
        self.call('POST', '/auth/api-keys/rotate', {'X-API-Key': key})
        admin = {'Authorization': 'Bearer ' + self.admin_token}
        wrong_admin = {'Authorization': 'Bearer ' + self.secret(
            'wrong admin token', 'wrongadmin-' + secrets.token_hex(16))}
        self.call('GET', '/admin/users', wrong_admin, expect=401)
        self.call('GET', '/admin/users', {'Authorization': 'Bearer ' + access})
        self.call('GET', '/admin/users', admin, expect=200)
        self.call('POST', '/admin/block_key', admin, {'key': bad_key})
        self.call('POST', '/auth/logout', bearer, {'refresh_token': refresh2})
        self.call('GET', '/j/after-logout', bearer)
        return admin

    def gatectl_status(self):
        if not os.access(GATECTL, os.X_OK):
            return ''
        out = ''
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            cp = subprocess.run([GATECTL, '-s', self.gw.control_url, '--json', 'status'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=15)
            out = cp.stdout.decode() + cp.stderr.decode()
            if cp.returncode == 0:
                break
            time.sleep(0.1)
        return out

    def test_no_secret_in_any_output(self):
        admin = self.use_every_secret()
        time.sleep(1.5)  # a stats message, the access log flushed
        places = {}
        for path in ('/stats', '/metrics', '/geo/stats', '/logs', '/admin/logs',
                     '/logs?n=1000', '/admin/logs?limit=1000'):
            r = self.request('GET', path, admin)
            self.assertEqual(r.status, 200, '%s: %d %r' % (path, r.status, r.body[:200]))
            places['GET ' + path] = r.text
        places['gatectl status --json'] = self.gatectl_status()
        self.assertIn('/k/header/0', places['GET /logs'])
        self.pub.stop()
        self.assertGreater(len(self.pub.messages), 0, 'nothing on the PUB stream')
        places['PUB stream'] = b'\n'.join(self.pub.messages).decode('utf-8', 'replace')
        places['error bodies'] = '\n'.join(self.error_bodies)
        self.assertGreater(len(self.error_bodies), 5)
        with open(self.access_log, 'rb') as f:
            places['access_log'] = f.read().decode('utf-8', 'replace')
        self.assertIn('/k/query/0', places['access_log'])
        self.gw.stop()
        places['stderr log'] = self.gw.proc.log()
        leaks = []
        for where, text in places.items():
            for name, value in self.secrets.items():
                if value in text:
                    i = text.index(value)
                    leaks.append('%s in %s: ...%s...' % (name, where,
                                                        text[max(0, i - 80):i + 20]))
        self.assertEqual(leaks, [], 'secrets leaked:\n' + '\n'.join(leaks))

    def test_admin_unreachable_from_outside_admin_allow(self):
        # admin_allow is 127.0.0.1/32: a peer at 127.0.0.2 is outside it
        import socket
        for path in ('/admin/users', '/admin/logs', '/logs'):
            with self.subTest(path=path):
                s = socket.create_connection((gwtest.HOST, self.gw.port), timeout=5,
                                             source_address=('127.0.0.2', 0))
                c = RawConn.__new__(RawConn)
                c.host, c.port, c.sock = gwtest.HOST, self.gw.port, s
                c.buf, c.eof, c.received = bytearray(), False, 0
                try:
                    r = c.request('GET', path, {'Authorization': 'Bearer ' + self.admin_token})
                finally:
                    c.close()
                self.assertEqual(r.status, 403, r.body[:200])
                self.assertNotIn(self.admin_token, r.text)
        self.assertEqual(self.request('GET', '/admin/users', {
            'Authorization': 'Bearer ' + self.admin_token}).status, 200)


if __name__ == '__main__':
    import unittest
    unittest.main()
