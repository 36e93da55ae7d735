"""gwtest: the end-to-end test harness for gatewayd (Python 3 standard library only).

It starts the real binaries (bin/mockbackend, bin/gatewayd) as subprocesses on loopback
ports, talks to them with exact bytes when a test needs that (smuggling, pipelining) or
through a small keep-alive client, and always stops what it started, by PID.

    import gwtest

    class RoundRobinTest(gwtest.GatewayTestCase):
        def test_spreads_requests(self):
            self.start_backends(2)                       # mockbackend ids b1, b2
            self.start_gateway('''
                listen 127.0.0.1:{port}
                strategy round_robin
                backend b1 127.0.0.1:{b1}
                backend b2 127.0.0.1:{b2}
                route / auth=none
            ''')
            seen = {self.get('/x').json()['backend'] for _ in range(4)}
            self.assertEqual(seen, {'b1', 'b2'})

Placeholders in config text: {port} the gateway's listen port, {b1} {b2} ... backend ports
(in start order), {tmp} the test's temporary directory. Unless auto=False, lines are added
for what the text does not set: `listen 127.0.0.1:{port}`, and `control`/`publish` ipc
sockets inside {tmp} so that tests never share /tmp/gatewayd.ctl. gatewayd runs with its
working directory in {tmp}, so `database sqlite:gatewayd.db` lands there too.

Run the suite with tests/e2e/run.py; it enforces a per-test time limit (class attribute
`timeout`, or the @gwtest.timeout(seconds) decorator).
"""

import atexit
import base64
import collections
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..'))
BIN = os.environ.get('GWTEST_BIN') or os.path.join(REPO, 'bin')
# GWTEST_MOCKBACKEND / GWTEST_GATEWAYD: test another build (e.g. a sanitizer one)
MOCKBACKEND = os.environ.get('GWTEST_MOCKBACKEND') or os.path.join(BIN, 'mockbackend')
GATEWAYD = os.environ.get('GWTEST_GATEWAYD') or os.path.join(BIN, 'gatewayd')
HOST = '127.0.0.1'

ADMIN_TOKEN = 'gwtest-admin-token-0123456789'
# Set by `make asan-test`: the binaries run under ASan/UBSan, several times slower and with
# a larger resident set; tests that measure memory or tight timings skip (see skip_sanitized).
SANITIZED = bool(os.environ.get('GWTEST_SANITIZED'))


def skip_sanitized(why):
    """A decorator: skip the test when the binaries are sanitizer builds."""
    return unittest.skipIf(SANITIZED, 'sanitizer build: ' + why)
JWT_SECRET = 'gwtest-jwt-secret-0123456789abcdef0123456789abcdef'

DEFAULT_TIMEOUT = 10.0   # socket operations
START_TIMEOUT = 15.0     # a process must accept connections within this
STOP_TIMEOUT = 5.0       # SIGTERM, then SIGKILL after this
LOG_TAIL_LINES = 200



def access_token(sub='4242', tier='free', secret=None, ttl=600):
    """An access JWT (HS256) as gatewayd issues them, signed with the tests' secret."""
    import hmac

    def b64u(data):
        return base64.urlsafe_b64encode(data).rstrip(b'=').decode()
    now = int(time.time())
    claims = {'sub': sub, 'tier': tier, 'iss': 'gatewayd', 'iat': now, 'nbf': now,
              'exp': now + ttl, 'jti': os.urandom(16).hex(), 'typ': 'access'}
    h = b64u(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())
    p = b64u(json.dumps(claims).encode())
    sig = hmac.new((secret or JWT_SECRET).encode(), (h + '.' + p).encode(),
                   hashlib.sha256).digest()
    return h + '.' + p + '.' + b64u(sig)

class TestTimeout(BaseException):
    """Raised in the main thread when a test overruns its time limit (see run.py).

    A BaseException so that a test's own `except Exception` cannot swallow it.
    """


class ProtocolError(Exception):
    """The peer sent something that is not the HTTP we expected."""


class ProcessDied(Exception):
    """A process we started exited while we were waiting for it."""


def wrap_argv(argv):
    """Prefixes GWTEST_WRAP (e.g. "valgrind -q --log-file=/tmp/vg.%p") to a command line."""
    return shlex.split(os.environ.get('GWTEST_WRAP', '')) + list(argv)


def timeout(seconds):
    """Decorator: this test may run `seconds` before run.py's watchdog fails it."""
    def wrap(fn):
        fn.gw_timeout = seconds
        return fn
    return wrap


# ---------------------------------------------------------------- ports

_given_ports = set()
_port_lock = threading.Lock()


