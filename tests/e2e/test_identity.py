"""End-to-end tests of gatewayd's identity layer (SPEC sections 3-6).

- every /auth/* endpoint of section 6, success and failure rows: register, login,
  refresh (rotation, reuse detection revoking the family), logout, /auth/me, API keys
  (create, list, use by header and by the legacy query parameter, rotate with grace,
  revoke, another user's prefix), the legacy-key migration, /usage, the JWK set;
- JWT attacks (forged signature, expiry, alg none, wrong issuer, a refresh token as an
  access token, a tampered payload, garbage), WWW-Authenticate and token_expired;
- route auth modes (jwt, apikey, any, none, off), min_tier, X-User-Id/X-User-Tier;
- tier limits with their headers, one identity across its JWT and its API keys,
  progressive bans;
- persistence across a restart (user, key, tier, block, ban, revocation, generated JWT
  secret); SQL-looking input stored verbatim; queue priority by tier.

Everything runs against the real bin/gatewayd and bin/mockbackend on loopback. The
mockbackend answers with a JSON description of the request it received (header names
lower-cased), which is how these tests see X-User-Id and friends. Tokens are minted by
a tiny HS256 signer below with the harness's JWT_SECRET, so expiry and tampering can be
tested without waiting. Small limits keep it fast: `tier free 5/60s`,
`ban threshold=3 base=2s multiplier=2 max=10s`; 127.0.0.0/8 is exempt from the per-IP
limit. A legacy (ownerless) API key cannot be made through any HTTP endpoint, so the
migration test writes one into the SQLite database while the gateway is stopped, the
way an operator's import would.
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import sqlite3
import threading
import time

import gwtest

PASSWORD = 'correct horse battery'

BASE_CONFIG = '''
    backend b1 127.0.0.1:{b1}
    tier free 5/60s
    ban threshold=3 base=2s multiplier=2 max=10s
    ip_limit_exempt 127.0.0.0/8
    route / auth=none
    route /jwt auth=jwt
    route /key auth=apikey
    route /any auth=any
    route /off auth=off
    route /premium auth=any min_tier=premium
'''

_email_counter = itertools.count(1)


def unique_email(tag='user'):
    return '%s%d-%s@example.com' % (tag, next(_email_counter), os.urandom(3).hex())


# ---------------------------------------------------------------- a tiny HS256 JWT kit

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))


def jwt_encode(claims, secret=gwtest.JWT_SECRET, header=None, raw_payload=None):
    """A compact JWS. secret=None leaves the signature empty (alg none)."""
    header = header if header is not None else {'alg': 'HS256', 'typ': 'JWT'}
    h = b64u(json.dumps(header, separators=(',', ':')))
    p = b64u(raw_payload if raw_payload is not None
             else json.dumps(claims, separators=(',', ':')))
    signing = (h + '.' + p).encode()
    sig = '' if secret is None else b64u(
        hmac.new(secret.encode() if isinstance(secret, str) else secret, signing,
                 hashlib.sha256).digest())
    return h + '.' + p + '.' + sig


def jwt_parts(token):
    h, p, s = token.split('.')
    return json.loads(b64u_decode(h)), json.loads(b64u_decode(p)), s


def jwt_claims(token):
    return jwt_parts(token)[1]


def access_claims(user_id, tier='free', **over):
    """The claims of an access token as gatewayd issues them; `over` replaces (None drops)."""
    now = int(time.time())
    c = {'tier': tier, 'sub': str(user_id), 'iss': 'gatewayd', 'iat': now, 'nbf': now,
         'exp': now + 600, 'jti': os.urandom(16).hex(), 'typ': 'access'}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def bearer(token):
    return {'Authorization': 'Bearer ' + token}


# ---------------------------------------------------------------- the base class

class IdentityCase(gwtest.GatewayTestCase):
    """Helpers shared by the identity and admin tests (no tests of its own)."""

    timeout = 60
    CONFIG = BASE_CONFIG

    def start(self, extra='', config=None, env=None, nbackends=1, backend_args=()):
        self._gw_state()
        if not self.backends:
            self.start_backends(nbackends, args=backend_args)
        self.config_text = (config if config is not None else self.CONFIG) + '\n' + extra
        self.gw = self.start_gateway(self.config_text, env=env)
        return self.gw

    def restart_same_db(self, env=None):
        """Stops the gateway and starts a new one on the same port, temp dir and database."""
        self.assertEqual(self.gw.stop(), 0, 'gatewayd did not exit 0 on SIGTERM')
        self.gw = self.start_gateway(self.config_text, env=env)
        return self.gw

    # -- assertions

    def assertError(self, r, status, code=None):
        self.assertEqual(r.status, status, 'expected %d %s, got %d: %r' % (
            status, code or '', r.status, r.body[:400]))
        ctype = (r.header('Content-Type') or '').split(';')[0].strip().lower()
        self.assertEqual(ctype, 'application/json', r.headers)
        j = r.json()
        self.assertIsInstance(j, dict, j)
        self.assertIsInstance(j.get('error'), str, j)
        self.assertIsInstance(j.get('message'), str, j)
        if code is not None:
            self.assertEqual(j['error'], code, j)
        return j

    def assertTokenError(self, r, code='invalid_token'):
        """401 with `code` and `WWW-Authenticate: Bearer error="invalid_token"`."""
        j = self.assertError(r, 401, code)
        www = r.header('WWW-Authenticate') or ''
        self.assertTrue(www.startswith('Bearer'), 'WWW-Authenticate: %r' % www)
        self.assertIn('error="invalid_token"', www)
        return j

    def assertRateHeaders(self, r, limit, remaining, window, tier, reset=None):
        """The five rate-limit headers of SPEC section 5 with these numbers.

        reset=None: any integer 0..window; else within one second below `reset`
        (the requests of a test take a moment).
        """
        self.assertEqual(r.header('X-RateLimit-Limit'), str(limit), r.headers)
        self.assertEqual(r.header('X-RateLimit-Remaining'), str(remaining), r.headers)
        rs = r.header('X-RateLimit-Reset')
        self.assertIsNotNone(rs, r.headers)
        self.assertTrue(rs.isdigit(), rs)
        rs = int(rs)
        if reset is None:
            self.assertTrue(0 <= rs <= window, rs)
        else:
            self.assertTrue(reset - 1 <= rs <= reset, 'X-RateLimit-Reset %d, expected %d'
                            % (rs, reset))
        self.assertEqual(r.header('RateLimit-Policy'), '"%s";q=%d;w=%d' % (tier, limit, window))
        self.assertEqual(r.header('RateLimit'), '"%s";r=%d;t=%d' % (tier, remaining, rs))
        return rs

    def assertNoRateHeaders(self, r):
        for h in ('X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset',
                  'RateLimit-Policy', 'RateLimit'):
            self.assertIsNone(r.header(h), '%s on an anonymous response: %r' % (h, r.headers))

    def assert429(self, r, code, tier, limit, window):
        j = self.assertError(r, 429, code)
        ra = r.header('Retry-After')
        self.assertIsNotNone(ra, 'no Retry-After on a 429')
        self.assertTrue(ra.isdigit() and int(ra) >= 1, 'Retry-After: %r' % ra)
        for f in ('retry_after', 'limit', 'window'):
            self.assertIsInstance(j.get(f), int, '%s in %r' % (f, j))
            self.assertNotIsInstance(j.get(f), bool)
        self.assertEqual(j['retry_after'], int(ra), 'retry_after field and header differ')
        self.assertEqual(j.get('tier'), tier, j)
        self.assertEqual(j['limit'], limit, j)
        self.assertEqual(j['window'], window, j)
        return int(ra)

    # -- users, tokens, keys

    def register(self, email=None, password=PASSWORD, tier=None, expect=201):
        body = {'email': email or unique_email(), 'password': password}
        if tier is not None:
            body['tier'] = tier
        r = self.post_json('/auth/register', body)
        self.assertEqual(r.status, expect, 'register %r: %d %r' % (body['email'], r.status,
                                                                  r.body[:300]))
        j = r.json()
        j['email'] = body['email']
        j['password'] = password
        return j

    def register_many(self, n, **kw):
        """n users registered concurrently (bcrypt runs on the gateway's job pool)."""
        out = [None] * n
        errors = []

        def one(i):
            try:
                body = {'email': unique_email(), 'password': kw.get('password', PASSWORD)}
                r = gwtest.http_request(self.gw.port, 'POST', '/auth/register',
                                        {'Content-Type': 'application/json'},
                                        json.dumps(body).encode())
                if r.status != 201:
                    errors.append('%d %r' % (r.status, r.body[:200]))
                    return
                j = r.json()
                j['email'] = body['email']
                j['password'] = body['password']
                out[i] = j
            except Exception as e:  # reported below
                errors.append(repr(e))
        gwtest.run_parallel(one, n, 30)
        self.assertFalse(errors, errors)
        return out

    def login(self, email, password=PASSWORD):
        return self.post_json('/auth/login', {'email': email, 'password': password})

    def create_key(self, access_token, expect=201):
        r = self.request('POST', '/auth/api-keys', bearer(access_token))
        self.assertEqual(r.status, expect, 'create key: %d %r' % (r.status, r.body[:300]))
        return r.json()

    def admin(self, path, obj, headers=None):
        h = dict(self.admin_headers())
        h.update(headers or {})
        return self.post_json(path, obj, h)

    def upgrade(self, tier, **target):
        r = self.admin('/admin/upgrade_tier', dict(target, tier=tier))
        self.assertEqual(r.status, 200, 'upgrade_tier: %d %r' % (r.status, r.body[:300]))
        return r.json()

    def seen_headers(self, r):
        """The request headers the mockbackend received (names lower-cased)."""
        self.assertEqual(r.status, 200, 'not proxied: %d %r' % (r.status, r.body[:300]))
        return r.json()['headers']

    def db_path(self):
        return os.path.join(self.tmp, 'gatewayd.db')

    def plant_legacy_key(self, tier='basic'):
        """An ownerless (legacy) API key, written into the database with the gateway
        stopped; the gateway is started again on the same database. Returns the key."""
        legacy = 'gk_' + os.urandom(32).hex()
        self.gw.stop()
        db = sqlite3.connect(self.db_path(), timeout=5)
        try:
            cols = [row[1] for row in db.execute('PRAGMA table_info(api_keys)')]
            if not {'hash', 'prefix', 'tier', 'user_id', 'created_at'} <= set(cols):
                self.skipTest('unexpected api_keys schema %r: cannot plant a legacy key' % cols)
            db.execute('INSERT INTO api_keys (hash, prefix, tier, user_id, created_at) '
                       'VALUES (?, ?, ?, NULL, ?)',
                       (hashlib.sha256(legacy.encode()).hexdigest(), legacy[:12], tier,
                        int(time.time())))
            db.commit()
        finally:
            db.close()
        self.restart_same_db()
        return legacy


# ---------------------------------------------------------------- /auth/register

class RegisterTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()

    def test_register_returns_tokens(self):
        email = unique_email()
        r = self.post_json('/auth/register', {'email': email, 'password': PASSWORD})
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual((r.header('Content-Type') or '').split(';')[0], 'application/json')
        j = r.json()
        self.assertEqual(set(j), {'access_token', 'refresh_token', 'token_type', 'expires_in',
                                  'user_id', 'tier'}, j)
        self.assertEqual(j['token_type'], 'Bearer')
        self.assertEqual(j['expires_in'], 3600)
        self.assertIsInstance(j['user_id'], int)
        self.assertGreater(j['user_id'], 0)
        self.assertEqual(j['tier'], 'free')
        self.assertNotEqual(j['access_token'], j['refresh_token'])
        # the access token carries the claims of SPEC section 6
        h, c, _ = jwt_parts(j['access_token'])
        self.assertEqual(h.get('alg'), 'HS256')
        for claim in ('sub', 'iss', 'iat', 'nbf', 'exp', 'jti', 'typ', 'tier'):
            self.assertIn(claim, c)
        self.assertEqual(c['sub'], str(j['user_id']))
        self.assertEqual(c['iss'], 'gatewayd')
        self.assertEqual(c['typ'], 'access')
        self.assertEqual(c['tier'], 'free')
        self.assertEqual(c['exp'] - c['iat'], 3600)
        self.assertLessEqual(abs(c['iat'] - time.time()), 5)
        self.assertEqual(jwt_claims(j['refresh_token']).get('typ'), 'refresh')
        # and it works at once
        me = self.get('/auth/me', bearer(j['access_token']))
        self.assertEqual(me.status, 200, me.body)
        self.assertEqual(me.json()['email'], email)

    def test_second_registration_of_an_email_is_409(self):
        email = unique_email()
        self.register(email)
        r = self.post_json('/auth/register', {'email': email, 'password': 'another password'})
        self.assertError(r, 409, 'email_taken')
        # the same address in other letter case is the same address
        r = self.post_json('/auth/register', {'email': email.upper(), 'password': PASSWORD})
        self.assertError(r, 409, 'email_taken')
        # the first password still logs in
        self.assertEqual(self.login(email).status, 200)

    def test_concurrent_registrations_of_one_email_make_one_user(self):
        email = unique_email('race')
        statuses = []
        lock = threading.Lock()

        def one():
            r = gwtest.http_request(self.gw.port, 'POST', '/auth/register',
                                    {'Content-Type': 'application/json'},
                                    json.dumps({'email': email, 'password': PASSWORD}).encode())
            with lock:
                statuses.append(r.status)
        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(sorted(statuses), [201, 409, 409, 409, 409], statuses)
        self.assertEqual(self.login(email).status, 200)

    def test_password_shorter_than_8_is_400(self):
        for pw in ('', 'a', '1234567', 'seven77'):
            with self.subTest(pw=pw):
                r = self.post_json('/auth/register', {'email': unique_email(), 'password': pw})
                self.assertError(r, 400, 'invalid_request')
        self.register(password='12345678')  # exactly 8 is enough

    def test_malformed_bodies_are_400_invalid_request(self):
        good = {'email': unique_email(), 'password': PASSWORD}
        bodies = [b'not json', b'{"email": ', b'[]', b'"x"', b'{}', b'',
                  json.dumps({'password': PASSWORD}).encode(),
                  json.dumps({'email': unique_email()}).encode(),
                  json.dumps({'email': 5, 'password': PASSWORD}).encode(),
                  json.dumps({'email': unique_email(), 'password': 12345678}).encode(),
                  json.dumps({'email': 'not-an-email', 'password': PASSWORD}).encode(),
                  json.dumps(good).encode() + b' trailing']
        for body in bodies:
            with self.subTest(body=body):
                r = self.request('POST', '/auth/register',
                                 {'Content-Type': 'application/json'}, body)
                self.assertError(r, 400, 'invalid_request')
        # none of them created the user of `good`
        self.register(good['email'])

    def test_tier_not_in_register_tiers_is_403(self):
        for tier in ('enterprise', 'premium', 'basic', 'no-such-tier'):
            with self.subTest(tier=tier):
                r = self.post_json('/auth/register', {'email': unique_email(),
                                                      'password': PASSWORD, 'tier': tier})
                self.assertError(r, 403, 'tier_not_allowed')
        j = self.register(tier='free')
        self.assertEqual(j['tier'], 'free')


class RegisterTiersTest(IdentityCase):
    def test_register_tiers_lets_users_pick(self):
        self.start('register_tiers free basic')
        j = self.register(tier='basic')
        self.assertEqual(j['tier'], 'basic')
        self.assertEqual(jwt_claims(j['access_token'])['tier'], 'basic')
        r = self.get('/jwt/x', bearer(j['access_token']))
        self.assertEqual(r.status, 200, r.body)
        self.assertRateHeaders(r, 20, 19, 60, 'basic', reset=3)
        self.assertEqual(self.register()['tier'], 'free')  # the first listed is the default
        r = self.post_json('/auth/register', {'email': unique_email(), 'password': PASSWORD,
                                              'tier': 'premium'})
        self.assertError(r, 403, 'tier_not_allowed')


# ---------------------------------------------------------------- /auth/login

class LoginTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()

    def test_login_returns_tokens(self):
        r = self.login(self.user['email'])
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(set(j), {'access_token', 'refresh_token', 'token_type', 'expires_in',
                                  'user_id', 'tier'}, j)
        self.assertEqual(j['token_type'], 'Bearer')
        self.assertEqual(j['expires_in'], 3600)
        self.assertEqual(j['user_id'], self.user['user_id'])
        self.assertEqual(j['tier'], 'free')
        self.assertNotEqual(j['access_token'], self.user['access_token'])
        self.assertEqual(self.get('/auth/me', bearer(j['access_token'])).status, 200)
        # the address is matched without regard to case
        self.assertEqual(self.login(self.user['email'].upper()).status, 200)

    def test_unknown_email_and_wrong_password_are_the_same_401(self):
        a = self.login(unique_email('nobody'), PASSWORD)
        b = self.login(self.user['email'], PASSWORD + 'x')
        c = self.login(self.user['email'], PASSWORD[:-1])
        for r in (a, b, c):
            self.assertError(r, 401, 'invalid_credentials')
        self.assertEqual(a.body, b.body)
        self.assertEqual(b.body, c.body)
        ignore = {'date', 'x-request-id'}
        self.assertEqual([h for h in a.headers if h[0].lower() not in ignore],
                         [h for h in b.headers if h[0].lower() not in ignore])

    def test_malformed_login_is_400(self):
        for body in (b'nope', b'{}', json.dumps({'email': self.user['email']}).encode(),
                     json.dumps({'password': PASSWORD}).encode()):
            with self.subTest(body=body):
                r = self.request('POST', '/auth/login', {'Content-Type': 'application/json'},
                                 body)
                self.assertError(r, 400, 'invalid_request')


# ---------------------------------------------------------------- /auth/refresh

class RefreshTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()

    def refresh(self, token):
        return self.post_json('/auth/refresh', {'refresh_token': token})

    def test_refresh_rotates_the_refresh_token(self):
        r = self.refresh(self.user['refresh_token'])
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(set(j), {'access_token', 'refresh_token', 'token_type', 'expires_in',
                                  'user_id', 'tier'}, j)
        self.assertEqual(j['user_id'], self.user['user_id'])
        self.assertNotEqual(j['refresh_token'], self.user['refresh_token'])
        self.assertNotEqual(j['access_token'], self.user['access_token'])
        self.assertEqual(self.get('/auth/me', bearer(j['access_token'])).status, 200)
        # the new one rotates again
        r2 = self.refresh(j['refresh_token'])
        self.assertEqual(r2.status, 200, r2.body)
        self.assertNotEqual(r2.json()['refresh_token'], j['refresh_token'])

    def test_reuse_of_a_rotated_token_revokes_the_family(self):
        old = self.user['refresh_token']
        new = self.refresh(old).json()['refresh_token']
        self.assertTokenError(self.refresh(old), 'token_revoked')
        # the thief's (or the user's) successor dies with the family
        r = self.refresh(new)
        self.assertEqual(r.status, 401, r.body)
        self.assertIn(r.json()['error'], ('token_revoked', 'invalid_token'))
        self.assertTrue(r.header('WWW-Authenticate'))
        # another login is a new family and works
        other = self.login(self.user['email']).json()['refresh_token']
        self.assertEqual(self.refresh(other).status, 200)

    def test_concurrent_use_of_one_refresh_token(self):
        # a refresh token is spent once: of simultaneous uses at most one gets new tokens
        results = []
        lock = threading.Lock()

        def one():
            r = gwtest.http_request(self.gw.port, 'POST', '/auth/refresh',
                                    {'Content-Type': 'application/json'},
                                    json.dumps({'refresh_token':
                                                self.user['refresh_token']}).encode())
            with lock:
                results.append(r)
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ok = [r for r in results if r.status == 200]
        self.assertLessEqual(len(ok), 1, [r.status for r in results])
        for r in results:
            if r.status != 200:
                self.assertEqual(r.status, 401, r.body)

    def test_access_token_is_not_a_refresh_token(self):
        self.assertTokenError(self.refresh(self.user['access_token']), 'invalid_token')

    def test_bad_refresh_tokens_are_401(self):
        forged = jwt_encode(dict(jwt_claims(self.user['refresh_token'])), secret='other-secret')
        for tok in ('garbage', 'a.b.c', forged, self.user['refresh_token'] + 'x'):
            with self.subTest(tok=tok[:30]):
                self.assertTokenError(self.refresh(tok))
        # the genuine one was not spent by any of that
        self.assertEqual(self.refresh(self.user['refresh_token']).status, 200)

    def test_expired_refresh_token_is_token_expired(self):
        c = dict(jwt_claims(self.user['refresh_token']))
        now = int(time.time())
        c.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
        self.assertTokenError(self.refresh(jwt_encode(c)), 'token_expired')

    def test_missing_or_malformed_body_is_400(self):
        for body in (b'', b'{}', b'[1]', b'{"refresh_token": 1}'):
            with self.subTest(body=body):
                r = self.request('POST', '/auth/refresh', {'Content-Type': 'application/json'},
                                 body)
                self.assertError(r, 400, 'invalid_request')


# ---------------------------------------------------------------- /auth/logout, /auth/me

class LogoutMeTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()

    def test_me_shape(self):
        r = self.get('/auth/me', bearer(self.user['access_token']))
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(set(j), {'user_id', 'email', 'tier', 'created_at'}, j)
        self.assertEqual(j['user_id'], self.user['user_id'])
        self.assertEqual(j['email'], self.user['email'])
        self.assertEqual(j['tier'], 'free')
        self.assertIsInstance(j['created_at'], int)
        self.assertLessEqual(abs(j['created_at'] - time.time()), 30)
        self.assertNotIn(b'$2', r.body)  # no bcrypt hash

    def test_me_needs_a_jwt(self):
        self.assertError(self.get('/auth/me'), 401, 'missing_credentials')
        key = self.create_key(self.user['access_token'])['api_key']
        self.assertEqual(self.get('/auth/me', {'X-API-Key': key}).status, 401)

    def test_logout_revokes_the_access_token(self):
        tok = self.user['access_token']
        self.assertEqual(self.get('/jwt/before', bearer(tok)).status, 200)
        r = self.request('POST', '/auth/logout', bearer(tok))
        self.assertEqual(r.status, 200, r.body)
        self.assertIsInstance(r.json(), dict)
        self.assertTokenError(self.get('/auth/me', bearer(tok)), 'token_revoked')
        self.assertTokenError(self.get('/jwt/after', bearer(tok)), 'token_revoked')
        self.assertTokenError(self.get('/', bearer(tok)), 'token_revoked')
        self.assertTokenError(self.request('POST', '/auth/logout', bearer(tok)), 'token_revoked')
        # its refresh family ends too
        r = self.post_json('/auth/refresh', {'refresh_token': self.user['refresh_token']})
        self.assertEqual(r.status, 401, r.body)
        # a fresh login is unaffected
        fresh = self.login(self.user['email']).json()['access_token']
        self.assertEqual(self.get('/auth/me', bearer(fresh)).status, 200)

    def test_logout_needs_a_jwt(self):
        self.assertError(self.request('POST', '/auth/logout'), 401, 'missing_credentials')


# ---------------------------------------------------------------- API keys

class ApiKeyTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()
        self.tok = self.user['access_token']

    def test_create_key_shape(self):
        r = self.request('POST', '/auth/api-keys', bearer(self.tok))
        self.assertEqual(r.status, 201, r.body)
        j = r.json()
        self.assertTrue({'api_key', 'prefix', 'tier'} <= set(j), j)
        self.assertIsInstance(j['api_key'], str)
        self.assertGreaterEqual(len(j['api_key']), 24, 'a short key is guessable')
        self.assertTrue(j['api_key'].startswith(j['prefix']), j)
        self.assertLess(len(j['prefix']), len(j['api_key']))
        self.assertGreaterEqual(len(j['prefix']), 8)
        self.assertEqual(j['tier'], 'free')
        other = self.create_key(self.tok)
        self.assertNotEqual(other['api_key'], j['api_key'])
        self.assertNotEqual(other['prefix'], j['prefix'])

    def test_create_needs_a_jwt(self):
        self.assertError(self.request('POST', '/auth/api-keys'), 401, 'missing_credentials')
        key = self.create_key(self.tok)['api_key']
        r = self.request('POST', '/auth/api-keys', {'X-API-Key': key})
        self.assertEqual(r.status, 401, r.body)

    def test_list_shows_prefixes_only(self):
        keys = [self.create_key(self.tok) for _ in range(2)]
        r = self.get('/auth/api-keys', bearer(self.tok))
        self.assertEqual(r.status, 200, r.body)
        lst = r.json()
        self.assertIsInstance(lst, list)
        self.assertEqual(sorted(k['prefix'] for k in lst), sorted(k['prefix'] for k in keys))
        for item in lst:
            self.assertEqual(set(item), {'prefix', 'created_at', 'last_used', 'expires_at'},
                             item)
            self.assertIsInstance(item['created_at'], int)
        for k in keys:
            self.assertNotIn(k['api_key'].encode(), r.body)
            self.assertNotIn(hashlib.sha256(k['api_key'].encode()).hexdigest().encode(), r.body)
        # another user sees none of them
        other = self.register()
        r = self.get('/auth/api-keys', bearer(other['access_token']))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), [])

    def test_last_used_is_set_once_the_key_is_used(self):
        k = self.create_key(self.tok)
        self.assertEqual(self.get('/key/use', {'X-API-Key': k['api_key']}).status, 200)

        def used():
            lst = self.get('/auth/api-keys', bearer(self.tok)).json()
            item = [i for i in lst if i['prefix'] == k['prefix']][0]
            return item['last_used']
        lu = gwtest.wait_until(used, timeout=5, message='last_used of a used key')
        self.assertIsInstance(lu, int)
        self.assertLessEqual(abs(lu - time.time()), 70)

    def test_key_by_header_identifies_the_user(self):
        k = self.create_key(self.tok)
        r = self.get('/key/x', {'X-API-Key': k['api_key']})
        h = self.seen_headers(r)
        self.assertEqual(h.get('x-user-id'), str(self.user['user_id']))
        self.assertEqual(h.get('x-user-tier'), 'free')
        self.assertNotIn('x-api-key', h, 'the API key must not reach the backend')
        self.assertIsNone(r.header('Deprecation'))
        self.assertRateHeaders(r, 5, 4, 60, 'free', reset=12)

    def test_key_by_query_is_deprecated_but_works(self):
        k = self.create_key(self.tok)
        r = self.get('/key/q?api_key=' + k['api_key'])
        self.seen_headers(r)
        self.assertEqual(r.header('Deprecation'), 'true')
        self.assertEqual(r.json()['headers'].get('x-user-id'), str(self.user['user_id']))
        r = self.get('/key/q?a=1&api_key=' + k['api_key'] + '&b=2')
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header('Deprecation'), 'true')
        # a bad key in the query is refused like any other
        self.assertError(self.get('/key/q?api_key=gk_nope'), 401, 'invalid_api_key')

    def test_unknown_key_is_401_invalid_api_key(self):
        k = self.create_key(self.tok)['api_key']
        for bad in ('nope', k[:-1], k + 'x', k[:-1] + ('0' if k[-1] != '0' else '1')):
            with self.subTest(bad=bad):
                self.assertError(self.get('/key/x', {'X-API-Key': bad}), 401, 'invalid_api_key')
                self.assertError(self.get('/', {'X-API-Key': bad}), 401, 'invalid_api_key')

    def test_rotate_keeps_both_keys_working(self):
        old = self.create_key(self.tok)
        r = self.post_json('/auth/api-keys/rotate', {'api_key': old['api_key']}, bearer(self.tok))
        self.assertEqual(r.status, 201, r.body)
        new = r.json()
        self.assertIn('api_key', new)
        self.assertNotEqual(new['api_key'], old['api_key'])
        for key in (old['api_key'], new['api_key']):
            r = self.get('/key/r', {'X-API-Key': key})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()['headers'].get('x-user-id'), str(self.user['user_id']))
        # the old key's grace shows as an expiry about 24h away
        lst = self.get('/auth/api-keys', bearer(self.tok)).json()
        exp = [i['expires_at'] for i in lst if i['prefix'] == old['prefix']]
        self.assertEqual(len(exp), 1, lst)
        self.assertIsInstance(exp[0], int)
        self.assertAlmostEqual(exp[0] - time.time(), 86400, delta=120)

    def test_rotate_with_the_key_itself(self):
        old = self.create_key(self.tok)
        r = self.request('POST', '/auth/api-keys/rotate', {'X-API-Key': old['api_key']})
        self.assertEqual(r.status, 201, r.body)
        new = r.json()['api_key']
        self.assertEqual(self.get('/key/a', {'X-API-Key': new}).status, 200)
        self.assertEqual(self.get('/key/b', {'X-API-Key': old['api_key']}).status, 200)

    def test_rotate_someone_elses_key_is_refused(self):
        mine = self.create_key(self.tok)
        other = self.register()
        r = self.post_json('/auth/api-keys/rotate', {'api_key': mine['api_key']},
                           bearer(other['access_token']))
        self.assertIn(r.status, (403, 404), r.body)
        # and nothing changed for the owner
        lst = self.get('/auth/api-keys', bearer(self.tok)).json()
        self.assertEqual([i['prefix'] for i in lst], [mine['prefix']])
        self.assertIsNone(lst[0]['expires_at'])

    @gwtest.timeout(30)
    def test_key_with_expires_in_stops_working(self):
        r = self.post_json('/auth/api-keys', {'expires_in': 2}, bearer(self.tok))
        self.assertEqual(r.status, 201, r.body)
        k = r.json()
        self.assertEqual(self.get('/key/now', {'X-API-Key': k['api_key']}).status, 200)
        gwtest.wait_until(lambda: self.get('/key/later', {'X-API-Key': k['api_key']}).status
                          == 401, timeout=6, interval=0.25, message='the 2s key to expire')
        self.assertError(self.get('/key/x', {'X-API-Key': k['api_key']}), 401, 'invalid_api_key')
        lst = self.get('/auth/api-keys', bearer(self.tok)).json()
        self.assertNotIn(k['prefix'], [i['prefix'] for i in lst])

    def test_credential_precedence(self):
        # Bearer first, then X-API-Key, then ?api_key=: the first present one decides
        k = self.create_key(self.tok)['api_key']
        r = self.get('/any/p1', dict(bearer(self.tok), **{'X-API-Key': 'nope'}))
        self.assertEqual(r.status, 200, r.body)
        r = self.get('/any/p2', dict(bearer('garbage'), **{'X-API-Key': k}))
        self.assertTokenError(r)
        r = self.get('/any/p3?api_key=nope', {'X-API-Key': k})
        self.assertEqual(r.status, 200, r.body)
        self.assertIsNone(r.header('Deprecation'))
        r = self.get('/any/p4?api_key=' + k, {'X-API-Key': 'nope'})
        self.assertError(r, 401, 'invalid_api_key')

    def test_revoke(self):
        k = self.create_key(self.tok)
        keep = self.create_key(self.tok)
        r = self.request('DELETE', '/auth/api-keys/' + k['prefix'], bearer(self.tok))
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(r.body, b'')
        self.assertError(self.get('/key/x', {'X-API-Key': k['api_key']}), 401, 'invalid_api_key')
        self.assertError(self.get('/usage', {'X-API-Key': k['api_key']}), 401, 'invalid_api_key')
        lst = self.get('/auth/api-keys', bearer(self.tok)).json()
        self.assertEqual([i['prefix'] for i in lst], [keep['prefix']])
        self.assertEqual(self.get('/key/x', {'X-API-Key': keep['api_key']}).status, 200)
        # revoking again: nothing left to revoke
        r = self.request('DELETE', '/auth/api-keys/' + k['prefix'], bearer(self.tok))
        self.assertError(r, 404, 'not_found')

    def test_revoke_another_users_prefix_is_404(self):
        k = self.create_key(self.tok)
        other = self.register()
        r = self.request('DELETE', '/auth/api-keys/' + k['prefix'], bearer(other['access_token']))
        self.assertError(r, 404, 'not_found')
        self.assertEqual(self.get('/key/x', {'X-API-Key': k['api_key']}).status, 200)
        r = self.request('DELETE', '/auth/api-keys/gk_nosuchkey', bearer(self.tok))
        self.assertError(r, 404, 'not_found')
        r = self.request('DELETE', '/auth/api-keys/' + k['prefix'])
        self.assertError(r, 401, 'missing_credentials')
        r = self.request('DELETE', '/auth/api-keys/' + k['prefix'], {'X-API-Key': k['api_key']})
        self.assertEqual(r.status, 401, r.body)
        self.assertEqual(self.get('/key/y', {'X-API-Key': k['api_key']}).status, 200)


