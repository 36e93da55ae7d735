"""End-to-end tests of gatetop(1), the terminal dashboard (SPEC section 7).

gatetop reads gatewayd's PUB stream and sends actions over the control socket. The tests
start mock backends and gatewayd with control and publish sockets in the test's temporary
directory, make an API key, send traffic with it and check:

- `gatetop --once` prints every pane: the backends, our key's identity, the datacenters,
  the header's numbers; exit 3 when no stats arrive, 2 on a usage error;
- gatetop inside tmux (a private server, `tmux -L`, killed at the end): the header's total
  moves with traffic, `p` freezes it, `/` filters the keys pane down to our key, `b` blocks
  it (the next request is 403 blocked) and `u` lifts the block, `s` changes the strategy,
  `t` the key's tier; an ownerless key ("k:PREFIX") is blocked by its prefix; resizing to
  60x20 and to a tiny window does not crash it and it draws again; `q` exits 0;
- after the daemon stops the header says "disconnected", and gatetop reconnects by itself
  when the daemon is back.

Skipped when bin/gatetop is not built or tmux is not installed (the --once tests need only
gatetop).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import unittest

import gwtest
from test_identity import IdentityCase

GATETOP = os.path.join(gwtest.BIN, 'gatetop')

GATETOP_CONFIG = '''
    backend b1 127.0.0.1:{b1} dc=us-east
    backend b2 127.0.0.1:{b2} dc=us-east
    tier free 100000/60s
    tier premium 200000/60s
    ip_limit_exempt 127.0.0.0/8
    route / auth=none
    route /key auth=apikey
'''


class Traffic:
    """Requests in a thread until stopped: with the API key on /key, and anonymous ones."""

    def __init__(self, port, key, pause=0.01):
        self.port, self.key, self.pause = port, key, pause
        self.stop_event = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_event.is_set():
            try:
                with gwtest.Client(self.port) as c:
                    while not self.stop_event.is_set():
                        c.get('/key/load', {'X-API-Key': self.key})
                        c.get('/anon')
                        self.sent += 2
                        time.sleep(self.pause)
            except (OSError, gwtest.ProtocolError):
                time.sleep(0.1)  # the daemon restarts in one test

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(10)


class GatetopCase(IdentityCase):
    CONFIG = GATETOP_CONFIG
    timeout = 90

    def setUp(self):
        super().setUp()
        if not os.access(GATETOP, os.X_OK):
            self.skipTest('bin/gatetop is not built')

    def start_with_key(self):
        self.start(nbackends=2)
        self.assertTrue(self.gw.publish_url and self.gw.control_url, self.gw.config_text)
        u = self.register()
        k = self.create_key(u['access_token'])
        self.key, self.prefix = k['api_key'], k['prefix']
        # a key with an owner counts as its user: the keys pane shows "u:ID", and b, u, t
        # send "u:ID" (an ownerless key would be "k:PREFIX" and send the prefix)
        self.ident = 'u:%d' % u['user_id']
        self.assertEqual(self.get('/key/first', {'X-API-Key': self.key}).status, 200)

    def gatetop_argv(self, *extra):
        return [GATETOP, '-s', self.gw.publish_url, '-c', self.gw.control_url] + list(extra)

    def once(self, *extra, argv=None):
        env = dict(os.environ, LC_ALL='C')
        cp = subprocess.run(argv or self.gatetop_argv('--once', *extra),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, timeout=30)
        return cp.returncode, cp.stdout.decode(), cp.stderr.decode()


def header_total(text):
    m = re.search(r'\btotal (\d+)', text)
    return int(m.group(1)) if m else None


class GatetopOnceTest(GatetopCase):
    def test_once_prints_every_pane(self):
        self.start_with_key()
        with Traffic(self.gw.port, self.key) as t:
            gwtest.wait_until(lambda: t.sent >= 40, timeout=10, message='traffic')
            # the key is among the busiest of an interval while the traffic flows
            for _ in range(5):
                rc, out, err = self.once('--timeout', '10')
                self.assertEqual(rc, 0, err)
                if re.search(r'(?m)^%s ' % self.ident, out):
                    break
        self.assertRegex(out, r'(?m)^gatewayd  strategy round_robin  up \d+:\d\d:\d\d  '
                              r'total \d+  connected$')
        self.assertGreaterEqual(header_total(out), 40, out)
        self.assertRegex(out, r'(?m)^rps [\d.]+  p50 [\d.]+ms  p99 [\d.]+ms  err [\d.]+%')
        for pane in ('== backends (2)', '== top keys (', '== datacenters (1)', '== requests ('):
            self.assertIn(pane, out)
        self.assertRegex(out, r'(?m)^b1 +up +closed ')
        self.assertRegex(out, r'(?m)^b2 +up +closed ')
        self.assertRegex(out, r'(?m)^us-east +up +2 ')
        key_line = re.search(r'(?m)^%s .*$' % self.ident, out)
        self.assertIsNotNone(key_line, out)
        self.assertRegex(key_line.group(0), r" free +ok +[\d.]+ +\d+ +\d+k/100k$")
        self.assertNotIn(self.key, out, 'a whole API key on the screen')

    def test_once_without_a_daemon_exits_3(self):
        self._gw_state()
        url = 'ipc://%s/nobody.pub' % self.tmp
        t0 = time.time()
        rc, out, err = self.once(argv=[GATETOP, '-s', url, '--once', '--timeout', '1'])
        self.assertEqual(rc, 3, (out, err))
        self.assertLess(time.time() - t0, 5)
        self.assertIn('no stats', err)
        self.assertEqual(out, '')

    def test_usage_errors_exit_2(self):
        for argv in (['--bogus'], ['-d', 'x'], ['-d', '0'], ['extra']):
            cp = subprocess.run([GATETOP] + argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(cp.returncode, 2, argv)
            self.assertTrue(cp.stderr.strip(), argv)
        cp = subprocess.run([GATETOP, '-h'], stdout=subprocess.PIPE, timeout=10)
        self.assertEqual(cp.returncode, 0)
        self.assertIn(b'usage: gatetop', cp.stdout)


class Tmux:
    """A private tmux server (-L NAME) running one command in a detached session.

    The command's exit status is written to a file by the shell that runs it: tmux's own
    pane_dead_status is not always set by the time the pane reads as dead.
    """

    def __init__(self, test, argv, width=100, height=30):
        self.name = 'gwtest-gatetop-%d-%s' % (os.getpid(), os.urandom(3).hex())
        self.test = test
        self.status_path = os.path.join(test.tmp, self.name + '.status')
        cmd = 'env LC_ALL=C.UTF-8 TERM=screen %s; echo $? >%s' % (
            ' '.join(shlex.quote(a) for a in argv), shlex.quote(self.status_path))
        # remain-on-exit: the last screen stays to look at when the program ends
        self.socket = None
        test.addCleanup(self.kill)
        self.tmux('-f', '/dev/null', 'new-session', '-d', '-s', 'gt', '-x', str(width),
                  '-y', str(height), cmd, ';', 'set-option', '-t', 'gt', 'remain-on-exit', 'on')
        self.socket = self.tmux('display-message', '-p', '#{socket_path}').strip()

    def tmux(self, *args, check=True):
        cp = subprocess.run(['tmux', '-L', self.name] + list(args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        if check and cp.returncode != 0:
            self.test.fail('tmux %s: %s' % (' '.join(args), cp.stderr.decode()))
        return cp.stdout.decode()

    def kill(self):
        """Stops this test's tmux server and removes its socket file (tmux leaves it)."""
        self.tmux('kill-server', check=False)
        if self.socket:
            try:
                os.unlink(self.socket)
            except FileNotFoundError:
                pass

    def screen(self):
        return self.tmux('capture-pane', '-p', '-t', 'gt')

    def keys(self, *keys):
        self.tmux('send-keys', '-t', 'gt', *keys)

    def dead(self):
        """None while the program runs, else its exit status (128+N: killed by signal N)."""
        try:
            with open(self.status_path) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    def wait_exit(self):
        """The exit status after q (fails with the screen if it does not exit)."""
        deadline = time.time() + 10
        while time.time() < deadline:
            status = self.dead()
            if status is not None:
                return status
            time.sleep(0.1)
        self.test.fail('gatetop did not exit; screen:\n' + self.screen())

    def wait_screen(self, predicate, timeout=10, message='screen'):
        """The first capture for which predicate(text) holds; fails with the last one."""
        deadline = time.time() + timeout
        text = ''
        while time.time() < deadline:
            self.test.assertIsNone(self.dead(), 'gatetop exited:\n' + text)
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        self.test.fail('%s: not seen within %ss; screen:\n%s' % (message, timeout, text))