def free_port(host=HOST):
    """A TCP port that was free a moment ago (never the same one twice per run)."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _given_ports:
                _given_ports.add(port)
                return port
    raise RuntimeError('no free port found')


def free_ports(n, host=HOST):
    return [free_port(host) for _ in range(n)]


def port_open(port, host=HOST, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port, host=HOST, timeout=START_TIMEOUT, proc=None):
    """Waits until (host, port) accepts a connection; fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            raise ProcessDied('%s exited with %s before listening on %s:%d\n%s' % (
                proc.name, proc.returncode, host, port, proc.log_tail()))
        if port_open(port, host):
            return
        if time.monotonic() > deadline:
            raise TimeoutError('nothing accepts on %s:%d after %.1fs' % (host, port, timeout))
        time.sleep(0.02)


def wait_until(predicate, timeout=5.0, interval=0.05, message='condition'):
    """Polls `predicate()` until it returns a true value (returned) or fails the bound."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %.1fs waiting for %s' % (timeout, message))
        time.sleep(interval)


# ---------------------------------------------------------------- processes

def rss_kb(pid):
    """Resident set size of a process in kB, from /proc/PID/status."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise ValueError('no VmRSS for pid %d' % pid)


def fd_count(pid):
    """Number of open file descriptors of a process (for leak checks)."""
    return len(os.listdir('/proc/%d/fd' % pid))


_live = set()
_live_lock = threading.Lock()


def _set_pdeathsig():
    # The child gets SIGKILL if the test runner dies, so no orphan keeps a port busy.
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A subprocess with its stderr (and stdout) in files; stopped by PID."""

    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = os.path.join(logdir, name + '.stderr')
        self.out_path = os.path.join(logdir, name + '.stdout')
        self._log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, 'ab') as err, open(self.out_path, 'ab') as out:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=err, env=env, cwd=cwd,
                                          preexec_fn=_set_pdeathsig)
        self.pid = self.popen.pid
        with _live_lock:
            _live.add(self)

    def __repr__(self):
        return '<Proc %s pid=%d rc=%s>' % (self.name, self.pid, self.popen.returncode)

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=STOP_TIMEOUT):
        """Exit status, or raises subprocess.TimeoutExpired."""
        rc = self.popen.wait(timeout)
        with _live_lock:
            _live.discard(self)
        return rc

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
        """SIGTERM (or `sig`), then SIGKILL if still running after `timeout`; exit status."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
        if self.popen.returncode is None:
            self.popen.wait(timeout)
        with _live_lock:
            _live.discard(self)
        return self.popen.returncode

    def kill(self):
        return self.stop(sig=signal.SIGKILL)

    def log(self):
        """Everything this process wrote on stderr (this start only)."""
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(self._log_start)
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def log_tail(self, lines=LOG_TAIL_LINES):
        return '\n'.join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern, timeout=START_TIMEOUT):
        """Waits for a regex to appear on stderr; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if not self.alive():
                raise ProcessDied('%s exited with %s before logging %r\n%s' % (
                    self.name, self.returncode, pattern, self.log_tail()))
            if time.monotonic() > deadline:
                raise TimeoutError('%s did not log %r within %.1fs\n%s' % (
                    self.name, pattern, timeout, self.log_tail()))
            time.sleep(0.02)


def kill_all_live():
    """SIGKILL every process this harness started and has not reaped (runner watchdog)."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
            p.popen.wait(2)
        except Exception:
            pass
        with _live_lock:
            _live.discard(p)


atexit.register(kill_all_live)


# ---------------------------------------------------------------- HTTP on raw sockets

def _b(x):
    return x if isinstance(x, (bytes, bytearray)) else str(x).encode('latin-1')


def _header_items(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def build_request(method, path, headers=None, body=None, host=None, version='HTTP/1.1',
                  content_length=True):
    """The bytes of one request. Adds Host and Content-Length unless given (or disabled)."""
    items = _header_items(headers)
    names = {_b(k).lower() for k, _ in items}
    lines = [b'%s %s %s' % (_b(method), _b(path), _b(version))]
    if b'host' not in names and host is not None:
        lines.append(b'Host: ' + _b(host))
    for k, v in items:
        lines.append(_b(k) + b': ' + _b(v))
    body = _b(body) if body is not None else b''
    if (content_length and body and b'content-length' not in names
            and b'transfer-encoding' not in names):
        lines.append(b'Content-Length: %d' % len(body))
    return b'\r\n'.join(lines) + b'\r\n\r\n' + body


def chunked_body(chunks, trailers=None, ext=None):
    """Encodes an iterable of byte strings in the chunked transfer coding."""
    out = bytearray()
    for c in chunks:
        c = _b(c)
        if not c:
            continue
        out += b'%x%s\r\n' % (len(c), (b';' + _b(ext)) if ext else b'') + c + b'\r\n'
    out += b'0\r\n'
    for k, v in _header_items(trailers):
        out += _b(k) + b': ' + _b(v) + b'\r\n'
    out += b'\r\n'
    return bytes(out)


class Response:
    """A parsed HTTP response. `headers` is the ordered list of (name, value) strings."""

    def __init__(self, version, status, reason, headers, body=b'', interim=(),
                 chunk_sizes=None, trailers=None, body_length=None, framing='none', raw_head=b''):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.interim = list(interim)  # 1xx responses that came first: [(status, headers)]
        self.chunk_sizes = chunk_sizes
        self.trailers = trailers or []
        self.body_length = len(body) if body_length is None else body_length
        self.framing = framing        # 'none' | 'length' | 'chunked' | 'close'
        self.raw_head = raw_head

    def __repr__(self):
        return '<Response %d %s, %d body bytes>' % (self.status, self.reason, self.body_length)

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def headers_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name):
        return self.header(name) is not None

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ProtocolError('response body is not JSON (%s): %r' % (e, self.body[:300]))

    @property
    def keep_alive(self):
        if self.framing == 'close':
            return False
        tokens = [t.strip().lower() for v in self.headers_all('connection') for t in v.split(',')]
        if 'close' in tokens:
            return False
        if self.version == 'HTTP/1.0':
            return 'keep-alive' in tokens
        return True


