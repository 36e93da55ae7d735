"""End-to-end tests of gatewayd's admin API over HTTP (SPEC sections 5 and 6).

- who may call it: no token / a wrong token (401), a user's token (403), an address
  outside `admin_allow` (403 forbidden, forged X-Forwarded-For does not help, a trusted
  proxy does), an access JWT with role=admin;
- /admin/users never shows password hashes or whole keys;
- /admin/upgrade_tier by api_key and by user_id, effective at once;
- /admin/block_key and /admin/unblock_key, timed blocks;
- /admin/block_ip and /admin/unblock_ip with addresses and CIDRs, for every path;
- /admin/logs: the audit log of admin actions, newest first, ?limit=N;
  /change_strategy is audited. (/logs is the access log: test_accesslog.py.)

No HTTP endpoint makes an admin user, so the role=admin test promotes a user in the
SQLite database while the gateway is stopped (as an operator would), then logs in.
Client addresses other than 127.0.0.1 come from X-Forwarded-For through
`trusted_proxy 127.0.0.0/8`, in the documentation ranges.
"""

import hashlib
import json
import sqlite3
import time

import gwtest
from test_identity import IdentityCase, bearer, jwt_claims

ADMIN_ENDPOINTS = [
    ('GET', '/admin/users', None),
    ('GET', '/admin/logs', None),
    ('GET', '/logs', None),
    ('POST', '/admin/upgrade_tier', {'user_id': 1, 'tier': 'enterprise'}),
    ('POST', '/admin/block_key', {'api_key': 'gk_x'}),
    ('POST', '/admin/unblock_key', {'api_key': 'gk_x'}),
    ('POST', '/admin/block_ip', {'ip': '203.0.113.0/24'}),
    ('POST', '/admin/unblock_ip', {'ip': '203.0.113.0/24'}),
    ('POST', '/change_strategy', {'strategy': 'ip_hash'}),
]

ADMIN_CONFIG = '''
    backend b1 127.0.0.1:{b1}
    tier free 5/60s
    ban threshold=3 base=2s multiplier=2 max=10s
    ip_limit_exempt 127.0.0.0/8
    trusted_proxy 127.0.0.0/8
    route / auth=none
    route /jwt auth=jwt
    route /key auth=apikey
    route /any auth=any
'''


def xff(ip):
    return {'X-Forwarded-For': ip}


class AdminCase(IdentityCase):
    CONFIG = ADMIN_CONFIG

    def call(self, method, path, body=None, headers=None):
        h = [('Content-Type', 'application/json')] if body is not None else []
        h += list((headers or {}).items())
        return self.request(method, path, h,
                            json.dumps(body).encode() if body is not None else None)

    def call_admin(self, method, path, body=None, headers=None):
        h = dict(self.admin_headers())
        h.update(headers or {})
        return self.call(method, path, body, h)

    def logs(self, limit=None, path='/admin/logs', headers=None):
        r = self.get(path + ('?limit=%d' % limit if limit is not None else ''),
                     headers or self.admin_headers())
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertIsInstance(j.get('entries'), list, j)
        return j['entries']

    def strategy(self):
        return self.get('/stats').json()['strategy']


# ---------------------------------------------------------------- who may call