# ---------------------------------------------------------------- /auth/migrate

class MigrateTest(IdentityCase):
    timeout = 60

    def test_legacy_key_migrates_to_a_user(self):
        self.start()
        self.register()  # the database exists and has a user
        legacy = self.plant_legacy_key('basic')
        prefix = legacy[:12]

        # an ownerless key works and is limited as itself, at its tier
        for i in range(3):
            r = self.get('/key/legacy', {'X-API-Key': legacy})
            self.assertEqual(r.status, 200, r.body)
        self.assertRateHeaders(r, 20, 17, 60, 'basic')
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'basic')

        email = unique_email('migrated')
        bad = self.post_json('/auth/migrate', {'api_key': 'gk_' + '0' * 64, 'email': email,
                                               'password': PASSWORD})
        self.assertError(bad, 401, 'invalid_api_key')
        short = self.post_json('/auth/migrate', {'api_key': legacy, 'email': email,
                                                 'password': 'short'})
        self.assertError(short, 400, 'invalid_request')

        r = self.post_json('/auth/migrate', {'api_key': legacy, 'email': email,
                                             'password': PASSWORD})
        self.assertEqual(r.status, 201, r.body)
        j = r.json()
        self.assertEqual(set(j), {'access_token', 'refresh_token', 'token_type', 'expires_in',
                                  'user_id', 'tier'}, j)
        self.assertEqual(j['tier'], 'basic', 'the key\'s tier is kept')
        uid = j['user_id']
        # the key is now the user's
        r = self.get('/key/after', {'X-API-Key': legacy})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('x-user-id'), str(uid))
        lst = self.get('/auth/api-keys', bearer(j['access_token'])).json()
        self.assertEqual([i['prefix'] for i in lst], [prefix])
        # usage kept: 3 before + 1 after through the key; the user's JWT counts on top
        r = self.get('/jwt/after', bearer(j['access_token']))
        self.assertEqual(r.status, 200, r.body)
        self.assertRateHeaders(r, 20, 15, 60, 'basic')
        # the new account logs in
        self.assertEqual(self.login(email).status, 200)
        # a second migration of the same key is refused
        again = self.post_json('/auth/migrate', {'api_key': legacy, 'email': unique_email(),
                                                 'password': PASSWORD})
        self.assertIn(again.status, (400, 401, 409), again.body)


