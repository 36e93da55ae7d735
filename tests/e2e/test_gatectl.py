"""End-to-end tests of the control plane (SPEC section 7) through bin/gatectl.

Every command the daemon implements (status, backends, strategy, reload, block, unblock,
ban, unban), in human and --json form, against a running gatewayd; gatectl's exit
status (0 done, 1 refused, 2 usage error, 3 daemon unreachable); the effect of each
change on traffic (/stats, 403 blocked, 403 ip_blocked); the control socket's mode; a
request of another protocol version, sent with libnng through ctypes.
"""

import ctypes
import ctypes.util
import json
import os
import stat
import subprocess

import gwtest
from test_admin import AdminCase, xff

GATECTL = os.path.join(gwtest.BIN, 'gatectl')


class GatectlCase(AdminCase):
    def setUp(self):
        super().setUp()
        if not os.access(GATECTL, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        self.start()

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
        return err


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
        self.assertEqual(out[0].split(), ['ID', 'ADDRESS', 'DC', 'HEALTHY', 'CIRCUIT', 'WEIGHT',
                                          'ACTIVE', 'REQUESTS', 'FAILURES', 'AVG_MS'])
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
        self.assertIn('no such API key', self.refused('block', 'gk_' + '0' * 64))
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
        self.assertRegex(out, r'(?m)^reload\s+requested$')
        gwtest.wait_until(lambda: self.strategy() == 'weighted', timeout=5,
                          message='the reloaded strategy')
        with open(self.gw.config_path) as f:
            text = f.read().replace('strategy weighted', 'strategy random')
        with open(self.gw.config_path, 'w') as f:
            f.write(text)
        self.assertEqual(self.ok_json('reload')['reload'], 'requested')
        gwtest.wait_until(lambda: self.strategy() == 'random', timeout=5,
                          message='the second reload')

    def test_usage_errors_are_2(self):
        for args in ((), ('nosuchcommand',), ('status', 'extra'), ('block',),
                     ('ban', '192.0.2.1', '1h', 'more'), ('strategy', 'a', 'b'),
                     ('-x', 'status'), ('help', 'nosuchcommand')):
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