class AdminAuthTest(AdminCase):
    def setUp(self):
        super().setUp()
        self.start()

    def test_without_token_is_401(self):
        for method, path, body in ADMIN_ENDPOINTS:
            with self.subTest(path=path):
                r = self.call(method, path, body)
                self.assertError(r, 401)
                self.assertTrue((r.header('WWW-Authenticate') or '').startswith('Bearer'),
                                r.headers)
        # and nothing happened
        self.assertEqual(self.strategy(), 'round_robin')
        self.assertEqual(self.get('/x', xff('203.0.113.5')).status, 200)

    def test_wrong_token_is_401(self):
        for tok in ('nope', gwtest.ADMIN_TOKEN + 'x', gwtest.ADMIN_TOKEN[:-1],
                    gwtest.ADMIN_TOKEN.upper(), 'a.b.c' + 'x' * 30):
            for method, path, body in ADMIN_ENDPOINTS:
                with self.subTest(tok=tok, path=path):
                    r = self.call(method, path, body, {'Authorization': 'Bearer ' + tok})
                    self.assertError(r, 401)
        for scheme in ('Basic ', 'Token ', ''):
            r = self.call('GET', '/admin/users', None,
                          {'Authorization': scheme + gwtest.ADMIN_TOKEN})
            self.assertError(r, 401)
        r = self.call('GET', '/admin/users', None, {'X-API-Key': gwtest.ADMIN_TOKEN})
        self.assertError(r, 401)
        self.assertEqual(self.strategy(), 'round_robin')

    def test_a_users_token_or_key_is_not_admin(self):
        u = self.register()
        key = self.create_key(u['access_token'])['api_key']
        for method, path, body in ADMIN_ENDPOINTS:
            with self.subTest(path=path):
                self.assertError(self.call(method, path, body, bearer(u['access_token'])), 403,
                                 'forbidden')
                self.assertEqual(self.call(method, path, body, {'X-API-Key': key}).status, 401)
        self.assertEqual(self.strategy(), 'round_robin')
        self.assertEqual(self.get('/auth/me', bearer(u['access_token'])).json()['tier'], 'free')

    def test_admin_token_works(self):
        for method, path, body in ADMIN_ENDPOINTS[:3]:
            r = self.call_admin(method, path, body)
            self.assertEqual(r.status, 200, r.body)
            self.assertIsInstance(r.json(), dict)


class AdminRoleJwtTest(AdminCase):
    def test_role_admin_jwt_is_accepted(self):
        self.start()
        boss, worker = self.register_many(2)
        # no endpoint makes admins: promote in the database with the gateway stopped
        self.gw.stop()
        db = sqlite3.connect(self.db_path(), timeout=5)
        try:
            cols = [row[1] for row in db.execute('PRAGMA table_info(users)')]
            if 'role' not in cols:
                self.skipTest('users has no role column (%r): no way to make an admin' % cols)
            db.execute("UPDATE users SET role = 'admin' WHERE id = ?", (boss['user_id'],))
            db.commit()
        finally:
            db.close()
        self.restart_same_db()
        r = self.login(boss['email'])
        self.assertEqual(r.status, 200, r.body)
        tok = r.json()['access_token']
        self.assertEqual(jwt_claims(tok).get('role'), 'admin')
        h = bearer(tok)
        r = self.call('GET', '/admin/users', None, h)
        self.assertEqual(r.status, 200, r.body)
        r = self.call('POST', '/admin/upgrade_tier',
                      {'user_id': worker['user_id'], 'tier': 'basic'}, h)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.get('/auth/me', bearer(worker['access_token'])).json()['tier'],
                         'basic')
        r = self.call('POST', '/change_strategy', {'strategy': 'least_connections'}, h)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.strategy(), 'least_connections')
        # the audit log names the admin user as the actor
        entries = self.logs(limit=5)
        up = [e for e in entries if 'upgrade_tier' in json.dumps(e)]
        self.assertTrue(up, entries)
        self.assertIn(str(boss['user_id']), json.dumps(up[0]))
        # a non-admin's token is still refused
        self.assertError(self.call('GET', '/admin/users', None, bearer(worker['access_token'])),
                         403, 'forbidden')
        # and the admin's token after logout is refused
        self.assertEqual(self.request('POST', '/auth/logout', h).status, 200)
        self.assertTokenError(self.call('GET', '/admin/users', None, h), 'token_revoked')


class AdminAllowTest(AdminCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1}
        admin_allow 10.0.0.0/8
        ip_limit_exempt 127.0.0.0/8
        route / auth=none
    '''

    def test_outside_admin_allow_is_403_even_with_the_token(self):
        self.start()
        for method, path, body in ADMIN_ENDPOINTS:
            with self.subTest(path=path):
                self.assertError(self.call_admin(method, path, body), 403, 'forbidden')
                # no trusted proxy: a forged X-Forwarded-For changes nothing
                self.assertError(self.call_admin(method, path, body, xff('10.1.2.3')), 403,
                                 'forbidden')
        self.assertEqual(self.strategy(), 'round_robin')
        self.assertEqual(self.get('/health').status, 200)
        self.assertEqual(self.get('/x').status, 200)


class AdminAllowViaProxyTest(AdminCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1}
        admin_allow 10.0.0.0/8
        trusted_proxy 127.0.0.0/8
        route / auth=none
    '''

    def test_admin_allow_applies_to_the_client_behind_a_trusted_proxy(self):
        self.start()
        self.assertEqual(self.call_admin('GET', '/admin/users', None, xff('10.1.2.3')).status,
                         200)
        self.assertError(self.call_admin('GET', '/admin/users', None, xff('192.0.2.1')), 403,
                         'forbidden')
        self.assertError(self.call_admin('GET', '/admin/users'), 403, 'forbidden')
        # the right-most untrusted hop counts, not a left-most forged one
        self.assertError(self.call_admin('GET', '/admin/users', None,
                                         xff('10.1.2.3, 192.0.2.1')), 403, 'forbidden')