class RawConn:
    """One TCP (optionally TLS) connection: exact bytes out, parsed responses in.

    Bytes received beyond one response stay buffered, so pipelined responses can be read
    one after the other with read_response().
    """

    def __init__(self, port, host=HOST, timeout=DEFAULT_TIMEOUT, tls=False, ssl_context=None,
                 server_hostname=None):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls or ssl_context is not None:
            ctx = ssl_context or insecure_ssl_context()
            self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname or host)
        self.buf = bytearray()
        self.eof = False
        self.received = 0  # bytes read from the socket so far

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(_b(data))

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, size=65536):
        if self.eof:
            return False
        data = self.sock.recv(size)
        if not data:
            self.eof = True
            return False
        self.received += len(data)
        self.buf += data
        return True

    def recv_some(self, size=65536):
        """Whatever is buffered, else one recv(); b'' at EOF."""
        if not self.buf:
            self._fill(size)
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def read_line(self, limit=65536):
        """One line including its LF; ProtocolError at EOF or past `limit`."""
        start = 0
        while True:
            i = self.buf.find(b'\n', start)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            start = len(self.buf)
            if len(self.buf) > limit:
                raise ProtocolError('line longer than %d bytes' % limit)
            if not self._fill():
                raise ProtocolError('connection closed in the middle of a line: %r'
                                    % bytes(self.buf[:200]))

    def read_exact(self, n, sink=None):
        """n bytes (or, with `sink`, passes them on in pieces and returns b'')."""
        out = bytearray()
        while n > 0:
            if not self.buf and not self._fill():
                raise ProtocolError('connection closed with %d body bytes missing' % n)
            take = min(n, len(self.buf))
            piece = self.buf[:take]
            del self.buf[:take]
            n -= take
            if sink is not None:
                sink(bytes(piece))
            else:
                out += piece
        return bytes(out)

    def read_until_close(self, sink=None, limit=None):
        out = bytearray()
        total = 0
        while True:
            if self.buf:
                piece, self.buf = bytes(self.buf), bytearray()
                total += len(piece)
                if sink is not None:
                    sink(piece)
                else:
                    out += piece
                if limit is not None and total > limit:
                    raise ProtocolError('more than %d bytes before close' % limit)
            if not self._fill():
                return bytes(out)

    def closed_by_peer(self, timeout=1.0):
        """True if the peer closes (or resets) the connection within `timeout`."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self._fill():
                    return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def read_head(self):
        """(start line, [(name, value)], raw head bytes); skips leading empty lines."""
        raw = bytearray()
        line = self.read_line()
        while line in (b'\r\n', b'\n'):
            line = self.read_line()
        raw += line
        start = line.rstrip(b'\r\n').decode('latin-1')
        headers = []
        size = len(line)
        while True:
            line = self.read_line()
            raw += line
            size += len(line)
            if size > 1 << 20:
                raise ProtocolError('response head larger than 1 MB')
            if line in (b'\r\n', b'\n'):
                break
            text = line.rstrip(b'\r\n').decode('latin-1')
            if ':' not in text:
                raise ProtocolError('bad header line %r' % text)
            k, v = text.split(':', 1)
            headers.append((k.strip(), v.strip()))
        return start, headers, bytes(raw)

    def read_response(self, method='GET', sink=None, keep_interim=False):
        """Reads one whole response (RFC 9112 6.3 framing); 1xx interims are collected.

        With `sink`, body bytes are handed to sink(bytes) as they arrive instead of being
        kept (for 100 MB bodies); resp.body_length still counts them.
        """
        interim = []
        while True:
            start, headers, raw = self.read_head()
            parts = start.split(' ', 2)
            if len(parts) < 2 or not parts[0].startswith('HTTP/') or not parts[1].isdigit() \
                    or len(parts[1]) != 3:
                raise ProtocolError('bad status line %r' % start)
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ''
            if 100 <= status < 200 and status != 101:
                interim.append((status, headers))
                if keep_interim:
                    return Response(version, status, reason, headers, interim=interim[:-1],
                                    raw_head=raw)
                continue
            break
        resp = Response(version, status, reason, headers, interim=interim, raw_head=raw)
        if method.upper() == 'HEAD' or status < 200 or status in (204, 304) or \
                (method.upper() == 'CONNECT' and 200 <= status < 300):
            return resp
        te = ','.join(resp.headers_all('transfer-encoding')).lower()
        counted = [0]

        def counting(piece):
            counted[0] += len(piece)
            sink(piece)
        target = counting if sink is not None else None
        if te:
            if te.split(',')[-1].strip() != 'chunked':
                resp.framing = 'close'
                resp.body = self.read_until_close(target)
            else:
                resp.framing = 'chunked'
                resp.body, resp.chunk_sizes, resp.trailers = self._read_chunked(target)
        elif resp.header('content-length') is not None:
            values = {v.strip() for v in ','.join(resp.headers_all('content-length')).split(',')}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ProtocolError('bad Content-Length %r' % values)
            resp.framing = 'length'
            resp.body = self.read_exact(int(next(iter(values))), target)
        else:
            resp.framing = 'close'
            resp.body = self.read_until_close(target)
        resp.body_length = counted[0] if sink is not None else len(resp.body)
        return resp

    def _read_chunked(self, sink):
        body = bytearray()
        sizes = []
        while True:
            line = self.read_line(4096).rstrip(b'\r\n')
            size_text = line.split(b';', 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError('bad chunk size line %r' % line)
            if size == 0:
                break
            sizes.append(size)
            body += self.read_exact(size, sink)
            if self.read_line(4096) not in (b'\r\n', b'\n'):
                raise ProtocolError('chunk not followed by CRLF')
        trailers = []
        while True:
            line = self.read_line()
            if line in (b'\r\n', b'\n'):
                break
            k, _, v = line.decode('latin-1').rstrip('\r\n').partition(':')
            trailers.append((k.strip(), v.strip()))
        return bytes(body), sizes, trailers

    def request(self, method, path, headers=None, body=None, host=None, sink=None):
        """Sends one request and reads its response on this connection."""
        self.send(build_request(method, path, headers, body,
                                host=host or '%s:%d' % (self.host, self.port)))
        return self.read_response(method, sink=sink)


def insecure_ssl_context():
    """A client context that accepts any certificate (tests use self-signed ones)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def self_signed_cert(directory, cn='localhost'):
    """Creates cert.pem/key.pem with the openssl CLI; returns (cert_path, key_path)."""
    cert = os.path.join(directory, 'cert.pem')
    key = os.path.join(directory, 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                    '-subj', '/CN=' + cn, '-addext', 'subjectAltName=DNS:%s,IP:127.0.0.1' % cn,
                    '-keyout', key, '-out', cert], check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Client:
    """A tiny HTTP/1.1 keep-alive client: one connection, reopened when the server closes.

    `connections` counts the TCP connections it had to open.
    """

    def __init__(self, port, host=HOST, timeout=DEFAULT_TIMEOUT, tls=False, ssl_context=None,
                 default_headers=None):
        self.port, self.host, self.timeout = port, host, timeout
        self.tls, self.ssl_context = tls, ssl_context
        self.default_headers = _header_items(default_headers)
        self.conn = None
        self.connections = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self):
        self.conn = RawConn(self.port, self.host, self.timeout, self.tls, self.ssl_context)
        self.connections += 1

    def request(self, method, path, headers=None, body=None, sink=None):
        items = self.default_headers + _header_items(headers)
        data = build_request(method, path, items, body, host='%s:%d' % (self.host, self.port))
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self._connect()
            before = self.conn.received + len(self.conn.buf)
            try:
                self.conn.send(data)
                resp = self.conn.read_response(method, sink=sink)
            except (ProtocolError, ConnectionError) as e:
                got_bytes = self.conn.received + len(self.conn.buf) > before
                self.close()
                # A kept-alive connection may have been closed by the server while idle:
                # retry once on a new one, but only when not a byte of an answer came back,
                # and never hide a failure of a fresh connection.
                if fresh or attempt == 1 or got_bytes:
                    raise e
                continue
            if not resp.keep_alive:
                self.close()
            return resp
        raise AssertionError('unreachable')

    def get(self, path, headers=None, **kw):
        return self.request('GET', path, headers, **kw)

    def post(self, path, body=b'', headers=None, **kw):
        return self.request('POST', path, headers, body, **kw)

    def post_json(self, path, obj, headers=None):
        h = [('Content-Type', 'application/json')] + _header_items(headers)
        return self.request('POST', path, h, json.dumps(obj).encode())


