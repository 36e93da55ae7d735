"""End-to-end tests of the PostgreSQL store (`database postgresql://...`).

A real PostgreSQL (Debian's server binaries, see pgserver.py) runs on a free loopback
port for the whole class, one fresh database per test; the tests skip when the binaries
are not installed. Covered:

- users, keys and tiers are shared: registered, logged in and keyed through one gatewayd,
  used through a second one on the same database;
- three instances starting at once apply each migration exactly once (schema_version
  rows and the "applied migration" log lines);
- PostgreSQL stopped: store-backed endpoints answer 503 with SPEC section 4's error JSON
  while proxying with already-known keys goes on; after the restart they recover;
- gatewayd --migrate-db copies an SQLite store (users, keys, blocks, audit log) into
  PostgreSQL, and the copied user logs in through a gatewayd on PostgreSQL;
- an unreachable server at start-up is a clear error and exit status 1; --migrate-status
  and --fresh-db work on PostgreSQL.
"""

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import gwtest
import pgserver
from test_identity import IdentityCase, bearer, unique_email, PASSWORD

CONFIG = '''
    database {db}
    backend b1 127.0.0.1:{{b1}}
    tier free 100/60s
    ip_limit_exempt 127.0.0.0/8
    route /auth auth=none
    route /key auth=apikey
    route / auth=any
'''

_db_counter = itertools.count(1)