# ---------------------------------------------------------------- /admin/users

class AdminUsersTest(AdminCase):
    def test_users_list_without_secrets(self):
        self.start()
        a, b = self.register_many(2)
        ka = self.create_key(a['access_token'])
        kb = self.create_key(b['access_token'])
        r = self.call_admin('GET', '/admin/users')
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertIsInstance(j.get('users'), list, j)
        by_id = {u.get('user_id'): u for u in j['users']}
        for u in (a, b):
            self.assertIn(u['user_id'], by_id, j)
            self.assertEqual(by_id[u['user_id']].get('email'), u['email'])
            self.assertEqual(by_id[u['user_id']].get('tier'), 'free')
        body = r.body
        for k in (ka, kb):
            self.assertNotIn(k['api_key'].encode(), body, 'a whole API key in /admin/users')
            self.assertNotIn(hashlib.sha256(k['api_key'].encode()).hexdigest().encode(), body,
                             'an API key hash in /admin/users')
            self.assertIn(k['prefix'].encode(), body)
        for marker in (b'$2b$', b'$2a$', b'$2y$', b'pwhash', b'password',
                       a['password'].encode()):
            self.assertNotIn(marker, body)
        for tok in (a['access_token'], a['refresh_token']):
            self.assertNotIn(tok.encode(), body)


# ---------------------------------------------------------------- /admin/upgrade_tier

class UpgradeTierTest(AdminCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()
        self.key = self.create_key(self.user['access_token'])['api_key']

    def test_upgrade_by_api_key_applies_at_once(self):
        kh = {'X-API-Key': self.key}
        for i in range(5):
            self.assertEqual(self.get('/key/%d' % i, kh).status, 200)
        self.assert429(self.get('/key/over', kh), 'rate_limited', 'free', 5, 60)
        r = self.call_admin('POST', '/admin/upgrade_tier', {'api_key': self.key,
                                                            'tier': 'premium'})
        self.assertEqual(r.status, 200, r.body)
        self.assertIsInstance(r.json(), dict)
        self.assertNotIn(self.key.encode(), r.body)
        # 5 of premium's 100 are used: the next request passes at once
        r = self.get('/key/after', kh)
        self.assertEqual(r.status, 200, 'still limited after the upgrade: %r' % r.body)
        self.assertEqual(r.header('X-RateLimit-Limit'), '100')
        self.assertEqual(r.header('RateLimit-Policy'), '"premium";q=100;w=60')
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'premium')
        # the key's user moved too (an owned key is limited as its user)
        self.assertEqual(self.get('/auth/me', bearer(self.user['access_token'])).json()['tier'],
                         'premium')

    def test_upgrade_by_user_id_applies_at_once(self):
        h = bearer(self.user['access_token'])
        for i in range(2):
            self.assertEqual(self.get('/jwt/%d' % i, h).status, 200)
        r = self.call_admin('POST', '/admin/upgrade_tier', {'user_id': self.user['user_id'],
                                                            'tier': 'basic'})
        self.assertEqual(r.status, 200, r.body)
        r = self.get('/jwt/after', h)  # the token says free; the user is basic now
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header('X-RateLimit-Limit'), '20')
        self.assertEqual(r.header('RateLimit-Policy'), '"basic";q=20;w=60')
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'basic')
        # 3 requests made in this window: 17 of basic's 20 are left
        self.assertEqual(r.header('X-RateLimit-Remaining'), '17')
        r = self.get('/key/k', {'X-API-Key': self.key})
        self.assertEqual(r.header('RateLimit-Policy'), '"basic";q=20;w=60')
        u = self.get('/usage', h).json()
        self.assertEqual((u['tier'], u['limit']), ('basic', 20))
        # new tokens carry the new tier
        self.assertEqual(self.login(self.user['email']).json()['tier'], 'basic')

    def test_bad_upgrades(self):
        cases = [
            ({'user_id': self.user['user_id'], 'tier': 'platinum'}, 400),
            ({'user_id': self.user['user_id']}, 400),
            ({'tier': 'premium'}, 400),
            ({'user_id': 999999, 'tier': 'premium'}, 404),
            ({'api_key': 'gk_' + '0' * 64, 'tier': 'premium'}, 404),
        ]
        for body, status in cases:
            with self.subTest(body=body):
                self.assertError(self.call_admin('POST', '/admin/upgrade_tier', body), status)
        r = self.request('POST', '/admin/upgrade_tier',
                         [('Content-Type', 'application/json')] +
                         list(self.admin_headers().items()), b'{not json')
        self.assertError(r, 400, 'invalid_request')
        self.assertEqual(self.get('/auth/me', bearer(self.user['access_token'])).json()['tier'],
                         'free')