def http_request(port, method, path, headers=None, body=None, host=HOST,
                 timeout=DEFAULT_TIMEOUT, tls=False, sink=None):
    """One request on a fresh connection, which is then closed."""
    with RawConn(port, host, timeout, tls) as c:
        return c.request(method, path, headers, body, sink=sink)


def http_get(port, path, headers=None, **kw):
    return http_request(port, 'GET', path, headers, **kw)


# ---------------------------------------------------------------- load

class LoadResult:
    def __init__(self):
        self.statuses = collections.Counter()
        self.errors = collections.Counter()
        self.latencies = []
        self.elapsed = 0.0
        self.connections = 0

    @property
    def total(self):
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def rps(self):
        return sum(self.statuses.values()) / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p):
        """Latency percentile in seconds (p in 0..100)."""
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * p / 100.0))]

    def __repr__(self):
        return '<LoadResult %s errors=%s %.0f req/s p50=%.1fms p99=%.1fms>' % (
            dict(self.statuses), dict(self.errors), self.rps, self.percentile(50) * 1e3,
            self.percentile(99) * 1e3)


def run_parallel(fn, n, timeout=60.0):
    """Runs fn(0) .. fn(n-1) in n threads and waits for them (each join bounded)."""
    ts = [threading.Thread(target=fn, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)


def load(port, path='/', threads=8, requests=100, method='GET', headers=None, body=None,
         keepalive=True, timeout=DEFAULT_TIMEOUT, host=HOST, duration=60.0, tls=False):
    """N threads x M requests; returns a LoadResult (status counts, error counts, latencies).

    `path` may be a function (thread_index, request_index) -> path. Bounded: every thread
    stops after `duration` seconds, and every socket operation has `timeout`.
    """
    res = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker(t):
        statuses, errors, lat = collections.Counter(), collections.Counter(), []
        client = Client(port, host, timeout, tls=tls)
        try:
            for i in range(requests):
                if time.monotonic() > deadline:
                    errors['deadline'] += requests - i
                    break
                p = path(t, i) if callable(path) else path
                t0 = time.monotonic()
                try:
                    r = client.request(method, p, headers, body)
                    statuses[r.status] += 1
                    lat.append(time.monotonic() - t0)
                except Exception as e:
                    errors[type(e).__name__] += 1
                    client.close()
                if not keepalive:
                    client.close()
        finally:
            client.close()
            with lock:
                res.statuses.update(statuses)
                res.errors.update(errors)
                res.latencies.extend(lat)
                res.connections += client.connections

    t_start = time.monotonic()
    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(max(0.1, deadline - time.monotonic() + timeout + 1))
    res.elapsed = time.monotonic() - t_start
    if any(th.is_alive() for th in pool):
        res.errors['thread_stuck'] += 1
    return res


# ---------------------------------------------------------------- WebSocket

WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
WS_CONT, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0, 1, 2, 8, 9, 10


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


class WebSocket:
    """A minimal RFC 6455 client: masked frames out, frames in."""

    def __init__(self, conn, response):
        self.conn = conn
        self.response = response

    @classmethod
    def connect(cls, port, path='/', headers=None, host=HOST, timeout=DEFAULT_TIMEOUT,
                tls=False):
        key = base64.b64encode(os.urandom(16)).decode()
        conn = RawConn(port, host, timeout, tls)
        h = [('Upgrade', 'websocket'), ('Connection', 'Upgrade'), ('Sec-WebSocket-Key', key),
             ('Sec-WebSocket-Version', '13')] + _header_items(headers)
        conn.send(build_request('GET', path, h, host='%s:%d' % (host, port)))
        start, hdrs, raw = conn.read_head()
        resp = Response(start.split(' ')[0], int(start.split(' ')[1]), '', hdrs, raw_head=raw)
        if resp.status != 101:
            body = conn.read_until_close(limit=1 << 20) if resp.header('content-length') is None \
                else conn.read_exact(int(resp.header('content-length')))
            conn.close()
            resp.body = body
            raise ProtocolError('websocket handshake refused: %s %r' % (start, body[:200]))
        if resp.header('sec-websocket-accept') != ws_accept(key):
            conn.close()
            raise ProtocolError('bad Sec-WebSocket-Accept %r' % resp.header('sec-websocket-accept'))
        return cls(conn, resp)

    def send_frame(self, opcode, payload=b'', fin=True, mask=True):
        payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        n = len(payload)
        head = bytearray([(0x80 if fin else 0) | opcode])
        mbit = 0x80 if mask else 0
        if n < 126:
            head.append(mbit | n)
        elif n < 65536:
            head += bytes([mbit | 126]) + n.to_bytes(2, 'big')
        else:
            head += bytes([mbit | 127]) + n.to_bytes(8, 'big')
        if mask:
            key = os.urandom(4)
            head += key
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload)) if n < 4096 \
                else _xor_mask(payload, key)
        self.conn.send(bytes(head) + payload)

    def send(self, message):
        self.send_frame(WS_TEXT if isinstance(message, str) else WS_BINARY, message)

    def recv_frame(self):
        """(fin, opcode, payload bytes); unmasks if the server masked (it must not)."""
        b0, b1 = self.conn.read_exact(2)
        n = b1 & 0x7f
        if n == 126:
            n = int.from_bytes(self.conn.read_exact(2), 'big')
        elif n == 127:
            n = int.from_bytes(self.conn.read_exact(8), 'big')
        key = self.conn.read_exact(4) if b1 & 0x80 else None
        payload = self.conn.read_exact(n)
        if key:
            payload = _xor_mask(payload, key)
        return bool(b0 & 0x80), b0 & 0x0f, payload

    def recv(self):
        """(opcode, payload) of the next frame."""
        _, opcode, payload = self.recv_frame()
        return opcode, payload

    def close(self, code=1000, reason=b''):
        """Sends a close frame and returns the server's close payload (or None)."""
        try:
            self.send_frame(WS_CLOSE, code.to_bytes(2, 'big') + reason)
            while True:
                _, opcode, payload = self.recv_frame()
                if opcode == WS_CLOSE:
                    return payload
        except (ProtocolError, OSError):
            return None
        finally:
            self.conn.close()