# ---------------------------------------------------------------- /usage, JWKS

class UsageJwksTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()
        self.tok = self.user['access_token']

    def usage(self, headers):
        r = self.get('/usage', headers)
        self.assertEqual(r.status, 200, r.body)
        return r, r.json()

    def test_usage_shape_and_not_counted(self):
        r, j = self.usage(bearer(self.tok))
        self.assertEqual(set(j), {'tier', 'limit', 'window', 'remaining', 'reset',
                                  'total_requests', 'blocked'}, j)
        self.assertEqual(j['tier'], 'free')
        self.assertEqual(j['limit'], 5)
        self.assertEqual(j['window'], 60)
        self.assertEqual(j['remaining'], 5)
        self.assertIs(j['blocked'], False)
        for f in ('limit', 'window', 'remaining', 'reset', 'total_requests'):
            self.assertIsInstance(j[f], int, f)
        for _ in range(4):
            self.usage(bearer(self.tok))  # not counted
        for i in range(2):
            self.assertEqual(self.get('/jwt/%d' % i, bearer(self.tok)).status, 200)
        r, j = self.usage(bearer(self.tok))
        self.assertEqual(j['remaining'], 3)
        self.assertTrue(20 <= j['reset'] <= 24, j)
        # the same identity through an API key
        key = self.create_key(self.tok)['api_key']
        r, j2 = self.usage({'X-API-Key': key})
        self.assertEqual(j2['remaining'], 3)

    def test_usage_total_requests_counts_the_identitys_requests(self):
        for i in range(3):
            self.assertEqual(self.get('/jwt/t%d' % i, bearer(self.tok)).status, 200)
        _, j = self.usage(bearer(self.tok))
        self.assertGreaterEqual(j['total_requests'], 3, j)

    def test_usage_needs_a_credential(self):
        self.assertError(self.get('/usage'), 401, 'missing_credentials')
        self.assertError(self.get('/usage', {'X-API-Key': 'nope'}), 401, 'invalid_api_key')
        self.assertTokenError(self.get('/usage', bearer('garbage')))

    def test_jwks(self):
        r = self.get('/.well-known/jwks.json')
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual((r.header('Content-Type') or '').split(';')[0], 'application/json')
        j = r.json()
        self.assertIsInstance(j.get('keys'), list, j)
        # HS256: the secret is symmetric and must never be published
        secret = gwtest.JWT_SECRET.encode()
        self.assertNotIn(secret, r.body)
        self.assertNotIn(b64u(secret).encode(), r.body)
        for k in j['keys']:
            self.assertNotIn('k', k, 'a symmetric key in the JWK set')
            self.assertNotIn('d', k, 'a private key in the JWK set')


