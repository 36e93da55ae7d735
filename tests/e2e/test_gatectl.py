"""End-to-end tests of the control plane (SPEC section 7) through bin/gatectl.

Every command of the table (status, backends, geo, users, usage, strategy, block, unblock,
ban, unban, tier, keys list/create/rotate/revoke, backend add/remove/drain/enable/weight,
cache stats/purge, logs [-f], reload, config get/set), in human and --json form, against
a running gatewayd; keys named whole, by prefix or as u:ID; gatectl's exit status (0 done,
1 refused, 2 usage error, 3 daemon unreachable); the effect of each change on traffic;
the control socket's mode; raw requests sent with libnng through ctypes (another protocol
version, no version, named arguments); the bash completion; and that the man page and the
command table list the same commands.
"""

import ctypes
import ctypes.util
import json
import os
import re
import signal
import stat
import subprocess
import time

import gwtest
from test_admin import AdminCase, xff

GATECTL = os.path.join(gwtest.BIN, 'gatectl')
MAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'man', 'gatectl.1')


def nng_call(url, req):
    """One raw request over nng REQ (libnng through ctypes): the decoded reply."""
    path = ctypes.util.find_library('nng')
    if path is None:
        return None
    nng = ctypes.CDLL(path)
    sock = ctypes.c_uint32()
    if nng.nng_req0_open(ctypes.byref(sock)) != 0:
        raise AssertionError('nng_req0_open')
    try:
        nng.nng_socket_set_ms(sock, b'recv-timeout', 5000)
        if nng.nng_dial(sock, url.encode(), None, 0) != 0:
            raise AssertionError('nng_dial')
        if nng.nng_send(sock, req, len(req), 0) != 0:
            raise AssertionError('nng_send')
        buf = ctypes.c_void_p()
        size = ctypes.c_size_t()
        if nng.nng_recv(sock, ctypes.byref(buf), ctypes.byref(size), 1) != 0:
            raise AssertionError('nng_recv')
        reply = json.loads(ctypes.string_at(buf, size.value))
        nng.nng_free(buf, size)
    finally:
        nng.nng_close(sock)
    return reply


class GatectlCase(AdminCase):
    def setUp(self):
        super().setUp()
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.start()

    def start(self, *args, **kw):
        gw = super().start(*args, **kw)
        # the HTTP port opens before the control socket: wait until it answers
        gwtest.wait_until(lambda: self.ctl('status')[0] != 3, timeout=5,
                          message='the control socket')
        return gw

    def ctl(self, *args, url=None, env=None):
        """Runs gatectl: (exit status, stdout, stderr)."""
        e = dict(os.environ)
        e.pop('GATEWAYD_CONTROL', None)
        e.update(env or {})
        argv = [GATECTL]
        if url is not False:
            argv += ['-s', url or self.gw.control_url]
        cp = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=15)
        return cp.returncode, cp.stdout.decode(), cp.stderr.decode()

    def ok(self, *args):
        rc, out, err = self.ctl(*args)
        self.assertEqual(rc, 0, 'gatectl %s: %d %s' % (' '.join(args), rc, err))
        return out

    def ok_json(self, *args):
        j = json.loads(self.ok('--json', *args))
        self.assertIs(j['ok'], True, j)
        self.assertEqual(j['v'], 1, j)
        return j

    def refused(self, *args):
        rc, out, err = self.ctl(*args)
        self.assertEqual(rc, 1, 'gatectl %s: %d %s %s' % (' '.join(args), rc, out, err))
        self.assertTrue(err.strip(), 'no message on stderr')
        return err.lower()

    def actions(self):
        return [(e.get('actor'), e.get('action')) for e in self.logs()]