class GatetopTmuxTest(GatetopCase):
    def setUp(self):
        super().setUp()
        if shutil.which('tmux') is None:
            self.skipTest('tmux is not installed')
        self.start_with_key()

    def open(self, width=100, height=30):
        t = Tmux(self, self.gatetop_argv(), width, height)
        t.wait_screen(lambda s: 'connected' in s and 'waiting' not in s, 15, 'connected')
        return t

    def test_live_numbers_block_resize_quit(self):
        t = self.open()
        first = t.wait_screen(lambda s: header_total(s) is not None, message='header')
        self.assertIn('backends (2)', first)
        self.assertIn('top keys', first)
        self.assertIn('datacenters', first)
        self.assertIn('requests', first)
        with Traffic(self.gw.port, self.key):
            before = header_total(t.screen())
            moved = t.wait_screen(lambda s: (header_total(s) or 0) >= before + 30,
                                  message='total moving with traffic')
            self.assertRegex(moved, r'rps [1-9]')
            # pause: the numbers stand still while traffic flows; resume: they move
            t.keys('p')
            frozen = header_total(t.wait_screen(lambda s: 'PAUSED' in s, message='PAUSED'))
            time.sleep(2.5)
            self.assertEqual(header_total(t.screen()), frozen)
            t.keys('p')
            t.wait_screen(lambda s: 'PAUSED' not in s and header_total(s) > frozen,
                          message='resumed')
            # filter the keys pane down to our key, focus it, block it
            t.wait_screen(lambda s: self.ident + ' ' in s, message='our key in the pane')
            t.keys('/')
            t.keys('-l', self.ident)
            t.keys('Enter')
            t.wait_screen(lambda s: 'filter: ' + self.ident in s, message='filter shown')
            t.keys('Tab')
            t.keys('b')
            t.wait_screen(lambda s: re.search(r'block %s: \S' % self.ident, s),
                          message='block result line')
            r = self.get('/key/after-block', {'X-API-Key': self.key})
            self.assertError(r, 403, 'blocked')
            t.wait_screen(lambda s: re.search(r'%s +\S+ +BLOCKED' % self.ident, s), message='BLOCKED in the keys pane')
            t.keys('u')
            t.wait_screen(lambda s: re.search(r'unblock %s: ok' % self.ident, s),
                          message='unblock result line')
            self.assertEqual(self.get('/key/after-unblock', {'X-API-Key': self.key}).status,
                             200)
            # resize: smaller, tiny, back; it keeps drawing and does not exit
            t.tmux('resize-window', '-t', 'gt', '-x', '60', '-y', '20')
            small = t.wait_screen(lambda s: len(s.splitlines()) <= 20 and 'top keys' in s,
                                  message='redrawn at 60x20')
            self.assertTrue(all(len(line) <= 60 for line in small.splitlines()), small)
            t.tmux('resize-window', '-t', 'gt', '-x', '20', '-y', '5')
            t.wait_screen(lambda s: 'too small' in s, message='too small message')
            t.tmux('resize-window', '-t', 'gt', '-x', '100', '-y', '30')
            t.wait_screen(lambda s: 'backends (2)' in s and 'requests' in s,
                          message='redrawn at 100x30')
        t.keys('q')
        self.assertEqual(t.wait_exit(), 0)

    def test_block_an_ownerless_key_by_its_prefix(self):
        """A key without a user is "k:PREFIX" in the pane; b and u send the prefix."""
        gatectl = os.path.join(gwtest.BIN, 'gatectl')
        if not os.access(gatectl, os.X_OK):
            self.skipTest('bin/gatectl is not built')
        cp = subprocess.run([gatectl, '-s', self.gw.control_url, '--json', 'keys', 'create'],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=15)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        k = json.loads(cp.stdout)
        key, prefix = k['api_key'], k['prefix']
        t = self.open()
        with Traffic(self.gw.port, key):
            t.wait_screen(lambda s: 'k:' + prefix in s, 6, 'k:PREFIX in the keys pane')
            self.assertNotIn(key, t.screen(), 'a whole API key on the screen')
            t.keys('/')
            t.keys('-l', prefix)
            t.keys('Enter')
            t.keys('b')
            t.wait_screen(lambda s: 'block %s: ok' % prefix in s, message='block result')
            self.assertError(self.get('/key/after-block', {'X-API-Key': key}), 403, 'blocked')
            t.keys('u')
            t.wait_screen(lambda s: 'unblock %s: ok' % prefix in s, message='unblock result')
            self.assertEqual(self.get('/key/after-unblock', {'X-API-Key': key}).status, 200)
        t.keys('q')
        self.assertEqual(t.wait_exit(), 0)

    def test_strategy_and_tier(self):
        t = self.open()
        t.keys('s')
        t.wait_screen(lambda s: 'empty: next):' in s, message='strategy prompt')
        t.keys('-l', 'least_connections')
        t.keys('Enter')
        t.wait_screen(lambda s: 'strategy least_connections: ok' in s, message='strategy result')
        self.assertEqual(self.get('/stats').json()['strategy'], 'least_connections')
        t.wait_screen(lambda s: 'strategy least_connections  up' in s, message='header strategy')
        # an empty answer moves to the next strategy
        t.keys('s')
        t.keys('Enter')
        t.wait_screen(lambda s: 'strategy weighted: ok' in s, message='next strategy')
        self.assertEqual(self.get('/stats').json()['strategy'], 'weighted')
        # Esc cancels the prompt
        t.keys('s')
        t.keys('-l', 'ip_hash')
        t.keys('Escape')
        time.sleep(1)
        self.assertEqual(self.get('/stats').json()['strategy'], 'weighted')
        # the selected key's tier
        with Traffic(self.gw.port, self.key):
            t.wait_screen(lambda s: self.ident + ' ' in s, message='our key in the pane')
            t.keys('/')
            t.keys('-l', self.ident)
            t.keys('Enter')
            t.keys('t')
            t.wait_screen(lambda s: 'tier for %s:' % self.ident in s, message='tier prompt')
            t.keys('-l', 'premium')
            t.keys('Enter')
            t.wait_screen(lambda s: re.search(r'tier %s premium: ok' % self.ident, s), message='tier result')
        usage = self.get('/usage', {'X-API-Key': self.key}).json()
        self.assertEqual(usage['tier'], 'premium')
        t.keys('q')
        self.assertEqual(t.wait_exit(), 0)

    def test_reconnects_when_the_daemon_restarts(self):
        t = self.open()
        self.assertEqual(self.gw.stop(), 0)
        t.wait_screen(lambda s: 'disconnected' in s, 10, 'disconnected')
        self.gw = self.start_gateway(self.config_text)
        t.wait_screen(lambda s: re.search(r'up 0:00:0\d .* connected', s), 15, 'reconnected')
        with Traffic(self.gw.port, self.key):
            t.wait_screen(lambda s: (header_total(s) or 0) >= 20, 15, 'numbers after restart')
        t.keys('q')
        self.assertEqual(t.wait_exit(), 0)