class PostgresCase(IdentityCase):
    timeout = 120
    server = None
    server_dir = None

    @classmethod
    def setUpClass(cls):
        why = pgserver.available()
        if why:
            raise __import__('unittest').SkipTest(why)
        cls.server_dir = tempfile.mkdtemp(prefix='gwtest-pg-')
        try:
            cls.server = pgserver.PgServer(cls.server_dir)
            cls.server.start()
        except Exception:
            shutil.rmtree(cls.server_dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.destroy()
        if cls.server_dir:
            shutil.rmtree(cls.server_dir, ignore_errors=True)

    def setUp(self):
        # a server stopped by a failed test must not fail the next ones
        self.server.start()
        self.dbname = 'gw_%d_%d' % (os.getpid(), next(_db_counter))
        self.db = self.server.create_db(self.dbname)

    def config(self, name):
        """The config of gateway `name`, with its own control and publish sockets."""
        return CONFIG.format(db=self.db) + '''
            control ipc://{tmp}/%s.ctl
            publish ipc://{tmp}/%s.pub
        ''' % (name, name)

    def start_named(self, name, wait=True):
        gw = self.start_gateway(self.config(name), port=gwtest.free_port(), wait=wait)
        if not self.backends:
            raise AssertionError('start the backend first')
        return gw

    def sql(self, query):
        return self.server.psql(query, db=self.dbname)

    def post_to(self, gw, path, obj, headers=None):
        h = [('Content-Type', 'application/json')] + list((headers or {}).items())
        return gw.request('POST', path, h, json.dumps(obj).encode())

    def user_with_key(self, gw, tag):
        """Registers a user through gw and gives them a key: (email, access token, key)."""
        email = unique_email(tag)
        r = self.post_to(gw, '/auth/register', {'email': email, 'password': PASSWORD})
        self.assertEqual(r.status, 201, r.body)
        access = r.json()['access_token']
        r = gw.request('POST', '/auth/api-keys', bearer(access))
        self.assertEqual(r.status, 201, r.body)
        return email, access, r.json()['api_key']

    def run_gatewayd(self, *args, timeout=30):
        self._gw_state()
        return subprocess.run([gwtest.GATEWAYD] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmp,
                              env=self.gateway_env(), timeout=timeout)


class SharedStoreTest(PostgresCase):

    def test_users_keys_and_tiers_are_shared_between_instances(self):
        self.start_backends(1)
        gw1 = self.start_named('gw1')
        email, access, key = self.user_with_key(gw1, 'pg')
        r = self.post_to(gw1, '/admin/upgrade_tier', {'api_key': key, 'tier': 'premium'},
                         self.admin_headers())
        self.assertEqual(r.status, 200, r.body)
        # the rows are in PostgreSQL, not in a file next to the gateway
        self.assertEqual(self.sql("SELECT email FROM users"), [[email.lower()]])
        self.assertEqual(self.sql("SELECT tier FROM api_keys"), [['premium']])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'gatewayd.db')))

        gw2 = self.start_named('gw2')
        r = self.post_to(gw2, '/auth/login', {'email': email, 'password': PASSWORD})
        self.assertEqual(r.status, 200, r.body)
        r = gw2.get('/key/x', {'X-API-Key': key})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['headers'].get('x-user-tier'), 'premium', r.json())
        # and the other way round: a key made on gw2 is stored for everyone
        r = gw2.request('POST', '/auth/api-keys', bearer(access))
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(int(self.sql("SELECT count(*) FROM api_keys")[0][0]), 2)
        # the same email cannot be registered twice through the other instance
        r = self.post_to(gw2, '/auth/register', {'email': email.upper(), 'password': PASSWORD})
        self.assertError(r, 409)

    def test_concurrent_start_migrates_once(self):
        self.start_backends(1)
        gws = [self.start_named('gw%d' % i, wait=False) for i in range(3)]
        for gw in gws:
            gwtest.wait_port(gw.port, proc=gw.proc)
        rows = self.sql('SELECT version FROM schema_version ORDER BY version')
        self.assertEqual(rows, [['1'], ['2'], ['3']])
        logs = ''.join(gw.proc.log() for gw in gws)
        for v in (1, 2, 3):
            self.assertEqual(logs.count('applied migration %d ' % v), 1,
                             'migration %d applied %d times' % (
                                 v, logs.count('applied migration %d ' % v)))
        for gw in gws:
            self.assertEqual(gw.get('/health').status, 200)

    def test_migrate_status_and_fresh_db(self):
        cp = self.run_gatewayd('-d', 'database=' + self.db, '--migrate-status')
        self.assertEqual(cp.returncode, 0, cp.stderr)
        out = cp.stdout.decode()
        self.assertIn('current version: 0', out)
        self.assertEqual(out.count('pending'), 3, out)
        self.start_backends(1)
        gw = self.start_named('gw1')
        r = self.post_to(gw, '/auth/register', {'email': unique_email(), 'password': PASSWORD})
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(gw.stop(), 0)
        cp = self.run_gatewayd('-d', 'database=' + self.db, '--migrate-status')
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn('current version: 3', cp.stdout.decode())
        self.assertNotIn('pending', cp.stdout.decode())
        cp = self.run_gatewayd('-d', 'database=' + self.db, '--fresh-db', '--yes')
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(self.sql('SELECT count(*) FROM users'), [['0']])
        self.assertEqual(len(self.sql('SELECT version FROM schema_version')), 3)

    def test_database_password_is_masked_in_output(self):
        # the test server trusts every local login, so a password is accepted and unused
        db = self.db.replace('://%s@' % pgserver.USER, '://%s:s3cretpw@' % pgserver.USER)
        self.assertIn(':s3cretpw@', db)
        runs = [self.run_gatewayd('-d', 'database=' + db, '--fresh-db'),
                self.run_gatewayd('-d', 'database=' + db, '--fresh-db', '--yes'),
                self.run_gatewayd('-d', 'database=' + db, '--migrate-status')]
        self.assertEqual([cp.returncode for cp in runs], [1, 0, 0],
                         [cp.stderr for cp in runs])
        for cp in runs:
            out = (cp.stdout + cp.stderr).decode()
            self.assertIn(':***@127.0.0.1', out)
            self.assertNotIn('s3cretpw', out)
        self.assertIn('add --yes', runs[0].stderr.decode())
        self.assertIn('recreated at schema version', runs[1].stdout.decode())

    def test_unreachable_server_at_start_up(self):
        url = 'postgresql://gatewayd@127.0.0.1:%d/gatewayd' % pgserver.closed_port()
        t0 = time.monotonic()
        self.start_backends(1)
        gw = self.start_gateway(CONFIG.format(db=url), wait=False)
        self.assertEqual(gw.proc.wait(10), 1)
        self.assertLess(time.monotonic() - t0, 8)
        log = gw.proc.log()
        self.assertIn('cannot connect to PostgreSQL', log)
        self.assertIn('refused', log)
        # a malformed URL is an error of the file, found by -t without connecting
        rc, err, _ = self.check_config(CONFIG.format(db='postgresql://h/db?colour=blue'))
        self.assertEqual(rc, 1, err)
        self.assertIn('invalid PostgreSQL URL', err)
        self.assertIn('colour', err)