class LegacyKeyAdminTest(AdminCase):
    """An ownerless key is limited, upgraded and blocked as itself (SPEC section 5)."""

    def test_ownerless_key_upgrade_and_block(self):
        self.start()
        u = self.register()
        legacy = self.plant_legacy_key('free')
        kh = {'X-API-Key': legacy}
        r = self.get('/key/1', kh)
        self.assertEqual(r.status, 200, r.body)
        self.assertRateHeaders(r, 5, 4, 60, 'free', reset=12)
        r = self.call_admin('GET', '/admin/users')
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn(legacy.encode(), r.body)
        self.assertIn(legacy[:12].encode(), r.body)
        r = self.call_admin('POST', '/admin/upgrade_tier', {'api_key': legacy, 'tier': 'basic'})
        self.assertEqual(r.status, 200, r.body)
        r = self.get('/key/2', kh)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header('RateLimit-Policy'), '"basic";q=20;w=60')
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'basic')
        # no user was touched
        self.assertEqual(self.get('/auth/me', bearer(u['access_token'])).json()['tier'], 'free')
        self.assertEqual(self.call_admin('POST', '/admin/block_key',
                                         {'api_key': legacy}).status, 200)
        self.assertError(self.get('/key/3', kh), 403, 'blocked')
        self.assertEqual(self.get('/jwt/u', bearer(u['access_token'])).status, 200)
        self.assertEqual(self.call_admin('POST', '/admin/unblock_key',
                                         {'api_key': legacy}).status, 200)
        self.assertEqual(self.get('/key/4', kh).status, 200)


# ---------------------------------------------------------------- key blocks