class GatectlTest(GatectlCase):
    def test_socket_is_mode_0600(self):
        url = self.gw.control_url
        self.assertTrue(url.startswith('ipc://'), url)
        st = os.stat(url[len('ipc://'):])
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    def test_status(self):
        out = self.ok('status')
        self.assertRegex(out, r'(?m)^strategy\s+round_robin$')
        self.assertRegex(out, r'(?m)^total_requests\s+\d+$')
        self.assertRegex(out, r'(?m)^queue\.depth\s+\d+$')
        j = self.ok_json('status')
        stats = self.get('/stats').json()
        for k in ('strategy', 'uptime_seconds', 'total_requests', 'backends', 'cache',
                  'queue', 'rate_limit'):
            self.assertIn(k, j)
        self.assertEqual(j['strategy'], stats['strategy'])
        self.assertEqual([b['id'] for b in j['backends']], [b['id'] for b in stats['backends']])
        # --json after the command works too
        self.assertIs(json.loads(self.ok('status', '--json'))['ok'], True)

    def test_backends(self):
        out = self.ok('backends').splitlines()
        self.assertEqual(out[0].split(), ['ID', 'ADDRESS', 'DC', 'STATE', 'HEALTHY', 'CIRCUIT',
                                          'WEIGHT', 'ACTIVE', 'REQUESTS', 'FAILURES', 'AVG_MS'])
        self.assertEqual(len(out), 2, out)
        self.assertTrue(out[1].startswith('b1 '), out)
        self.assertIn('127.0.0.1:%d' % self.backends[0].port, out[1])
        self.assertEqual(out[0].index('ADDRESS'), out[1].index('127.0.0.1'), 'not aligned')
        j = self.ok_json('backends')
        self.assertEqual(len(j['backends']), 1)
        b = j['backends'][0]
        self.assertEqual(b['id'], 'b1')
        self.assertIs(b['healthy'], True)
        self.assertEqual(b['circuit'], 'closed')

    def test_strategy(self):
        self.assertRegex(self.ok('strategy'), r'(?m)^strategy\s+round_robin$')
        self.assertEqual(self.ok_json('strategy', 'ip_hash')['strategy'], 'ip_hash')
        self.assertEqual(self.strategy(), 'ip_hash')
        self.assertRegex(self.ok('strategy', 'least_connections'),
                         r'(?m)^strategy\s+least_connections$')
        self.assertEqual(self.strategy(), 'least_connections')
        self.assertEqual(self.ok_json('strategy')['strategy'], 'least_connections')
        err = self.refused('strategy', 'fastest')
        self.assertIn('unknown strategy', err)
        self.assertEqual(self.strategy(), 'least_connections')
        actions = [e.get('action') for e in self.logs()]
        self.assertIn('change_strategy', actions)

    def test_block_and_unblock_key(self):
        u = self.register()
        key = self.create_key(u['access_token'])['api_key']
        kh = {'X-API-Key': key}
        self.assertEqual(self.get('/key/before', kh).status, 200)
        out = self.ok('block', key)
        self.assertRegex(out, r'(?m)^blocked\s+key$')
        self.assertNotIn(key, out)
        self.assertError(self.get('/key/x', kh), 403, 'blocked')
        self.assertRegex(self.ok('unblock', key), r'(?m)^unblocked\s+key$')
        self.assertEqual(self.get('/key/after', kh).status, 200)
        # --json, and the refusals
        self.assertEqual(self.ok_json('block', key)['blocked'], 'key')
        self.assertError(self.get('/key/y', kh), 403, 'blocked')
        self.assertEqual(self.ok_json('unblock', key)['unblocked'], 'key')
        self.assertIn('not blocked', self.refused('unblock', key))
        self.assertIn('no such api key', self.refused('block', 'gk_' + '0' * 64))
        self.assertEqual(self.get('/key/z', kh).status, 200)
        logged = [(e.get('actor'), e.get('action')) for e in self.logs()]
        self.assertIn(('gatectl', 'block_key'), logged)
        self.assertIn(('gatectl', 'unblock_key'), logged)

    def test_ban_and_unban(self):
        out = self.ok('ban', '192.0.2.0/24')
        self.assertRegex(out, r'(?m)^ip\s+192\.0\.2\.0/24$')
        self.assertError(self.get('/x', xff('192.0.2.77')), 403, 'ip_blocked')
        self.assertEqual(self.get('/x', xff('192.0.3.1')).status, 200)
        self.assertRegex(self.ok('unban', '192.0.2.0/24'), r'(?m)^unbanned\s+192\.0\.2\.0/24$')
        self.assertEqual(self.get('/x', xff('192.0.2.77')).status, 200)
        # a single address, for a duration, --json
        j = self.ok_json('ban', '203.0.113.9', '10m')
        self.assertEqual(j['ip'], '203.0.113.9')
        self.assertIsInstance(j['until'], (int, float))
        self.assertError(self.get('/x', xff('203.0.113.9')), 403, 'ip_blocked')
        self.assertEqual(self.ok_json('unban', '203.0.113.9')['unbanned'], '203.0.113.9')
        self.assertEqual(self.get('/x', xff('203.0.113.9')).status, 200)
        self.assertIn('not banned', self.refused('unban', '203.0.113.9'))
        self.assertIn('not an address', self.refused('ban', 'not-an-ip'))
        self.assertIn('not a duration', self.refused('ban', '192.0.2.1', 'soon'))
        logged = [(e.get('actor'), e.get('action')) for e in self.logs()]
        self.assertIn(('gatectl', 'block_ip'), logged)
        self.assertIn(('gatectl', 'unblock_ip'), logged)

    def test_reload_picks_up_an_edited_file(self):
        self.assertEqual(self.strategy(), 'round_robin')
        with open(self.gw.config_path, 'a') as f:
            f.write('\nstrategy weighted\n')
        out = self.ok('reload')
        self.assertRegex(out, r'(?m)^reload\s+done$')
        self.assertEqual(self.strategy(), 'weighted')
        with open(self.gw.config_path) as f:
            text = f.read().replace('strategy weighted', 'strategy random')
        with open(self.gw.config_path, 'w') as f:
            f.write(text)
        j = self.ok_json('reload')
        self.assertEqual((j['reload'], j['strategy'], j['backends']), ('done', 'random', 1))
        self.assertEqual(self.strategy(), 'random')
        # a broken file is refused with the parser's message; the running one stays
        with open(self.gw.config_path, 'a') as f:
            f.write('\nretries eleven\n')
        err = self.refused('reload')
        self.assertIn('retries', err)
        self.assertIn('nothing changed', err)
        self.assertEqual(self.strategy(), 'random')
        self.assertEqual(self.get('/x').status, 200)
        self.assertIn(('gatectl', 'reload'), self.actions())

    def test_usage_errors_are_2(self):
        for args in ((), ('nosuchcommand',), ('status', 'extra'), ('block',),
                     ('ban', '192.0.2.1', '1h', 'more'), ('strategy', 'a', 'b'),
                     ('-x', 'status'), ('help', 'nosuchcommand'), ('keys',),
                     ('keys', 'nosuch'), ('keys', 'create', '--tier'),
                     ('keys', 'create', 'extra'), ('backend', 'add', 'b9'),
                     ('backend', 'weight', 'b1'), ('logs', '-n'), ('logs', '-x'),
                     ('config', 'set', 'retries'), ('tier', 'gk_x'), ('usage',),
                     ('completion',), ('completion', 'zsh'), ('cache',)):
            with self.subTest(args=args):
                rc, out, err = self.ctl(*args)
                self.assertEqual(rc, 2, (args, out, err))
                self.assertTrue(err.strip())

    def test_help(self):
        rc, out, _ = self.ctl('help', url=False)
        self.assertEqual(rc, 0)
        for name in ('status', 'backends', 'strategy', 'reload', 'block', 'unblock', 'ban',
                     'unban'):
            self.assertRegex(out, r'(?m)^  %s\b' % name)
        rc, out, _ = self.ctl('help', 'ban', url=False)
        self.assertEqual(rc, 0)
        self.assertIn('ban IP|CIDR [DURATION]', out)
        rc, out, _ = self.ctl('help', 'keys', url=False)
        self.assertEqual(rc, 0)
        for sub in ('list', 'create [--tier T] [--user ID]', 'rotate KEY', 'revoke KEY'):
            self.assertIn('gatectl keys ' + sub, out)
        rc, out, _ = self.ctl('help', 'backend', 'add', url=False)
        self.assertEqual(rc, 0)
        self.assertIn('backend add ID HOST:PORT [weight=N] [dc=NAME]', out)
        self.assertNotIn('backend remove', out)

    def test_daemon_down_is_3(self):
        rc, out, err = self.ctl('status', url='ipc://%s/nobody.ctl' % self.tmp)
        self.assertEqual(rc, 3, (out, err))
        self.assertIn('cannot reach', err)

    def test_environment_names_the_socket(self):
        rc, out, err = self.ctl('status', url=False, env={'GATEWAYD_CONTROL':
                                                          self.gw.control_url})
        self.assertEqual(rc, 0, err)
        rc, out, err = self.ctl('status', url=False, env={
            'GATEWAYD_CONTROL': 'ipc://%s/nobody.ctl' % self.tmp})
        self.assertEqual(rc, 3, err)

    def test_other_protocol_version_is_refused(self):
        path = ctypes.util.find_library('nng')
        if path is None:
            self.skipTest('libnng not found')
        nng = ctypes.CDLL(path)
        sock = ctypes.c_uint32()
        self.assertEqual(nng.nng_req0_open(ctypes.byref(sock)), 0)
        try:
            nng.nng_socket_set_ms(sock, b'recv-timeout', 5000)
            self.assertEqual(nng.nng_dial(sock, self.gw.control_url.encode(), None, 0), 0)
            req = b'{"v":99,"cmd":"status","args":[]}'
            self.assertEqual(nng.nng_send(sock, req, len(req), 0), 0)
            buf = ctypes.c_void_p()
            size = ctypes.c_size_t()
            self.assertEqual(nng.nng_recv(sock, ctypes.byref(buf), ctypes.byref(size), 1), 0)
            reply = json.loads(ctypes.string_at(buf, size.value))
            nng.nng_free(buf, size)
        finally:
            nng.nng_close(sock)
        self.assertEqual(reply, {'v': 1, 'ok': False,
                                 'error': 'protocol version 99, daemon speaks 1'})

    def test_named_arguments_and_no_version(self):
        if ctypes.util.find_library('nng') is None:
            self.skipTest('libnng not found')
        url = self.gw.control_url
        r = nng_call(url, b'{"cmd":"status"}')
        self.assertIs(r['ok'], True, r)
        self.assertEqual(r['v'], 1)
        r = nng_call(url, b'{"cmd":"ban","ip":"198.51.100.0/24","duration":"10m"}')
        self.assertIs(r['ok'], True, r)
        self.assertEqual(r['ip'], '198.51.100.0/24')
        self.assertError(self.get('/x', xff('198.51.100.3')), 403, 'ip_blocked')
        r = nng_call(url, b'{"v":1,"cmd":"unban","args":["198.51.100.0/24"]}')
        self.assertIs(r['ok'], True, r)
        self.assertEqual(self.get('/x', xff('198.51.100.3')).status, 200)
        r = nng_call(url, b'{"cmd":"ban","address":"198.51.100.7"}')
        self.assertIs(r['ok'], False, r)
        self.assertIn('takes no argument "address"', r['error'])
        r = nng_call(url, b'{"cmd":"backend weight","id":"b1","weight":3}')
        self.assertIs(r['ok'], True, r)
        self.assertEqual(r['weight'], 3)