# ---------------------------------------------------------------- JWT attacks

class JwtAttackTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()
        self.uid = self.user['user_id']

    def check_refused(self, token, code='invalid_token'):
        for path in ('/jwt/attack', '/auth/me', '/any/attack', '/'):
            with self.subTest(path=path, token=token[:40]):
                self.assertTokenError(self.get(path, bearer(token)), code)

    def test_own_signer_is_accepted(self):
        # sanity for the tests below: a token made by this kit with the right secret passes
        tok = jwt_encode(access_claims(self.uid))
        r = self.get('/jwt/ok', bearer(tok))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('x-user-id'), str(self.uid))

    def test_forged_signature(self):
        self.check_refused(jwt_encode(access_claims(self.uid), secret='not-the-secret'))
        self.check_refused(jwt_encode(access_claims(self.uid), secret=gwtest.JWT_SECRET + 'x'))

    def test_expired_token_is_token_expired(self):
        now = int(time.time())
        tok = jwt_encode(access_claims(self.uid, iat=now - 7200, nbf=now - 7200, exp=now - 3600))
        self.check_refused(tok, 'token_expired')

    def test_not_yet_valid_token(self):
        now = int(time.time())
        self.check_refused(jwt_encode(access_claims(self.uid, nbf=now + 3600, iat=now + 3600,
                                                    exp=now + 7200)))

    def test_alg_none(self):
        claims = access_claims(self.uid)
        for alg in ('none', 'None', 'NONE'):
            self.check_refused(jwt_encode(claims, secret=None, header={'alg': alg, 'typ': 'JWT'}))
        # "none" with the genuine signature left on is no better
        good = jwt_encode(claims)
        h = b64u(json.dumps({'alg': 'none', 'typ': 'JWT'}))
        self.check_refused(h + good[good.index('.'):])

    def test_other_algorithms(self):
        claims = access_claims(self.uid)
        for alg in ('HS512', 'HS384', 'RS256', 'ES256'):
            self.check_refused(jwt_encode(claims, header={'alg': alg, 'typ': 'JWT'}))

    def test_wrong_or_missing_issuer(self):
        self.check_refused(jwt_encode(access_claims(self.uid, iss='evil')))
        self.check_refused(jwt_encode(access_claims(self.uid, iss=None)))

    def test_refresh_token_as_access_token(self):
        self.check_refused(self.user['refresh_token'])
        # and typ missing or odd
        self.check_refused(jwt_encode(access_claims(self.uid, typ=None)))
        self.check_refused(jwt_encode(access_claims(self.uid, typ='id')))

    def test_tampered_payload(self):
        tok = self.user['access_token']
        h, p, s = tok.split('.')
        claims = json.loads(b64u_decode(p))
        claims['tier'] = 'enterprise'
        forged = h + '.' + b64u(json.dumps(claims, separators=(',', ':'))) + '.' + s
        self.check_refused(forged)
        claims = json.loads(b64u_decode(p))
        claims['sub'] = str(self.uid + 1)
        self.check_refused(h + '.' + b64u(json.dumps(claims, separators=(',', ':'))) + '.' + s)
        # the genuine token is still fine
        self.assertEqual(self.get('/jwt/x', bearer(tok)).status, 200)

    def test_garbage(self):
        tok = self.user['access_token']
        for g in ('garbage', 'a.b.c', '..', 'a.b', tok + '.x', tok[:-3], tok.replace('.', '', 1),
                  'eyJhbGciOiJIUzI1NiJ9', '%00%ff', 'x' * 3000, tok.split('.')[0] + '..'):
            self.check_refused(g)

    def test_empty_bearer_is_refused(self):
        for v in ('Bearer ', 'Bearer', 'Bearer    '):
            with self.subTest(v=v):
                r = self.get('/jwt/x', {'Authorization': v})
                self.assertEqual(r.status, 401, r.body)