class BlockKeyTest(AdminCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()
        self.key = self.create_key(self.user['access_token'])['api_key']
        self.kh = {'X-API-Key': self.key}

    def test_block_and_unblock_key(self):
        self.assertEqual(self.get('/key/before', self.kh).status, 200)
        r = self.call_admin('POST', '/admin/block_key', {'api_key': self.key})
        self.assertEqual(r.status, 200, r.body)
        self.assertIsInstance(r.json(), dict)
        self.assertNotIn(self.key.encode(), r.body)
        for path in ('/key/x', '/any/x', '/anon'):
            with self.subTest(path=path):
                self.assertError(self.get(path, self.kh), 403, 'blocked')
        self.assertError(self.get('/key/q?api_key=' + self.key), 403, 'blocked')
        u = self.get('/usage', self.kh)
        if u.status == 200:
            self.assertIs(u.json()['blocked'], True)
        else:
            self.assertError(u, 403, 'blocked')
        # unblocked: served again
        r = self.call_admin('POST', '/admin/unblock_key', {'api_key': self.key})
        self.assertEqual(r.status, 200, r.body)
        r = self.get('/key/after', self.kh)
        self.assertEqual(r.status, 200, r.body)
        self.assertIs(self.get('/usage', self.kh).json()['blocked'], False)

    @gwtest.timeout(30)
    def test_timed_block_expires(self):
        r = self.call_admin('POST', '/admin/block_key', {'api_key': self.key, 'duration': 2})
        self.assertEqual(r.status, 200, r.body)
        self.assertError(self.get('/key/now', self.kh), 403, 'blocked')
        t0 = time.monotonic()
        gwtest.wait_until(lambda: self.get('/key/later', self.kh).status == 200, timeout=6,
                          interval=0.25, message='the 2s block to end')
        self.assertGreater(time.monotonic() - t0, 0.5, 'the block ended too soon')
        # "10m"-style durations are accepted too
        r = self.call_admin('POST', '/admin/block_key', {'api_key': self.key, 'duration': '10m'})
        self.assertEqual(r.status, 200, r.body)
        self.assertError(self.get('/key/again', self.kh), 403, 'blocked')

    def test_bad_block_requests(self):
        self.assertError(self.call_admin('POST', '/admin/block_key',
                                         {'api_key': 'gk_' + '0' * 64}), 404)
        self.assertError(self.call_admin('POST', '/admin/block_key', {}), 400, 'invalid_request')
        self.assertError(self.call_admin('POST', '/admin/block_key',
                                         {'api_key': self.key, 'duration': -5}), 400)
        self.assertError(self.call_admin('POST', '/admin/block_key',
                                         {'api_key': self.key, 'duration': 'soon'}), 400)
        self.assertEqual(self.get('/key/fine', self.kh).status, 200)


# ---------------------------------------------------------------- IP blocks

class BlockIpTest(AdminCase):
    def setUp(self):
        super().setUp()
        self.start()

    def test_cidr_block_covers_every_path(self):
        u = self.register()
        r = self.call_admin('POST', '/admin/block_ip', {'ip': '192.0.2.0/24'})
        self.assertEqual(r.status, 200, r.body)
        self.assertIsInstance(r.json(), dict)
        blocked = xff('192.0.2.77')
        for method, path in (('GET', '/health'), ('GET', '/ready'), ('GET', '/stats'),
                             ('GET', '/metrics'), ('GET', '/x'), ('GET', '/usage'),
                             ('GET', '/.well-known/jwks.json'), ('POST', '/auth/login'),
                             ('POST', '/auth/register'), ('GET', '/admin/users'),
                             ('GET', '/nope/404')):
            with self.subTest(path=path):
                r = self.request(method, path, blocked)
                self.assertError(r, 403, 'ip_blocked')
        # credentials do not help
        r = self.get('/jwt/x', dict(blocked, **bearer(u['access_token'])))
        self.assertError(r, 403, 'ip_blocked')
        # other clients are fine
        for ip in ('192.0.3.1', '198.51.100.7', '127.0.0.1'):
            self.assertEqual(self.get('/health', xff(ip)).status, 200, ip)
        self.assertEqual(self.get('/x', xff('192.0.1.255')).status, 200)
        r = self.call_admin('POST', '/admin/unblock_ip', {'ip': '192.0.2.0/24'})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.get('/health', blocked).status, 200)
        self.assertEqual(self.get('/x', blocked).status, 200)

    def test_single_address_block(self):
        r = self.call_admin('POST', '/admin/block_ip', {'ip': '203.0.113.9'})
        self.assertEqual(r.status, 200, r.body)
        self.assertError(self.get('/x', xff('203.0.113.9')), 403, 'ip_blocked')
        self.assertEqual(self.get('/x', xff('203.0.113.10')).status, 200)
        self.assertEqual(self.call_admin('POST', '/admin/unblock_ip',
                                         {'ip': '203.0.113.9'}).status, 200)
        self.assertEqual(self.get('/x', xff('203.0.113.9')).status, 200)

    @gwtest.timeout(30)
    def test_timed_ip_block_expires(self):
        r = self.call_admin('POST', '/admin/block_ip', {'ip': '198.51.100.0/24', 'duration': 2})
        self.assertEqual(r.status, 200, r.body)
        self.assertError(self.get('/health', xff('198.51.100.1')), 403, 'ip_blocked')
        gwtest.wait_until(lambda: self.get('/health', xff('198.51.100.1')).status == 200,
                          timeout=6, interval=0.25, message='the 2s IP block to end')

    def test_bad_ip_is_400(self):
        for ip in ('not-an-ip', '300.1.1.1', '192.0.2.0/33', '', 5):
            with self.subTest(ip=ip):
                self.assertError(self.call_admin('POST', '/admin/block_ip', {'ip': ip}), 400,
                                 'invalid_request')
        self.assertError(self.call_admin('POST', '/admin/block_ip', {}), 400, 'invalid_request')


# ---------------------------------------------------------------- audit log