class GatectlKeysTest(GatectlCase):
    """users, usage, tier, keys *, and block/unblock by prefix or u:ID."""

    def user_and_key(self):
        u = self.register()
        k = self.create_key(u['access_token'])
        return u, k

    def test_block_by_prefix_and_by_user(self):
        u, k = self.user_and_key()
        kh = {'X-API-Key': k['api_key']}
        out = self.ok('block', k['prefix'])
        self.assertRegex(out, r'(?m)^prefix\s+%s$' % re.escape(k['prefix']))
        self.assertError(self.get('/key/x', kh), 403, 'blocked')
        self.assertEqual(self.ok_json('unblock', k['prefix'])['unblocked'], 'key')
        self.assertEqual(self.get('/key/x', kh).status, 200)
        uid = u['user_id']
        j = self.ok_json('block', 'u:%d' % uid)
        self.assertEqual((j['blocked'], j['user_id']), ('user', uid))
        self.assertError(self.get('/key/x', kh), 403, 'blocked')
        self.assertRegex(self.ok('unblock', 'u:%d' % uid), r'(?m)^unblocked\s+user$')
        self.assertEqual(self.get('/key/x', kh).status, 200)
        self.assertIn('no such user', self.refused('block', 'u:999999'))
        self.assertIn('no such api key', self.refused('block', 'gk_nosuchpre'))
        self.assertIn(('gatectl', 'block_user'), self.actions())

    def test_ambiguous_prefix_is_refused(self):
        # two live keys with one prefix (12 random hex digits make this rare, never
        # impossible): written into the database, which the lookup by prefix reads
        import sqlite3
        db = sqlite3.connect(self.db_path(), timeout=5)
        try:
            for h in ('a' * 64, 'b' * 64):
                db.execute('INSERT INTO api_keys (hash, prefix, tier, user_id, created_at) '
                           'VALUES (?, ?, ?, NULL, ?)', (h, 'gk_dupdupdup0', 'free',
                                                         int(time.time())))
            db.commit()
        finally:
            db.close()
        for args in (('block', 'gk_dupdupdup0'), ('usage', 'gk_dupdupdup0'),
                     ('tier', 'gk_dupdupdup0', 'basic'), ('keys', 'revoke', 'gk_dupdupdup0')):
            with self.subTest(args=args):
                self.assertIn('give the whole key', self.refused(*args))

    def test_tier_and_usage(self):
        u, k = self.user_and_key()
        kh = {'X-API-Key': k['api_key']}
        self.assertEqual(self.get('/key/x', kh).status, 200)
        out = self.ok('usage', k['prefix'])
        self.assertRegex(out, r'(?m)^tier\s+free$')
        self.assertRegex(out, r'(?m)^limit\s+5$')
        j = self.ok_json('usage', k['api_key'])
        self.assertEqual((j['tier'], j['limit'], j['window'], j['prefix']),
                         ('free', 5, 60, k['prefix']))
        self.assertEqual(j['remaining'], 4)
        self.assertEqual(j['identity'], 'u:%d' % u['user_id'])
        self.assertIs(j['blocked'], False)
        # by prefix (as gatetop sends it), by user id; the limit changes at once
        j = self.ok_json('tier', k['prefix'], 'premium')
        self.assertEqual((j['tier'], j['prefix'], j['user_id']),
                         ('premium', k['prefix'], u['user_id']))
        self.assertEqual(self.get('/usage', kh).json()['limit'], 100)
        self.assertRegex(self.ok('tier', str(u['user_id']), 'basic'), r'(?m)^tier\s+basic$')
        self.assertEqual(self.get('/usage', kh).json()['tier'], 'basic')
        self.assertEqual(self.ok_json('usage', k['prefix'])['limit'], 20)
        err = self.refused('tier', k['prefix'], 'platinum')
        self.assertIn('free, basic, premium, enterprise', err)
        self.assertIn('no such api key', self.refused('usage', 'gk_000000000'))
        self.assertIn(('gatectl', 'upgrade_tier'), self.actions())

    def test_users_and_keys_list(self):
        u, k = self.user_and_key()
        out = self.ok('users').splitlines()
        self.assertEqual(out[0].split(), ['USER_ID', 'EMAIL', 'TIER', 'ROLE', 'BLOCKED', 'KEYS'])
        self.assertTrue(any(u['email'] in line for line in out[1:]), out)
        j = self.ok_json('users')
        me = [x for x in j['users'] if x['user_id'] == u['user_id']][0]
        self.assertEqual(me['keys'][0]['prefix'], k['prefix'])
        self.assertNotIn(k['api_key'], json.dumps(j))
        out = self.ok('keys', 'list')
        self.assertEqual(out.splitlines()[0].split(),
                         ['PREFIX', 'USER_ID', 'TIER', 'STATE', 'CREATED', 'LAST_USED', 'EXPIRES'])
        self.assertRegex(out, r'(?m)^%s\s+%d\s+free\s+active\s' % (re.escape(k['prefix']),
                                                                 u['user_id']))
        keys = self.ok_json('keys', 'list')['keys']
        mine = [x for x in keys if x['prefix'] == k['prefix']][0]
        self.assertEqual((mine['user_id'], mine['email'], mine['state']),
                         (u['user_id'], u['email'], 'active'))
        self.assertNotIn(k['api_key'], out + json.dumps(keys))

    def test_keys_create_rotate_revoke(self):
        # an ownerless key of the lowest tier, shown once
        out = self.ok('keys', 'create')
        m = re.search(r'(?m)^api_key\s+(gk_\w+)$', out)
        self.assertIsNotNone(m, out)
        key = m.group(1)
        self.assertRegex(out, r'(?m)^tier\s+free$')
        self.assertEqual(self.get('/key/x', {'X-API-Key': key}).status, 200)
        # --tier, --user, --json
        j = self.ok_json('keys', 'create', '--tier', 'basic')
        self.assertEqual(set(j) >= {'api_key', 'prefix', 'tier'}, True, j)
        self.assertEqual(j['tier'], 'basic')
        self.assertEqual(self.get('/usage', {'X-API-Key': j['api_key']}).json()['limit'], 20)
        u = self.register()
        j = self.ok_json('keys', 'create', '--user', str(u['user_id']))
        self.assertEqual((j['tier'], j['user_id']), ('free', u['user_id']))
        listed = self.get('/auth/api-keys', {'Authorization': 'Bearer ' + u['access_token']})
        self.assertIn(j['prefix'], [x['prefix'] for x in listed.json()])
        self.assertIn('user', self.refused('keys', 'create', '--user', str(u['user_id']),
                                           '--tier', 'premium'))
        self.assertIn('no such user', self.refused('keys', 'create', '--user', '999999'))
        self.assertIn('not a configured tier', self.refused('keys', 'create', '--tier', 'gold'))
        # rotate by prefix: both work, the old one for the grace period
        old = j
        r = self.ok_json('keys', 'rotate', old['prefix'])
        self.assertNotEqual(r['api_key'], old['api_key'])
        self.assertEqual(r['previous_prefix'], old['prefix'])
        self.assertGreater(r['previous_expires_at'], time.time() + 3600)
        for k in (old['api_key'], r['api_key']):
            self.assertEqual(self.get('/key/x', {'X-API-Key': k}).status, 200)
        # revoke: refused at once, then "revoked"
        out = self.ok('keys', 'revoke', r['api_key'])
        self.assertRegex(out, r'(?m)^revoked\s+%s$' % re.escape(r['prefix']))
        self.assertError(self.get('/key/x', {'X-API-Key': r['api_key']}), 401,
                         'invalid_api_key')
        self.assertIn('revoked', self.refused('keys', 'revoke', r['prefix']))
        self.assertIn('revoked', self.refused('keys', 'rotate', r['prefix']))
        out = self.ok('keys', 'rotate', old['prefix'])
        self.assertRegex(out, r'(?m)^api_key\s+gk_\w+$')
        self.assertRegex(out, r'(?m)^previous_prefix\s+%s$' % re.escape(old['prefix']))
        state = {x['prefix']: x['state'] for x in self.ok_json('keys', 'list')['keys']}
        self.assertEqual(state[r['prefix']], 'revoked')
        acts = self.actions()
        for a in ('create_key', 'rotate_key', 'revoke_key'):
            self.assertIn(('gatectl', a), acts)