class RestartTest(PostgresCase):

    def test_server_restart_503_then_recover(self):
        self.start_backends(1)
        gw = self.start_named('gw1')
        email, access, key = self.user_with_key(gw, 'restart')
        self.assertEqual(gw.get('/key/a', {'X-API-Key': key}).status, 200)

        self.server.stop()
        t0 = time.monotonic()
        for path, body in (('/auth/login', {'email': email, 'password': PASSWORD}),
                           ('/auth/register', {'email': unique_email(), 'password': PASSWORD})):
            with self.subTest(path=path):
                r = self.post_to(gw, path, body)
                j = self.assertError(r, 503, 'service_unavailable')
                self.assertTrue(j['message'], j)
                self.assertIsNotNone(r.header('Retry-After'))
        r = gw.request('POST', '/auth/api-keys', bearer(access))
        self.assertError(r, 503, 'service_unavailable')
        self.assertLess(time.monotonic() - t0, 10, 'store failures must be quick')
        # proxying with a key the gateway already knows does not need the database
        for _ in range(5):
            r = gw.get('/key/b', {'X-API-Key': key})
            self.assertEqual(r.status, 200, r.body)
        self.assertEqual(gw.get('/health').status, 200)

        self.server.start()
        # every pool connection is stale now: each must reconnect, none may stay broken
        for i in range(12):
            r = self.post_to(gw, '/auth/login', {'email': email, 'password': PASSWORD})
            self.assertEqual(r.status, 200, 'login %d after the restart: %d %r' % (
                i, r.status, r.body[:200]))
        r = self.post_to(gw, '/auth/register', {'email': unique_email(), 'password': PASSWORD})
        self.assertEqual(r.status, 201, r.body)
        self.assertIn('reconnected to PostgreSQL', gw.proc.log())

        # a restart between two requests: every pooled connection is stale, and the
        # first statement on each is retried on a new connection instead of failing
        self.server.stop()
        self.server.start()
        for i in range(8):
            r = self.post_to(gw, '/auth/login', {'email': email, 'password': PASSWORD})
            self.assertEqual(r.status, 200, 'login %d after a quiet restart: %d %r' % (
                i, r.status, r.body[:200]))