class AuditLogTest(AdminCase):
    def setUp(self):
        super().setUp()
        self.start()

    def entry_text(self, e):
        return json.dumps(e)

    def test_admin_actions_are_logged_newest_first(self):
        u = self.register()
        key = self.create_key(u['access_token'])
        steps = [
            ('upgrade_tier', 'POST', '/admin/upgrade_tier', {'user_id': u['user_id'],
                                                             'tier': 'basic'}),
            ('block_key', 'POST', '/admin/block_key', {'api_key': key['api_key']}),
            ('unblock_key', 'POST', '/admin/unblock_key', {'api_key': key['api_key']}),
            ('block_ip', 'POST', '/admin/block_ip', {'ip': '203.0.113.0/24'}),
            ('unblock_ip', 'POST', '/admin/unblock_ip', {'ip': '203.0.113.0/24'}),
            ('change_strategy', 'POST', '/change_strategy', {'strategy': 'ip_hash'}),
        ]
        for name, method, path, body in steps:
            r = self.call_admin(method, path, body)
            self.assertEqual(r.status, 200, '%s: %r' % (name, r.body))

        def complete():
            e = self.logs()
            return e if any('change_strategy' in self.entry_text(x) for x in e) else None
        entries = gwtest.wait_until(complete, timeout=5, message='change_strategy in the log')
        for e in entries:
            self.assertIsInstance(e, dict)
        names = [s[0] for s in steps]
        pos = {}
        for name in names:
            hits = [i for i, e in enumerate(entries)
                    if e.get('action') == name or
                    (name not in ('block_key', 'block_ip') and name in self.entry_text(e))]
            self.assertTrue(hits, '%s not in the audit log: %s' % (name, entries))
            pos[name] = hits[0]
        # newest first
        order = sorted(names, key=lambda n: pos[n])
        self.assertEqual(order, list(reversed(names)), entries)
        # the change_strategy entry says what it changed to
        self.assertIn('ip_hash', self.entry_text(entries[pos['change_strategy']]))
        # who did it and when
        times = [e.get('time', e.get('at', e.get('timestamp'))) for e in entries]
        if all(isinstance(t, (int, float)) for t in times):
            self.assertEqual(times, sorted(times, reverse=True))
            self.assertLessEqual(abs(times[0] - time.time()), 60)
        # no secrets in the log
        body = self.get('/admin/logs', self.admin_headers()).body
        self.assertNotIn(key['api_key'].encode(), body)
        self.assertNotIn(gwtest.ADMIN_TOKEN.encode(), body)

    def test_limit(self):
        for ip in ('203.0.113.1', '203.0.113.2', '203.0.113.3'):
            self.assertEqual(self.call_admin('POST', '/admin/block_ip', {'ip': ip}).status, 200)
        two = self.logs(limit=2)
        self.assertEqual(len(two), 2, two)
        self.assertIn('203.0.113.3', self.entry_text(two[0]))
        self.assertIn('203.0.113.2', self.entry_text(two[1]))
        self.assertEqual(len(self.logs(limit=1)), 1)
        self.assertGreaterEqual(len(self.logs()), 3)
        for bad in ('0', '-1', 'abc'):
            r = self.get('/admin/logs?limit=' + bad, self.admin_headers())
            self.assertError(r, 400, 'invalid_request')

    def test_refused_actions_are_not_logged_as_done(self):
        self.assertEqual(self.call('POST', '/admin/block_ip', {'ip': '203.0.113.50'}).status, 401)
        self.assertEqual(self.get('/x', xff('203.0.113.50')).status, 200)
        self.assertFalse([e for e in self.logs() if '203.0.113.50' in self.entry_text(e)])


class ChangeStrategyTest(AdminCase):
    def test_change_strategy_is_audited(self):
        self.start()
        r = self.call_admin('POST', '/change_strategy', {'strategy': 'least_connections'})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json().get('strategy'), 'least_connections')
        self.assertEqual(self.strategy(), 'least_connections')
        entries = gwtest.wait_until(
            lambda: [e for e in self.logs(limit=5) if 'change_strategy' in json.dumps(e)],
            timeout=5, message='the change_strategy audit entry')
        self.assertIn('least_connections', json.dumps(entries[0]))
        # a refused change is not logged as one
        r = self.call_admin('POST', '/change_strategy', {'strategy': 'fastest'})
        self.assertError(r, 400, 'invalid_request')
        time.sleep(0.3)
        self.assertFalse([e for e in self.logs() if 'fastest' in json.dumps(e)])
        self.assertEqual(self.strategy(), 'least_connections')