def _xor_mask(data, key):
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, 'little') ^ int.from_bytes(k, 'little')).to_bytes(n, 'little')


# ---------------------------------------------------------------- backends and gateway

class Backend:
    """One bin/mockbackend process serving one port, with its fault controls."""

    def __init__(self, logdir, id, port=0, args=(), host=HOST):
        self.logdir, self.id, self.port, self.args, self.host = logdir, id, port, list(args), host
        self.proc = None
        self.starts = 0

    def __repr__(self):
        return '<Backend %s %s:%d>' % (self.id, self.host, self.port)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def address(self):
        return '%s:%d' % (self.host, self.port)

    def start(self, timeout=START_TIMEOUT):
        """Starts (or restarts, on the same port) the process and waits until it listens."""
        if not os.access(MOCKBACKEND, os.X_OK):
            raise unittest.SkipTest('bin/mockbackend is not built (make bin/mockbackend)')
        argv = [MOCKBACKEND, '--port', str(self.port), '--id', self.id, '--host', self.host]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = Proc('mockbackend-' + self.id, wrap_argv(argv + self.args), self.logdir)
            self.starts += 1
            try:
                m = self.proc.wait_log(r'listening on \S+:(\d+)', timeout)
                break
            except ProcessDied:
                # a restart may race with the old socket's TIME_WAIT/close: retry a little
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.port = int(m.group(1))
        wait_port(self.port, self.host, timeout, self.proc)
        return self

    def stop(self, timeout=STOP_TIMEOUT):
        return self.proc.stop(timeout) if self.proc else None

    def kill(self):
        return self.proc.kill() if self.proc else None

    def restart(self):
        self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def request(self, method, path, headers=None, body=None, **kw):
        return http_request(self.port, method, path, headers, body, host=self.host, **kw)

    def get(self, path, headers=None, **kw):
        return self.request('GET', path, headers, **kw)

    def control(self, action, **query):
        """POST /_mock/<action>[?k=v]; returns the JSON answer."""
        qs = '&'.join('%s=%s' % kv for kv in query.items())
        r = self.request('POST', '/_mock/' + action + ('?' + qs if qs else ''))
        if r.status != 200:
            raise AssertionError('/_mock/%s answered %d: %r' % (action, r.status, r.body))
        return r.json()

    def fail(self):
        return self.control('fail')

    def hang(self):
        return self.control('hang')

    def recover(self):
        return self.control('recover')

    def close_new(self):
        return self.control('close')

    def delay(self, ms):
        return self.control('delay', ms=ms)

    def stats(self):
        r = self.request('GET', '/_mock/stats')
        return r.json()

    def reset_stats(self):
        return self.control('reset_stats')

    def requests(self, path=None):
        """Requests this backend served (all, or for one path), /_mock/* excluded."""
        s = self.stats()
        return s['requests'] if path is None else s['by_path'].get(path, 0)

    def rss_kb(self):
        return rss_kb(self.proc.pid)