BACKENDS_CONFIG = '''
    backend b1 127.0.0.1:{b1}
    backend b2 127.0.0.1:{b2}
    health_check interval=1s timeout=500ms
    queue max=64   # waiting requests per worker
    ip_limit_exempt 127.0.0.0/8
    trusted_proxy 127.0.0.0/8
    route / auth=none
'''


class GatectlBackendTest(GatectlCase):
    """backend add/remove/drain/enable/weight on the running gateway; config get/set."""

    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.start(config=BACKENDS_CONFIG, nbackends=3)

    def served(self, n=12):
        seen = set()
        for i in range(n):
            r = self.get('/s/%d' % i)
            self.assertEqual(r.status, 200, r.body)
            seen.add(r.json()['backend'])
        return seen

    def listed(self):
        return {b['id']: b for b in self.ok_json('backends')['backends']}

    def test_drain_and_enable(self):
        self.assertEqual(self.served(), {'b1', 'b2'})
        out = self.ok('backend', 'drain', 'b2')
        self.assertRegex(out, r'(?m)^state\s+draining$')
        self.assertEqual(self.listed()['b2']['state'], 'draining')
        self.assertRegex(self.ok('backends'), r'(?m)^b2\s+\S+\s+\S*\s*draining\s')
        self.assertEqual(self.served(), {'b1'})
        self.assertEqual(self.ok_json('backend', 'enable', 'b2')['state'], 'enabled')
        self.assertEqual(self.served(), {'b1', 'b2'})
        self.assertIn('no backend b9', self.refused('backend', 'drain', 'b9'))
        self.assertIn(('gatectl', 'backend_drain'), self.actions())

    def test_weight(self):
        j = self.ok_json('backend', 'weight', 'b1', '7')
        self.assertEqual(j['weight'], 7)
        self.assertEqual(self.listed()['b1']['weight'], 7)
        self.assertEqual({b['id']: b['weight'] for b in self.get('/stats').json()['backends']},
                         {'b1': 7, 'b2': 1})
        self.assertEqual(self.ok_json('config', 'get', 'backend')['source'], 'override')
        self.assertRegex(self.ok('backend', 'weight', 'b2', '3'), r'(?m)^weight\s+3$')
        self.assertEqual(self.listed()['b2']['weight'], 3)
        self.assertIn('1..1000', self.refused('backend', 'weight', 'b1', '0'))
        self.assertIn('no backend', self.refused('backend', 'weight', 'b9', '2'))
        self.assertEqual(self.listed()['b1']['weight'], 7)

    def test_add_and_remove(self):
        b3 = '127.0.0.1:%d' % self.backends[2].port
        out = self.ok('backend', 'add', 'b3', b3, 'weight=2')
        self.assertRegex(out, r'(?m)^backends\s+3$')
        bs = self.listed()
        self.assertEqual((bs['b3']['address'], bs['b3']['weight']), (b3, 2))
        gwtest.wait_until(lambda: 'b3' in self.served(), timeout=5, message='b3 serves')
        # a drained backend stays drained across a change of the set and a reload
        self.ok('backend', 'drain', 'b1')
        self.assertIn('exists', self.refused('backend', 'add', 'b3', b3))
        err = self.refused('backend', 'add', 'b4', 'nohost:notaport')
        self.assertIn('nothing changed', err)
        err = self.refused('backend', 'add', 'b4', b3, 'weight=5000')
        self.assertIn('weight', err)
        self.assertEqual(len(self.listed()), 3)
        self.assertEqual(self.ok_json('reload')['backends'], 3)
        self.assertEqual(self.listed()['b1']['state'], 'draining')
        self.ok('backend', 'enable', 'b1')
        j = self.ok_json('backend', 'remove', 'b2')
        self.assertEqual((j['backend'], j['backends']), ('b2', 2))
        self.assertEqual(set(self.listed()), {'b1', 'b3'})
        self.assertEqual(self.served(), {'b1', 'b3'})
        self.assertIn('no backend b2', self.refused('backend', 'remove', 'b2'))
        self.ok('backend', 'remove', 'b3')
        self.assertIn('at least one', self.refused('backend', 'remove', 'b1'))
        self.assertEqual(set(self.listed()), {'b1'})
        acts = self.actions()
        self.assertIn(('gatectl', 'backend_add'), acts)
        self.assertIn(('gatectl', 'backend_remove'), acts)

    def test_config_get_and_set(self):
        out = self.ok('config', 'get', 'strategy')
        self.assertEqual(out.strip(), 'strategy round_robin')
        j = self.ok_json('config', 'get', 'backend')
        self.assertEqual(len(j['lines']), 2)
        self.assertTrue(j['lines'][0].startswith('backend b1 127.0.0.1:'), j)
        self.assertEqual(self.ok_json('config', 'get', 'retries')['source'], 'default')
        j = self.ok_json('config', 'get', 'queue')
        self.assertEqual((j['lines'], j['source']), (['queue max=64'], 'file'))
        j = self.ok_json('config', 'set', 'retries', '3')
        self.assertEqual((j['name'], j['value']), ('retries', '3'))
        j = self.ok_json('config', 'get', 'retries')
        self.assertEqual((j['lines'], j['source']), (['retries 3'], 'override'))
        err = self.refused('config', 'set', 'retries', 'eleven')
        self.assertIn('retries', err)
        self.assertIn('nothing changed', err)
        self.assertEqual(self.ok_json('config', 'get', 'retries')['lines'], ['retries 3'])
        out = self.ok('config', 'set', 'strategy', 'ip_hash')
        self.assertRegex(out, r'(?m)^strategy\s+ip_hash$')
        self.assertRegex(out, r'(?m)^value\s+ip_hash$')
        self.ok('config', 'set', 'circuit', 'failures=3 open=10s')
        self.assertEqual(self.ok('config', 'get', 'circuit').strip(),
                         'circuit failures=3 open=10s')
        self.assertEqual(self.strategy(), 'ip_hash')
        self.assertIn('unknown directive', self.refused('config', 'set', 'nosuch', '1'))
        self.assertIn('not a directive name', self.refused('config', 'get', 'Bad-Name'))
        self.assertIn('unknown directive', self.refused('config', 'get', 'nosuch'))
        self.assertRegex(self.ok('config', 'get', 'timeouts'), r'^# timeouts is not set')
        # the overrides survive a reload
        self.ok('reload')
        self.assertEqual(self.ok_json('config', 'get', 'retries')['lines'], ['retries 3'])
        self.assertEqual(self.strategy(), 'ip_hash')
        self.assertIn(('gatectl', 'config_set'), self.actions())