# ---------------------------------------------------------------- route auth modes

class RouteAuthTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.user = self.register()
        self.tok = self.user['access_token']
        self.key = self.create_key(self.tok)['api_key']

    def test_jwt_route(self):
        self.assertError(self.get('/jwt/x'), 401, 'missing_credentials')
        self.assertTrue((self.get('/jwt/x').header('WWW-Authenticate') or '').startswith('Bearer'))
        self.assertEqual(self.get('/jwt/x', {'X-API-Key': self.key}).status, 401)
        r = self.get('/jwt/x', bearer(self.tok))
        self.assertEqual(r.status, 200, r.body)
        h = r.json()['headers']
        self.assertNotIn('authorization', h, 'the bearer token must not reach the backend')

    def test_apikey_route_refuses_a_jwt(self):
        self.assertError(self.get('/key/x'), 401, 'missing_credentials')
        self.assertEqual(self.get('/key/x', bearer(self.tok)).status, 401)
        self.assertEqual(self.get('/key/x', {'X-API-Key': self.key}).status, 200)

    def test_any_route_takes_both(self):
        self.assertError(self.get('/any/x'), 401, 'missing_credentials')
        for h in (bearer(self.tok), {'X-API-Key': self.key}):
            r = self.get('/any/x', h)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()['headers'].get('x-user-id'), str(self.user['user_id']))

    def test_none_route_identifies_a_present_credential(self):
        r = self.get('/anon')
        self.assertEqual(r.status, 200, r.body)
        self.assertNoRateHeaders(r)
        self.assertNotIn('x-user-id', r.json()['headers'])
        for h in (bearer(self.tok), {'X-API-Key': self.key}):
            r = self.get('/anon', h)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.header('X-RateLimit-Limit'), '5')
            self.assertEqual(r.header('RateLimit-Policy'), '"free";q=5;w=60')
            self.assertEqual(r.json()['headers'].get('x-user-id'), str(self.user['user_id']))

    def test_none_route_never_falls_back_to_anonymous(self):
        self.assertTokenError(self.get('/anon', bearer('garbage')))
        self.assertTokenError(self.get('/anon', bearer(jwt_encode(access_claims(
            self.user['user_id']), secret='x'))))
        self.assertError(self.get('/anon', {'X-API-Key': 'nope'}), 401, 'invalid_api_key')
        self.assertError(self.get('/anon?api_key=nope'), 401, 'invalid_api_key')

    def test_off_route_passes_credentials_through_unverified(self):
        r = self.get('/off/x', {'Authorization': 'Bearer garbage', 'X-API-Key': 'whatever'})
        self.assertEqual(r.status, 200, r.body)
        h = r.json()['headers']
        self.assertEqual(h.get('authorization'), 'Bearer garbage')
        self.assertEqual(h.get('x-api-key'), 'whatever')
        self.assertNotIn('x-user-id', h)
        self.assertNoRateHeaders(r)
        # a valid token is not looked at either: no identity, no quota used
        r = self.get('/off/y', bearer(self.tok))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('authorization'), 'Bearer ' + self.tok)
        self.assertNotIn('x-user-id', r.json()['headers'])
        self.assertNoRateHeaders(r)
        r = self.get('/usage', bearer(self.tok))
        self.assertEqual(r.json()['remaining'], 5, 'auth=off consumed quota')

    def test_min_tier(self):
        r = self.get('/premium/x', bearer(self.tok))
        self.assertError(r, 403, 'insufficient_tier')
        self.assertError(self.get('/premium/x', {'X-API-Key': self.key}), 403,
                         'insufficient_tier')
        self.assertError(self.get('/premium/x'), 401, 'missing_credentials')
        self.upgrade('premium', user_id=self.user['user_id'])
        # the token issued while free: the tier is the user's current one
        r = self.get('/premium/x', bearer(self.tok))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'premium')
        self.assertEqual(r.header('RateLimit-Policy'), '"premium";q=100;w=60')
        self.assertEqual(self.get('/premium/y', {'X-API-Key': self.key}).status, 200)
        # enterprise ranks above premium
        self.upgrade('enterprise', user_id=self.user['user_id'])
        self.assertEqual(self.get('/premium/z', bearer(self.tok)).status, 200)

    def test_client_sent_identity_headers_are_replaced(self):
        forged = {'X-User-Id': '999999', 'X-User-Tier': 'enterprise'}
        r = self.get('/jwt/x', dict(forged, **bearer(self.tok)))
        h = self.seen_headers(r)
        self.assertEqual(h.get('x-user-id'), str(self.user['user_id']))
        self.assertEqual(h.get('x-user-tier'), 'free')
        r = self.get('/key/x', dict(forged, **{'X-API-Key': self.key}))
        h = self.seen_headers(r)
        self.assertEqual(h.get('x-user-id'), str(self.user['user_id']))
        self.assertEqual(h.get('x-user-tier'), 'free')
        # anonymous: removed, nothing put in their place
        h = self.seen_headers(self.get('/anon', forged))
        self.assertNotIn('x-user-id', h)
        self.assertNotIn('x-user-tier', h)
        # repeated or oddly cased copies do not survive either
        r = self.get('/jwt/x', [('x-user-id', '1'), ('X-USER-ID', '2'), ('x-user-tier', 'a'),
                                ('Authorization', 'Bearer ' + self.tok)])
        h = self.seen_headers(r)
        self.assertEqual(h.get('x-user-id'), str(self.user['user_id']))
        self.assertEqual(h.get('x-user-tier'), 'free')