_PLACEHOLDER = re.compile(r'\{(port|tmp|b\d+)\}')


def render_config(text, port=None, backend_ports=(), tmp=None, auto=True):
    """Fills {port} {tmp} {b1}...; dedents; with `auto`, adds listen/control/publish lines."""
    import textwrap

    def sub(m):
        name = m.group(1)
        if name == 'port':
            value = port
        elif name == 'tmp':
            value = tmp
        else:
            i = int(name[1:]) - 1
            value = backend_ports[i] if 0 <= i < len(backend_ports) else None
        if value is None:
            raise KeyError('config placeholder {%s} has no value' % name)
        return str(value)

    text = _PLACEHOLDER.sub(sub, textwrap.dedent(text)).strip('\n') + '\n'
    if auto:
        def has(directive):
            return re.search(r'^\s*%s\b' % directive, text, re.M) is not None
        extra = []
        if not has('listen') and port is not None:
            extra.append('listen %s:%d' % (HOST, port))
        if not has('control') and tmp is not None:
            extra.append('control ipc://%s/gatewayd.ctl' % tmp)
        if not has('publish') and tmp is not None:
            extra.append('publish ipc://%s/gatewayd.pub' % tmp)
        if extra:
            text = '\n'.join(extra) + '\n' + text
    return text