class FrozenServerTest(PostgresCase):

    def freeze(self):
        """SIGSTOPs the server's processes until the test ends (or thaw() is called)."""
        pids = self.server.pids()
        self.assertGreater(len(pids), 1, 'the postmaster and its sessions')

        def thaw():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.addCleanup(thaw)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return thaw

    def login(self, gw, email, timeout=30):
        return gw.request('POST', '/auth/login', [('Content-Type', 'application/json')],
                          json.dumps({'email': email, 'password': PASSWORD}).encode(),
                          timeout=timeout)

    def login_while_frozen(self, gw, tag):
        """A user with a key, then the server frozen and a login: (email, key, thaw,
        the login's response, its seconds)."""
        email, _, key = self.user_with_key(gw, tag)
        thaw = self.freeze()
        t0 = time.monotonic()
        r = self.login(gw, email)
        return email, key, thaw, r, time.monotonic() - t0

    def test_wait_longer_than_the_response_timeout_is_504(self):
        # the pool's answer is late (the statement has 10 s): the client is not left
        # waiting past `timeouts response=`, and the late answer is dropped cleanly
        self.start_backends(1)
        gw = self.start_gateway(self.config('gw1') + 'timeouts response=2s\n',
                                port=gwtest.free_port())
        email, _, thaw, r, elapsed = self.login_while_frozen(gw, 'late')
        self.assertError(r, 504, 'gateway_timeout')
        self.assertIn('close', (r.header('Connection') or '').lower())
        self.assertLess(elapsed, 4.5)
        self.assertGreater(elapsed, 1.5)
        # the orphaned request is released when its statement gives up (10 s)
        gwtest.wait_until(lambda: 'did not answer within 10 s' in gw.proc.log(), 15,
                          message='the statement gave up')
        thaw()
        gwtest.wait_until(lambda: self.login(gw, email).status == 200, 15,
                          message='login after the server answers again')
        m = gw.get('/metrics').body.decode()
        self.assertRegex(m, r'gatewayd_requests_total\{[^}]*code="504"[^}]*\} [1-9]')

    def test_unanswered_statement_fails_after_the_deadline_then_recovers(self):
        # a server that stops answering without closing its connections (SIGSTOP: as a
        # hung host or a path that drops everything) costs a request 10 s, not the
        # ~25 s of TCP keepalives, and the store works again once it answers
        self.start_backends(1)
        gw = self.start_named('gw1')
        email, key, thaw, r, elapsed = self.login_while_frozen(gw, 'frozen')
        self.assertError(r, 503, 'service_unavailable')
        self.assertGreater(elapsed, 9, 'the answer deadline is 10 s')
        self.assertLess(elapsed, 20, 'not the keepalives')
        gwtest.wait_until(lambda: 'did not answer within 10 s' in gw.proc.log(), 3,
                          message='the reason in the log')
        # proxying with a key the gateway already knows does not need the database
        self.assertEqual(gw.get('/key/b', {'X-API-Key': key}).status, 200)
        thaw()
        # the connection that timed out was closed: the next statement reconnects
        gwtest.wait_until(
            lambda: self.post_to(gw, '/auth/login',
                                 {'email': email, 'password': PASSWORD}).status == 200,
            15, message='login after the server answers again')


class MigrateDbTest(PostgresCase):

    def test_migrate_db_from_sqlite(self):
        self.start_backends(1)
        lite = os.path.join(self.tmp, 'old.db')
        gw = self.start_gateway(CONFIG.format(db='sqlite:' + lite))
        user = self.register()
        key = self.create_key(user['access_token'])['api_key']
        other = self.register()
        other_key = self.create_key(other['access_token'])['api_key']
        self.assertEqual(self.admin('/admin/block_key', {'api_key': other_key}).status, 200)
        self.assertEqual(self.admin('/admin/block_ip', {'ip': '203.0.113.0/24'}).status, 200)
        self.upgrade('premium', user_id=user['user_id'])
        audit = self.get('/admin/logs', self.admin_headers()).json()
        self.assertEqual(gw.stop(), 0)

        cp = self.run_gatewayd('--migrate-db', lite, self.db)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        out = cp.stdout.decode()
        self.assertIn('copied 2 users, 2 API keys, 2 blocks', out)
        self.assertEqual(self.sql('SELECT count(*) FROM users'), [['2']])
        self.assertEqual(self.sql("SELECT kind FROM blocks ORDER BY kind"), [['ip'], ['key']])
        n_audit = int(self.sql('SELECT count(*) FROM audit_log')[0][0])
        self.assertGreaterEqual(n_audit, 3)
        # a second copy into a non-empty database is refused, and changes nothing
        cp = self.run_gatewayd('--migrate-db', 'sqlite:' + lite, self.db)
        self.assertEqual(cp.returncode, 1)
        self.assertIn('already holds', cp.stderr.decode())
        self.assertEqual(self.sql('SELECT count(*) FROM users'), [['2']])

        gw = self.start_named('pg')
        r = self.post_to(gw, '/auth/login', {'email': user['email'], 'password': PASSWORD})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(gw.get('/key/x', {'X-API-Key': key}).json()['headers'].get(
            'x-user-tier'), 'premium')
        self.assertError(gw.get('/key/x', {'X-API-Key': other_key}), 403, 'blocked')
        r = gw.get('/admin/logs', self.admin_headers())
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()['entries'], audit['entries'])
        # new rows get new ids after the copied ones
        new = self.post_to(gw, '/auth/register', {'email': unique_email(), 'password': PASSWORD})
        self.assertEqual(new.status, 201, new.body)
        self.assertGreater(int(new.json()['user_id']), int(other['user_id']))