class GatectlTableTest(GatectlCase):
    """The bash completion and the man page come from (or agree with) the command table."""

    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')

    def table(self):
        """{name: usage line} of every command, from the table (through the completion
        script's patterns and `gatectl help NAME`)."""
        rc, out, _ = self.ctl('completion', 'bash', url=False)
        self.assertEqual(rc, 0)
        names = set(re.findall(r'(?m)^\t"([a-z ]+)"\*\)', out)) - {'help', 'completion'}
        table = {}
        for name in names:
            rc, one, _ = self.ctl('help', *name.split(), url=False)
            self.assertEqual(rc, 0, name)
            table[name] = re.search(r'(?m)^usage: gatectl (%s.*)$' % name, one).group(1)
        return table

    def test_completion_covers_the_table(self):
        rc, out, err = self.ctl('completion', 'bash', url=False)
        self.assertEqual(rc, 0, err)
        cp = subprocess.run(['bash', '-n'], input=out.encode(), timeout=10)
        self.assertEqual(cp.returncode, 0)
        self._gw_state()
        script = os.path.join(self.tmp, 'gatectl.bash')
        with open(script, 'w') as f:
            f.write(out)

        def complete(line):
            words = line.split(' ')
            prog = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _gatectl; '
                    'printf "%%s\\n" "${COMPREPLY[@]}"' % (
                        script, ' '.join("'%s'" % w for w in words), len(words) - 1))
            cp = subprocess.run(['bash', '-c', prog], stdout=subprocess.PIPE, timeout=10)
            return set(cp.stdout.decode().split())
        first = complete('gatectl ')
        for w in ('status', 'keys', 'backend', 'cache', 'config', 'logs', 'help', '--json'):
            self.assertIn(w, first)
        self.assertEqual(complete('gatectl keys '), {'list', 'create', 'rotate', 'revoke'})
        self.assertEqual(complete('gatectl backend a'), {'add'})
        self.assertIn('--tier', complete('gatectl keys create --t'))
        self.assertIn('-f', complete('gatectl logs -'))

    def test_man_page_and_table_agree(self):
        with open(MAN) as f:
            src = f.read()
        # the command list: ".It Ic name [sub]" lines (options are Fl, variables Ev)
        listed = set(n for n in re.findall(r'(?m)^\.It Ic ([a-z]+(?: [a-z]+)?)', src)
                     if n.split()[0] not in ('help', 'completion'))
        table = self.table()
        self.assertGreaterEqual(len(table), 26)
        self.assertEqual(listed, set(table), 'man page vs. table')
        cp = subprocess.run(['mandoc', '-T', 'ascii', MAN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=20)
        if cp.returncode != 0 and not cp.stdout:
            self.skipTest('mandoc is not installed')
        text = re.sub(r'.\x08', '', cp.stdout.decode())
        flat = re.sub(r'\s+', ' ', text)
        for name, usage in table.items():
            self.assertIn(usage, flat, 'the man page lacks "%s"' % usage)


CACHE_CONFIG = '''
    backend b1 127.0.0.1:{b1}
    cache ttl=30s max_memory=8mb
    ip_limit_exempt 127.0.0.0/8
    route / auth=none cache=on
'''


class GatectlLogsCacheTest(GatectlCase):
    """logs [-n N] and logs -f (the PUB stream), cache stats and cache purge."""

    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.start(config=CACHE_CONFIG)

    def test_logs(self):
        for i in range(3):
            self.assertEqual(self.get('/logged/%d' % i).status, 200)

        def recent():
            return [e.get('path') for e in self.ok_json('logs', '-n', '5')['entries']]
        gwtest.wait_until(lambda: '/logged/2' in recent(), timeout=5, message='the log entry')
        j = self.ok_json('logs', '-n', '2')
        self.assertEqual(len(j['entries']), 2)
        self.assertEqual(j['publish'], self.gw.publish_url)
        out = self.ok('logs', '-n', '3')
        lines = out.splitlines()
        self.assertEqual(len(lines), 3, out)
        self.assertRegex(lines[-1], r'^\S+ 200 GET /logged/2 [\d.]+ms b1 ')
        self.assertIn('1..1000', self.refused('logs', '-n', '0'))

    def test_logs_follow(self):
        argv = [GATECTL, '-s', self.gw.control_url, 'logs', '-n', '1', '-f']
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        os.set_blocking(p.stdout.fileno(), False)
        got = b''
        deadline = time.time() + 10
        while time.time() < deadline and b'/followed' not in got:
            self.get('/followed')
            time.sleep(0.2)
            got += p.stdout.read() or b''
        self.assertIn(b' 200 GET /followed ', got)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(timeout=5), 0, p.stderr.read())
        # GATEWAYD_PUBLISH names another stream: nothing there, still ends on SIGINT
        e = dict(os.environ, GATEWAYD_PUBLISH='ipc://%s/none.pub' % self.tmp)
        p2 = subprocess.Popen(argv + ['--json'], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.addCleanup(lambda: p2.poll() is None and p2.kill())
        time.sleep(0.5)
        self.get('/unseen')
        time.sleep(0.5)
        p2.send_signal(signal.SIGINT)
        self.assertEqual(p2.wait(timeout=5), 0)
        out = p2.stdout.read().decode()
        self.assertNotIn('/unseen', out)
        for line in out.splitlines():
            json.loads(line)

    def test_cache_stats_and_purge(self):
        for _ in range(3):
            self.assertEqual(self.get('/cacheable/a').status, 200)
        self.assertEqual(self.get('/cacheable/b').status, 200)
        j = self.ok_json('cache', 'stats')
        self.assertGreaterEqual(j['entries'], 2)
        self.assertGreaterEqual(j['hits'], 2)
        self.assertRegex(self.ok('cache', 'stats'), r'(?m)^entries\s+\d+$')
        j = self.ok_json('cache', 'purge', '/cacheable/a')
        self.assertEqual(j['purged'], 1)
        self.assertEqual(self.ok_json('cache', 'stats')['entries'], 1)
        self.assertRegex(self.ok('cache', 'purge'), r'(?m)^purged\s+1$')
        self.assertEqual(self.ok_json('cache', 'stats')['entries'], 0)
        self.assertIn('starts with /', self.refused('cache', 'purge', 'cacheable'))
        self.assertIn(('gatectl', 'cache_purge'), self.actions())


class GatectlNoCacheTest(GatectlCase):
    def test_cache_stats_without_cache(self):
        self.assertIn('no cache', self.refused('cache', 'stats'))


GEO_CONFIG = '''
    backend b1 127.0.0.1:{b1} dc=us-east
    datacenter us-east lat=39.04 lon=-77.49
    route / auth=none
'''


class GatectlGeoTest(GatectlCase):
    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.start(config=GEO_CONFIG)

    def test_geo(self):
        rc, out, err = self.ctl('geo')
        if rc == 1 and 'not available' in err:
            self.skipTest('this build has no geographic routing')
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.get('/g').status, 200)
        lines = self.ok('geo').splitlines()
        self.assertEqual(lines[0].split(), ['NAME', 'LAT', 'LON', 'HEALTHY', 'REQUESTS'])
        self.assertRegex(lines[1], r'^us-east\s+39\.04\s+-77\.49\s+yes\s+\d+$')
        self.assertRegex('\n'.join(lines), r'(?m)^lookups\.total\s+\d+$')
        j = self.ok_json('geo')
        http = self.get('/geo/stats').json()
        self.assertEqual([d['name'] for d in j['datacenters']],
                         [d['name'] for d in http['datacenters']])
        self.assertGreaterEqual(j['lookups']['total'], 1)
        self.assertIn('unlocated', j['lookups'])