class Gateway:
    """A running bin/gatewayd."""

    def __init__(self, proc, port, config_path, config_text, tmp):
        self.proc, self.port, self.config_path, self.config_text = proc, port, config_path, \
            config_text
        self.tmp = tmp
        m = re.search(r'^\s*control\s+(\S+)', config_text, re.M)
        self.control_url = m.group(1) if m else None
        m = re.search(r'^\s*publish\s+(\S+)', config_text, re.M)
        self.publish_url = m.group(1) if m else None

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path='/'):
        return 'http://%s:%d%s' % (HOST, self.port, path)

    def request(self, method, path, headers=None, body=None, **kw):
        return http_request(self.port, method, path, headers, body, **kw)

    def get(self, path, headers=None, **kw):
        return self.request('GET', path, headers, **kw)

    def client(self, **kw):
        return Client(self.port, **kw)

    def reload(self, config_text=None):
        """Rewrites the config file (if given) and sends SIGHUP."""
        if config_text is not None:
            with open(self.config_path, 'w') as f:
                f.write(config_text)
            self.config_text = config_text
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=STOP_TIMEOUT):
        return self.proc.stop(timeout)

    def rss_kb(self):
        return rss_kb(self.proc.pid)


def _result_bad_count(result):
    if result is None:
        return 0
    return (len(getattr(result, 'failures', ())) + len(getattr(result, 'errors', ()))
            + len(getattr(result, 'unexpectedSuccesses', ())))