# ---------------------------------------------------------------- tier limits and bans

class RateLimitTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()

    def test_free_tier_five_then_429_with_exact_headers(self):
        u = self.register()
        h = bearer(u['access_token'])
        for i in range(5):
            r = self.get('/jwt/%d' % i, h)
            self.assertEqual(r.status, 200, r.body)
            self.assertRateHeaders(r, 5, 4 - i, 60, 'free', reset=12 * (i + 1))
        r = self.get('/jwt/5', h)
        ra = self.assert429(r, 'rate_limited', 'free', 5, 60)
        self.assertTrue(11 <= ra <= 12, ra)
        # a 429 is a response to an identified request too
        self.assertRateHeaders(r, 5, 0, 60, 'free', reset=60)
        # a rejected request does not consume: the wait stays the same
        ra2 = self.assert429(self.get('/jwt/6', h), 'rate_limited', 'free', 5, 60)
        self.assertLessEqual(ra2, ra)
        # another user has a quota of its own
        other = self.register()
        r = self.get('/jwt/o', bearer(other['access_token']))
        self.assertEqual(r.status, 200, r.body)
        self.assertRateHeaders(r, 5, 4, 60, 'free', reset=12)

    def test_headers_on_every_identified_route(self):
        u = self.register()
        key = self.create_key(u['access_token'])['api_key']
        paths = [('/anon', bearer(u['access_token'])), ('/any/a', {'X-API-Key': key}),
                 ('/key/k', {'X-API-Key': key}), ('/jwt/j', bearer(u['access_token']))]
        for i, (p, h) in enumerate(paths):
            r = self.get(p, h)
            self.assertEqual(r.status, 200, r.body)
            self.assertRateHeaders(r, 5, 4 - i, 60, 'free', reset=12 * (i + 1))
        # /usage (not counted) carries them too
        r = self.get('/usage', bearer(u['access_token']))
        self.assertRateHeaders(r, 5, 1, 60, 'free', reset=48)

    def test_one_identity_across_jwt_and_keys(self):
        u = self.register()
        jh = bearer(u['access_token'])
        k1 = {'X-API-Key': self.create_key(u['access_token'])['api_key']}
        k2 = {'X-API-Key': self.create_key(u['access_token'])['api_key']}
        for i, h in enumerate((jh, k1, k2, jh, k1)):
            r = self.get('/any/%d' % i, h)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.header('X-RateLimit-Remaining'), str(4 - i))
        for h in (k2, jh, k1):
            self.assert429(self.get('/any/x', h), 'rate_limited', 'free', 5, 60)
        # a fresh login is the same user, so the same quota
        fresh = self.login(u['email']).json()['access_token']
        self.assert429(self.get('/any/y', bearer(fresh)), 'rate_limited', 'free', 5, 60)

    @gwtest.timeout(40)
    def test_progressive_bans(self):
        u = self.register()
        h = bearer(u['access_token'])
        key = {'X-API-Key': self.create_key(u['access_token'])['api_key']}
        for i in range(5):
            self.assertEqual(self.get('/jwt/%d' % i, h).status, 200)
        # threshold=3: three rejections are plain 429s
        for i in range(3):
            self.assert429(self.get('/jwt/r%d' % i, h), 'rate_limited', 'free', 5, 60)
        # more than three: banned (the rejection that crosses the threshold may still
        # read rate_limited; the next request is banned)
        codes = []
        first = None
        for i in range(2):
            r = self.get('/jwt/b%d' % i, h)
            self.assertEqual(r.status, 429, r.body)
            codes.append(r.json()['error'])
            if codes[-1] == 'temporarily_banned':
                first = r
                break
        self.assertIsNotNone(first, 'no ban after %s' % codes)
        ban1 = self.assert429(first, 'temporarily_banned', 'free', 5, 60)
        self.assertTrue(1 <= ban1 <= 2, 'first ban is base=2s, Retry-After %d' % ban1)
        # the ban is the identity's: its API key is banned too
        self.assert429(self.get('/key/b', key), 'temporarily_banned', 'free', 5, 60)
        # requests during the ban do not lengthen it; wait it out
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            r = self.get('/jwt/wait', h)
            if r.json().get('error') != 'temporarily_banned':
                break
            time.sleep(0.2)
        self.assertEqual(r.json().get('error'), 'rate_limited', 'ban did not end: %r' % r.body)
        # still over the tier limit: the next ban is longer (base * multiplier)
        second = None
        for i in range(6):
            r = self.get('/jwt/c%d' % i, h)
            self.assertEqual(r.status, 429, r.body)
            if r.json()['error'] == 'temporarily_banned':
                second = r
                break
        self.assertIsNotNone(second, 'no second ban')
        self.assertGreaterEqual(i, 3, 'the second ban came before threshold rejections')
        ban2 = self.assert429(second, 'temporarily_banned', 'free', 5, 60)
        self.assertTrue(3 <= ban2 <= 4, 'second ban should be 4s, Retry-After %d' % ban2)
        self.assertGreater(ban2, ban1)
        # other users are not affected
        other = self.register()
        self.assertEqual(self.get('/jwt/o', bearer(other['access_token'])).status, 200)


