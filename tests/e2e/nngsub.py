"""A minimal nng SUB client for the tests, through ctypes and the system's libnng (the
library gatewayd itself links), so the Python tests need no extra package.

    with NngSub('ipc:///tmp/x/gatewayd.pub', topics=('stats ',)) as sub:
        topic, obj = sub.recv_json(timeout=3.0)
"""

import ctypes
import ctypes.util
import json
import time

NNG_FLAG_ALLOC = 1
NNG_ETIMEDOUT = 5

_lib = None


def lib():
    """The loaded libnng, or None when it is not installed."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library('nng') or 'libnng.so.1'
        try:
            _lib = ctypes.CDLL(name)
        except OSError:
            return None
        _lib.nng_strerror.restype = ctypes.c_char_p
    return _lib


class NngError(Exception):
    pass


class NngSub:
    def __init__(self, url, topics=('',), dial_timeout=5.0):
        self.nng = lib()
        if self.nng is None:
            raise NngError('libnng is not installed')
        self.sock = ctypes.c_uint32(0)  # nng_socket is a struct of one uint32_t
        self._check(self.nng.nng_sub0_open(ctypes.byref(self.sock)), 'sub0_open')
        for t in topics:
            b = t.encode()
            self._check(self.nng.nng_socket_set(self.sock, b'sub:subscribe', b, len(b)),
                        'subscribe')
        deadline = time.monotonic() + dial_timeout
        while True:
            rv = self.nng.nng_dial(self.sock, url.encode(), None, 0)
            if rv == 0:
                break
            if time.monotonic() > deadline:
                self._check(rv, 'dial ' + url)
            time.sleep(0.05)

    def _check(self, rv, what):
        if rv != 0:
            raise NngError('%s: %s' % (what, self.nng.nng_strerror(rv).decode()))

    def recv(self, timeout=3.0):
        """One message as bytes, or None after timeout seconds."""
        self._check(self.nng.nng_socket_set_ms(self.sock, b'recv-timeout',
                                               ctypes.c_int32(int(timeout * 1000))),
                    'recv-timeout')
        buf = ctypes.c_void_p()
        size = ctypes.c_size_t(0)
        rv = self.nng.nng_recv(self.sock, ctypes.byref(buf), ctypes.byref(size),
                               NNG_FLAG_ALLOC)
        if rv == NNG_ETIMEDOUT:
            return None
        self._check(rv, 'recv')
        data = ctypes.string_at(buf, size.value)
        self.nng.nng_free(buf, size)
        return data

    def recv_json(self, timeout=3.0):
        """(topic, object) of the next message, or (None, None) after timeout."""
        data = self.recv(timeout)
        if data is None:
            return None, None
        topic, _, body = data.partition(b' ')
        return topic.decode(), json.loads(body)

    def wait_for(self, pred, timeout=5.0):
        """The first (topic, object) for which pred(topic, obj) is true, or (None, None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic, obj = self.recv_json(max(0.05, deadline - time.monotonic()))
            if topic is not None and pred(topic, obj):
                return topic, obj
        return None, None

    def close(self):
        if self.sock is not None:
            self.nng.nng_close(self.sock)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
