"""redisserver: a throwaway redis-server for the end-to-end tests (stdlib only).

    srv = RedisServer(test)          # a GatewayTestCase: its temp dir, its process list
    srv.start()                      # redis-server on a free loopback port, no persistence
    srv.url                          # 'redis://127.0.0.1:PORT/0'
    srv.command('GET', 'k')          # one RESP command over a fresh socket
    srv.kill(); srv.start()          # kill -9 and come back on the same port

The server runs in the test's temporary directory with `--save '' --appendonly no`, so
nothing outlives the test; it is stopped by PID with the test's other processes.
`available()` tells whether the Debian package is installed (tests skip without it).
"""

import os
import shutil
import socket
import time

import gwtest

REDIS_SERVER = os.environ.get('GWTEST_REDIS_SERVER') or shutil.which('redis-server') or \
    ('/usr/bin/redis-server' if os.access('/usr/bin/redis-server', os.X_OK) else None)


def available():
    return REDIS_SERVER is not None


class RedisError(Exception):
    pass


def _encode(args):
    out = [b'*%d\r\n' % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b'$%d\r\n%s\r\n' % (len(a), a))
    return b''.join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b''

    def _line(self):
        while b'\r\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError('connection closed')
            self.buf += chunk
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError('connection closed')
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b'+':
            return rest.decode()
        if kind == b'-':
            raise RedisError(rest.decode())
        if kind == b':':
            return int(rest)
        if kind == b'$':
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b'*':
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError('bad reply %r' % line)


class RedisServer:
    def __init__(self, test, port=None, password=None):
        self.test = test
        test._gw_state()
        self.port = port or gwtest.free_port()
        self.password = password
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        auth = ':%s@' % self.password if self.password else ''
        return 'redis://%s%s:%d/0' % (auth, gwtest.HOST, self.port)

    def start(self, timeout=gwtest.START_TIMEOUT):
        """Starts (or restarts) the server on its port and waits until it answers PING."""
        if not available():
            self.test.skipTest('redis-server is not installed (apt-get install redis-server)')
        self.starts += 1
        d = os.path.join(self.test.tmp, 'redis-%d' % self.starts)
        os.makedirs(d, exist_ok=True)
        argv = [REDIS_SERVER, '--port', str(self.port), '--bind', gwtest.HOST, '--save', '',
                '--appendonly', 'no', '--dir', d, '--daemonize', 'no', '--loglevel', 'warning']
        if self.password:
            argv += ['--requirepass', self.password]
        self.proc = self.test.start_process('redis-server-%d' % self.starts, argv)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command('PING') == 'PONG':
                    return self
            except (OSError, RedisError):
                pass
            if not self.proc.alive():
                raise gwtest.ProcessDied('redis-server exited with %s\n%s' % (
                    self.proc.returncode, self.proc.log_tail()))
            if time.monotonic() > deadline:
                raise TimeoutError('redis-server did not answer within %.1fs' % timeout)
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def kill(self):
        """SIGKILL: connections drop at once, nothing is saved."""
        if self.proc is not None:
            self.proc.kill()

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def command(self, *args, timeout=2.0, db=0):
        with socket.create_connection((gwtest.HOST, self.port), timeout=timeout) as s:
            r = _Reader(s)
            if self.password:
                s.sendall(_encode(['AUTH', self.password]))
                r.reply()
            if db:
                s.sendall(_encode(['SELECT', db]))
                r.reply()
            s.sendall(_encode(list(args)))
            return r.reply()