class IpLimitBanTest(IdentityCase):
    """The per-IP limit and its progressive ban (clients from 192.0.2.0/24 via XFF)."""

    CONFIG = '''
        backend b1 127.0.0.1:{b1}
        tier free 5/60s
        ip_limit 3/60s
        ban threshold=2 base=3s multiplier=2 max=10s
        trusted_proxy 127.0.0.0/8
        route / auth=none
    '''

    def test_ip_limit_then_ip_ban(self):
        self.start()
        xff = {'X-Forwarded-For': '192.0.2.10'}
        for i in range(3):
            self.assertEqual(self.get('/i%d' % i, xff).status, 200)
        for i in range(2):
            r = self.get('/r%d' % i, xff)
            self.assert429(r, 'rate_limited', 'ip', 3, 60)
        codes = [self.get('/b%d' % i, xff).json()['error'] for i in range(2)]
        self.assertEqual(codes[-1], 'temporarily_banned', codes)
        r = self.get('/health', xff)
        self.assertEqual(r.status, 429, 'an IP ban covers every path: %r' % r.body)
        self.assertEqual(r.json()['error'], 'temporarily_banned')
        self.assertTrue(1 <= int(r.header('Retry-After')) <= 3)
        # another client is fine
        self.assertEqual(self.get('/x', {'X-Forwarded-For': '192.0.2.11'}).status, 200)


# ---------------------------------------------------------------- restart persistence