class TcpControlTest(GatectlCase):
    """A tcp:// control endpoint answers only requests carrying the admin token."""

    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.port_ctl = gwtest.free_port()
        self.start(extra='control tcp://127.0.0.1:%d' % self.port_ctl)

    def start(self, *args, **kw):
        gw = super(GatectlCase, self).start(*args, **kw)
        gwtest.wait_until(lambda: gwtest.port_open(self.port_ctl), timeout=5,
                          message='the tcp control socket')
        return gw

    def token_env(self, token=gwtest.ADMIN_TOKEN):
        return {'GATEWAYD_ADMIN_TOKEN': token}

    def test_with_the_token(self):
        rc, out, err = self.ctl('--json', 'status', env=self.token_env())
        self.assertEqual(rc, 0, err)
        self.assertIs(json.loads(out)['ok'], True)
        rc, out, err = self.ctl('strategy', 'least_connections', env=self.token_env())
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.get('/stats').json()['strategy'], 'least_connections')

    def test_without_or_with_a_wrong_token(self):
        for env in ({'GATEWAYD_ADMIN_TOKEN': ''}, self.token_env('wrong-token')):
            rc, out, err = self.ctl('strategy', 'random', env=env)
            self.assertEqual(rc, 1, (out, err))
            self.assertIn('admin token', err)
        self.assertNotEqual(self.get('/stats').json()['strategy'], 'random')
        # a hand-written request is refused the same way, and accepted with the token
        url = self.gw.control_url
        reply = nng_call(url, b'{"cmd":"status"}')
        if reply is None:
            self.skipTest('libnng is not installed')
        self.assertIs(reply['ok'], False, reply)
        reply = nng_call(url, json.dumps({'cmd': 'status',
                                          'token': gwtest.ADMIN_TOKEN}).encode())
        self.assertIs(reply['ok'], True, reply)
        self.assertNotIn(gwtest.ADMIN_TOKEN, json.dumps(reply))

    def test_refused_at_start_without_a_token(self):
        self.gw.stop()
        gw = self.start_gateway(self.config_text, env={'GATEWAYD_ADMIN_TOKEN': None},
                                wait=False)
        self.assertNotEqual(gw.proc.wait(10), 0)
        self.assertIn('requires GATEWAYD_ADMIN_TOKEN', gw.proc.log())


class ConfigSecretsTest(GatectlCase):
    """`config get` masks the password of a URL (Redis here; PostgreSQL the same way)."""

    def setUp(self):
        gwtest.GatewayTestCase.setUp(self)
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        # nothing listens on port 1: the limiter falls back to local limits (open)
        self.start(extra='redis redis://:s3cret-pass@127.0.0.1:1/0\nredis_failure open\n'
                         'geo_http http://user:x@127.0.0.1:1/{ip}?password=hunter2&x=1')

    def test_config_get_masks_passwords(self):
        j = self.ok_json('config', 'get', 'redis')
        # a fixed mask: the password's length is not told either
        self.assertEqual(j['lines'], ['redis redis://:***@127.0.0.1:1/0'], j)
        out = self.ok('config', 'get', 'redis')
        self.assertNotIn('s3cret', out)
        j = self.ok_json('config', 'get', 'geo_http')
        self.assertEqual(j['lines'],
                         ['geo_http http://user:***@127.0.0.1:1/{ip}?password=***&x=1'], j)