class GatewayTestCase(unittest.TestCase):
    """Base class: processes, temp dir and logs per test; all stopped at the end.

    Everything it starts is stopped by PID in a cleanup that runs even when the test or a
    subclass's setUp/tearDown fails. On failure, the processes' stderr is reported (run.py
    prints it after the traceback; other runners get it on stderr). GWTEST_KEEP=1 keeps
    the temporary directory; GWTEST_WRAP="valgrind ..." runs the binaries under a wrapper.
    """

    timeout = 60  # seconds; run.py's watchdog fails the test after this

    def _gw_state(self):
        if getattr(self, '_gw_ready', False):
            return
        self._gw_ready = True
        self.tmp = tempfile.mkdtemp(prefix='gwtest-')
        self.procs = []
        self.backends = []
        self.gateway = None
        self.gateways = []
        self.port = None
        self._configs = 0
        self.addCleanup(self.stop_all)

    def run(self, result=None):
        before = _result_bad_count(result)
        try:
            return super().run(result)
        finally:
            if getattr(self, '_gw_ready', False):
                if _result_bad_count(result) > before:
                    self._report_logs(result)
                if os.environ.get('GWTEST_KEEP'):
                    sys.stderr.write('gwtest: kept %s\n' % self.tmp)
                else:
                    shutil.rmtree(self.tmp, ignore_errors=True)
                self._gw_ready = False

    def _report_logs(self, result):
        parts = []
        for p in self.procs:
            parts.append('---- %s pid %d exit %s: %s ----\n%s' % (
                p.name, p.pid, p.returncode, ' '.join(p.argv), p.log_tail() or '(no output)'))
        for i in range(self._configs):
            path = os.path.join(self.tmp, 'gatewayd-%d.conf' % (i + 1))
            try:
                with open(path) as f:
                    parts.append('---- %s ----\n%s' % (os.path.basename(path), f.read()))
            except OSError:
                pass
        text = '\n'.join(parts)
        if not text:
            return
        if hasattr(result, 'add_logs'):
            result.add_logs(self, text)
        else:
            sys.stderr.write('\n' + text + '\n')

    def stop_all(self):
        """Stops every process this test started (newest first), by PID."""
        errors = []
        for p in reversed(getattr(self, 'procs', [])):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                errors.append('%s: %s' % (p.name, e))
        if errors:
            raise RuntimeError('could not stop: ' + '; '.join(errors))

    # -- processes

    def start_process(self, name, argv, env=None, cwd=None):
        """Any other program, stopped at the end like the rest."""
        self._gw_state()
        p = Proc(name, argv, self.tmp, env=env, cwd=cwd or self.tmp)
        self.procs.append(p)
        return p

    def start_backend(self, id=None, port=0, args=()):
        self._gw_state()
        b = Backend(self.tmp, id or 'b%d' % (len(self.backends) + 1), port, args)
        self.backends.append(b)
        b.start()
        self.procs.append(b.proc)
        return b

    def start_backends(self, n, ids=None, args=()):
        """n mockbackend processes (ids b1..bn unless given), one port each."""
        return [self.start_backend(ids[i] if ids else None, args=args) for i in range(n)]

    def restart_backend(self, backend):
        backend.restart()
        self.procs.append(backend.proc)
        return backend

    def gateway_env(self, env=None):
        e = dict(os.environ)
        e.setdefault('GATEWAYD_ADMIN_TOKEN', ADMIN_TOKEN)
        e.setdefault('JWT_SECRET_KEY', JWT_SECRET)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def write_config(self, config_text, auto=True, port=None):
        """Renders the config into the temp dir; returns (path, rendered text)."""
        self._gw_state()
        if self.port is None:
            self.port = port or free_port()
        text = render_config(config_text, port or self.port, [b.port for b in self.backends],
                             self.tmp, auto)
        self._configs += 1
        path = os.path.join(self.tmp, 'gatewayd-%d.conf' % self._configs)
        with open(path, 'w') as f:
            f.write(text)
        return path, text

    def start_gateway(self, config_text, env=None, args=(), wait=True, port=None, auto=True,
                      timeout=START_TIMEOUT):
        """Starts `bin/gatewayd -f -c FILE` and waits until it accepts on {port}."""
        self._gw_state()
        if not os.access(GATEWAYD, os.X_OK):
            self.skipTest('bin/gatewayd is not built')
        if port is not None:
            self.port = port
        path, text = self.write_config(config_text, auto, port)
        gport = port or self.port
        proc = self.start_process('gatewayd-%d' % self._configs,
                                  wrap_argv([GATEWAYD, '-f', '-c', path] + list(args)),
                                  env=self.gateway_env(env))
        gw = Gateway(proc, gport, path, text, self.tmp)
        self.gateways.append(gw)
        self.gateway = gw
        if wait:
            wait_port(gport, HOST, timeout, proc)
        return gw

    def check_config(self, config_text, env=None, auto=False):
        """Runs `gatewayd -t -c FILE`: (exit status, stderr text, config path)."""
        self._gw_state()
        if not os.access(GATEWAYD, os.X_OK):
            self.skipTest('bin/gatewayd is not built')
        path, _ = self.write_config(config_text, auto)
        cp = subprocess.run([GATEWAYD, '-t', '-c', path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmp,
                            env=self.gateway_env(env), timeout=START_TIMEOUT)
        return cp.returncode, cp.stderr.decode('utf-8', 'replace'), path

    # -- talking to the gateway

    def _gw_port(self):
        if self.gateway is None:
            raise AssertionError('start_gateway() first')
        return self.gateway.port

    def request(self, method, path, headers=None, body=None, **kw):
        return http_request(self._gw_port(), method, path, headers, body, **kw)

    def get(self, path, headers=None, **kw):
        return self.request('GET', path, headers, **kw)

    def post_json(self, path, obj, headers=None, **kw):
        h = [('Content-Type', 'application/json')] + _header_items(headers)
        return self.request('POST', path, h, json.dumps(obj).encode(), **kw)

    def admin_headers(self):
        return {'Authorization': 'Bearer ' + ADMIN_TOKEN}

    def client(self, **kw):
        return Client(self._gw_port(), **kw)

    def raw(self, timeout=DEFAULT_TIMEOUT):
        """A RawConn to the gateway, closed at the end of the test."""
        c = RawConn(self._gw_port(), timeout=timeout)
        self.addCleanup(c.close)
        return c

    def load(self, path='/', **kw):
        return load(self._gw_port(), path, **kw)

    def ws(self, path='/ws', **kw):
        w = WebSocket.connect(self._gw_port(), path, **kw)
        self.addCleanup(w.conn.close)
        return w

    def assertStatus(self, resp, status, msg=None):
        if resp.status != status:
            self.fail(msg or 'expected status %d, got %d %s: %r' % (
                status, resp.status, resp.reason, resp.body[:500]))