class PersistenceTest(IdentityCase):
    CONFIG = '''
        backend b1 127.0.0.1:{b1}
        tier free 5/60s
        ban threshold=1 base=60s multiplier=2 max=10m
        ip_limit_exempt 127.0.0.0/8
        trusted_proxy 127.0.0.0/8
        route / auth=none
        route /jwt auth=jwt
        route /key auth=apikey
    '''

    @gwtest.timeout(60)
    def test_state_survives_a_restart(self):
        self.start()
        alice, bob, carol, dave = self.register_many(4)
        akey = self.create_key(alice['access_token'])
        self.upgrade('basic', api_key=akey['api_key'])
        bkey = self.create_key(bob['access_token'])
        r = self.admin('/admin/block_key', {'api_key': bkey['api_key']})
        self.assertEqual(r.status, 200, r.body)
        r = self.admin('/admin/block_ip', {'ip': '192.0.2.0/28'})
        self.assertEqual(r.status, 200, r.body)
        # carol gets herself banned (threshold=1: the second rejection bans for 60s)
        ch = bearer(carol['access_token'])
        for i in range(5):
            self.assertEqual(self.get('/jwt/%d' % i, ch).status, 200)
        for i in range(4):
            r = self.get('/jwt/x%d' % i, ch)
            if r.json().get('error') == 'temporarily_banned':
                break
        self.assertEqual(r.json().get('error'), 'temporarily_banned', r.body)
        # dave logs out: his token's revocation must outlive the process
        self.assertEqual(self.request('POST', '/auth/logout',
                                      bearer(dave['access_token'])).status, 200)
        time.sleep(0.5)  # the ban is persisted off-loop

        self.restart_same_db()

        # alice: account, key and tier
        r = self.login(alice['email'])
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['tier'], 'basic')
        self.assertEqual(r.json()['user_id'], alice['user_id'])
        r = self.get('/key/a', {'X-API-Key': akey['api_key']})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header('X-RateLimit-Limit'), '20')
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'basic')
        # a token from before the restart is still good (same secret)
        self.assertEqual(self.get('/jwt/a', bearer(alice['access_token'])).status, 200)
        lst = self.get('/auth/api-keys', bearer(alice['access_token'])).json()
        self.assertEqual([i['prefix'] for i in lst], [akey['prefix']])
        # bob's key stays blocked, the IP block stays
        self.assertError(self.get('/key/b', {'X-API-Key': bkey['api_key']}), 403, 'blocked')
        self.assertError(self.get('/health', {'X-Forwarded-For': '192.0.2.5'}), 403, 'ip_blocked')
        self.assertEqual(self.get('/health', {'X-Forwarded-For': '192.0.2.17'}).status, 200)
        # carol is still banned, for what is left of the 60s
        r = self.get('/jwt/c', ch)
        ra = self.assert429(r, 'temporarily_banned', 'free', 5, 60)
        self.assertTrue(40 <= ra <= 60, ra)
        # dave's old token stays revoked
        self.assertTokenError(self.get('/jwt/d', bearer(dave['access_token'])), 'token_revoked')
        self.assertEqual(self.login(dave['email']).status, 200)

    def test_generated_jwt_secret_is_kept(self):
        # without JWT_SECRET_KEY the daemon makes a secret once and keeps it in the database
        self.start(env={'JWT_SECRET_KEY': None})
        u = self.register()
        self.assertEqual(self.get('/jwt/1', bearer(u['access_token'])).status, 200)
        # and it is not the harness's secret
        self.assertTokenError(self.get('/jwt/2', bearer(jwt_encode(access_claims(u['user_id'])))))
        self.restart_same_db(env={'JWT_SECRET_KEY': None})
        self.assertEqual(self.get('/jwt/3', bearer(u['access_token'])).status, 200)
        self.assertEqual(self.login(u['email']).status, 200)


# ---------------------------------------------------------------- SQL-looking input

class InjectionTest(IdentityCase):
    def setUp(self):
        super().setUp()
        self.start()

    def test_sql_looking_credentials_are_stored_verbatim(self):
        cases = [
            ("o'brien'--@example.com", "' OR '1'='1'; DROP TABLE users; --"),
            ("x'or'1'='1@example.com", 'pass"word\\\'); DELETE FROM api_keys;--'),
            ('a%b_c@example.com', '%_%_%_%_%_'),
            ('robert@example.com', "Robert'); DROP TABLE users;--"),
        ]
        users = []
        for email, pw in cases:
            with self.subTest(email=email):
                u = self.register(email, pw)
                users.append(u)
                me = self.get('/auth/me', bearer(u['access_token'])).json()
                self.assertEqual(me['email'], email)
        # each logs in with exactly its own password, and no other
        for (email, pw), u in zip(cases, users):
            with self.subTest(email=email):
                r = self.login(email, pw)
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()['user_id'], u['user_id'])
                self.assertError(self.login(email, "' OR '1'='1"), 401, 'invalid_credentials')
                self.assertError(self.login(email, pw + ' '), 401, 'invalid_credentials')
        # a LIKE-pattern look-alike is a different address
        u = self.register('axbyc@example.com')
        self.assertNotEqual(u['user_id'], users[2]['user_id'])
        r = self.login("' OR 1=1 --", 'x' * 8)
        self.assertIn(r.status, (400, 401), r.body)  # not an address, and no way in
        self.assertError(self.login("nobody'--@example.com", "' OR '1'='1"), 401,
                         'invalid_credentials')
        # the tables are all still there
        self.assertEqual(self.login('robert@example.com', "Robert'); DROP TABLE users;--").status,
                         200)
        r = self.get('/admin/users', self.admin_headers())
        self.assertEqual(r.status, 200, r.body)
        emails = {x['email'] for x in r.json()['users']}
        self.assertTrue({e for e, _ in cases} <= emails, emails)

    def test_sql_looking_prefix_and_key(self):
        u = self.register()
        k = self.create_key(u['access_token'])
        for bad in ("' OR '1'='1", "x' OR prefix LIKE '%"):
            with self.subTest(bad=bad):
                self.assertError(self.get('/key/x', {'X-API-Key': bad}), 401, 'invalid_api_key')
        for p in ("%27%20OR%20%271%27%3D%271", '%25', '_' * 12, k['prefix'][:-1] + '%25'):
            r = self.request('DELETE', '/auth/api-keys/' + p, bearer(u['access_token']))
            self.assertError(r, 404, 'not_found')
        self.assertEqual(self.get('/key/x', {'X-API-Key': k['api_key']}).status, 200)


# ---------------------------------------------------------------- queue priority by tier

class QueuePriorityTest(IdentityCase):
    CONFIG = '''
        workers 1
        backend b1 127.0.0.1:{b1} max_conns=1
        queue max=16 timeout=10s
        timeouts connect=2s response=10s
        tier free 50/60s
        ip_limit_exempt 127.0.0.0/8
        route / auth=jwt
    '''

    @gwtest.timeout(45)
    def test_enterprise_is_served_before_free_under_saturation(self):
        self.start()
        free, ent = self.register_many(2)
        self.upgrade('enterprise', user_id=ent['user_id'])
        results = {}
        lock = threading.Lock()

        def go(name, token, path):
            r = gwtest.http_request(self.gw.port, 'GET', path, bearer(token), timeout=20)
            with lock:
                results[name] = (time.monotonic(), r)

        # one slow request holds the only backend connection
        hold = threading.Thread(target=go, args=('hold', free['access_token'], '/slow?ms=1500'))
        hold.start()
        time.sleep(0.4)
        threads = []
        # three free requests queue first, then an enterprise one
        for i in range(3):
            t = threading.Thread(target=go, args=('free%d' % i, free['access_token'],
                                                  '/slow?ms=200&n=%d' % i))
            t.start()
            threads.append(t)
            time.sleep(0.1)
        t = threading.Thread(target=go, args=('ent', ent['access_token'], '/slow?ms=200&e=1'))
        t.start()
        threads.append(t)
        for t in threads + [hold]:
            t.join(25)
        for name, (_, r) in results.items():
            self.assertEqual(r.status, 200, '%s: %d %r' % (name, r.status, r.body[:200]))
        self.assertEqual(len(results), 5, results)
        # the backend serves one at a time: the order of completion is the order of service
        order = sorted(results, key=lambda n: results[n][0])
        self.assertEqual(order[0], 'hold', order)
        self.assertEqual(order[1], 'ent', 'enterprise was not served first: %s' % order)
