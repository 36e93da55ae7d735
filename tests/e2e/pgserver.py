"""pgserver: a throwaway PostgreSQL server for the end-to-end tests (stdlib only).

    srv = pgserver.PgServer(tmpdir)      # initdb into tmpdir/pgdata (once)
    srv.start()                          # postgres on 127.0.0.1:free port
    url = srv.url()                      # postgresql://gatewayd@127.0.0.1:PORT/gatewayd
    srv.stop(); srv.start()              # same data, same port
    srv.destroy()                        # stops it; the test removes tmpdir

The binaries come from Debian's `postgresql` package (/usr/lib/postgresql/NN/bin, the
newest NN; PGBIN overrides). `available()` is false without them, and tests skip. The
server refuses to run as root, so as root (CI) it runs as the `postgres` system user
(the package creates it) through setpriv, with the data directory chowned to it.
Everything is local: TCP on 127.0.0.1 only, the Unix socket inside the temp dir, trust
authentication (the cluster lives for one test), fsync off for speed. The server is
stopped by its own PID, through pg_ctl-free signals: SIGINT is PostgreSQL's "fast
shutdown" (roll back sessions, stop at once); SIGKILL of the postmaster only if that
hangs.
"""

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

import gwtest

DB = 'gatewayd'
USER = 'gatewayd'


def _bindir():
    env = os.environ.get('PGBIN')
    if env:
        return env
    dirs = sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                  key=lambda d: int(d.split('/')[-2]) if d.split('/')[-2].isdigit() else 0)
    return dirs[-1] if dirs else None


def available():
    """Why the server cannot run here (a string), or None when it can."""
    b = _bindir()
    if b is None or not all(os.access(os.path.join(b, x), os.X_OK)
                            for x in ('initdb', 'postgres')):
        return 'PostgreSQL server binaries not installed (Debian package postgresql)'
    if os.geteuid() == 0:
        try:
            pwd.getpwnam('postgres')
        except KeyError:
            return 'running as root and there is no postgres user to run the server as'
        if shutil.which('setpriv') is None:
            return 'running as root without setpriv (util-linux)'
    return None


class PgServer:
    """One cluster in directory `base` (created by the caller, removed by the caller)."""

    def __init__(self, base, port=None):
        self.bindir = _bindir()
        self.base = base
        self.data = os.path.join(base, 'pgdata')
        self.sockdir = os.path.join(base, 'pgsock')
        self.logfile = os.path.join(base, 'postgres.log')
        self.port = port or gwtest.free_port()
        self.proc = None
        self._as_root = os.geteuid() == 0
        self._init()

    # -- running commands as the server's user

    def _argv(self, argv):
        if self._as_root:
            # setpriv execs (runuser would fork): the PID we hold is postgres itself
            return ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups',
                    '--reset-env', '--'] + argv
        return argv

    def _own(self, path):
        if self._as_root:
            pw = pwd.getpwnam('postgres')
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _init(self):
        for d in (self.data, self.sockdir):
            os.makedirs(d, mode=0o700, exist_ok=True)
            self._own(d)
        if self._as_root:
            # runuser'd processes must be able to reach the dirs through the temp dir
            os.chmod(self.base, 0o755)
        with open(self.logfile, 'a'):
            pass
        self._own(self.logfile)
        cp = subprocess.run(
            self._argv([os.path.join(self.bindir, 'initdb'), '-D', self.data, '-U', USER,
                        '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=120, cwd=self.base)
        if cp.returncode != 0:
            raise RuntimeError('initdb failed: %s' % cp.stdout.decode(errors='replace')[-2000:])

    # -- the server

    def start(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.logfile, 'a')
        argv = self._argv([os.path.join(self.bindir, 'postgres'), '-D', self.data,
                           '-p', str(self.port), '-c', 'listen_addresses=127.0.0.1',
                           '-c', 'unix_socket_directories=' + self.sockdir,
                           '-c', 'fsync=off', '-c', 'synchronous_commit=off',
                           '-c', 'full_page_writes=off', '-c', 'max_connections=100',
                           '-c', 'shared_buffers=16MB', '-c', 'logging_collector=off'])
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     cwd=self.base, preexec_fn=gwtest._set_pdeathsig)
        log.close()
        # setpriv's change of user clears the parent-death signal: stop it on exit
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('postgres exited %s: %s' % (self.proc.returncode,
                                                                self.log_tail()))
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError('postgres did not start in %ds: %s' % (timeout, self.log_tail()))

    def _ready(self):
        """True once the server accepts a database session (the port may open earlier)."""
        if not gwtest.port_open(self.port):
            return False
        psql = os.path.join(self.bindir, 'psql')
        if not os.access(psql, os.X_OK):
            time.sleep(0.3)
            return True
        cp = subprocess.run([psql, '-X', '-q', '-d', 'postgresql://%s@127.0.0.1:%d/postgres'
                             % (USER, self.port), '-c', 'SELECT 1'],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=10)
        return cp.returncode == 0

    def stop(self, timeout=20):
        """Fast shutdown by PID; the data stays for the next start()."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        deadline = time.monotonic() + timeout
        while gwtest.port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def pids(self):
        """The postmaster and its children (the server's processes), for signals."""
        if self.proc is None:
            return []
        out = [self.proc.pid]
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open('/proc/%s/stat' % d) as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid:
                out.append(int(d))
        return out

    def destroy(self):
        self.stop()

    def log_tail(self, n=40):
        try:
            with open(self.logfile, errors='replace') as f:
                return ''.join(f.readlines()[-n:])
        except OSError:
            return ''

    # -- clients

    def url(self, db=DB):
        return 'postgresql://%s@127.0.0.1:%d/%s' % (USER, self.port, db)

    def psql(self, sql, db=DB):
        """Runs sql with psql; returns the rows as lists of strings (unaligned output)."""
        cp = subprocess.run([os.path.join(self.bindir, 'psql'), '-X', '-A', '-t', '-q',
                             '-v', 'ON_ERROR_STOP=1', '-F', '\t', '-d', self.url(db),
                             '-c', sql],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=30)
        if cp.returncode != 0:
            raise RuntimeError('psql %r: %s' % (sql, cp.stderr.decode(errors='replace')))
        out = cp.stdout.decode()
        return [line.split('\t') for line in out.splitlines() if line != '']

    def create_db(self, db=DB):
        self.psql('CREATE DATABASE %s' % db, db='postgres')
        return self.url(db)


def closed_port():
    """A loopback port nobody listens on (for "server unreachable" tests)."""
    s = socket.socket()
    s.bind((gwtest.HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port
