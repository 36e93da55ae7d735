"""End-to-end tests of certificate reload: SIGHUP (and gatectl reload, which runs the same
reload) reads the listen lines' certificate and key files again. New TLS connections get
the new certificate, connections already open keep theirs and keep working, and a bad new
pair (a key of another certificate, a garbage file) refuses the reload with a clear log
line while the certificate in use stays.
"""

import hashlib
import os
import shutil
import ssl

import gwtest
from gwtest import RawConn


def file_fingerprint(cert_path):
    with open(cert_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def conn_fingerprint(conn):
    return hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()


class TlsReloadTest(gwtest.GatewayTestCase):
    timeout = 90

    def setUp(self):
        self._gw_state()
        self.b1 = self.start_backend('b1')
        self.pairs = []
        for name in ('a', 'b', 'c'):
            d = os.path.join(self.tmp, name)
            os.mkdir(d)
            self.pairs.append(gwtest.self_signed_cert(d, cn='gw-%s.test' % name))
        self.cert = os.path.join(self.tmp, 'live-cert.pem')
        self.key = os.path.join(self.tmp, 'live-key.pem')
        self.install(*self.pairs[0])
        self.gw = self.start_gateway('''
            listen 127.0.0.1:{port} tls cert=%s key=%s
            backend b1 127.0.0.1:{b1} dc=us-east
            ip_limit_exempt 127.0.0.0/8
            route / auth=none
        ''' % (self.cert, self.key))

    def install(self, cert, key):
        """Puts a pair in place the way a renewal does: write aside, then rename."""
        for src, dst in ((cert, self.cert), (key, self.key)):
            shutil.copyfile(src, dst + '.new')
            os.rename(dst + '.new', dst)

    def tls_conn(self):
        c = RawConn(self.gw.port, tls=True, timeout=5)
        self.addCleanup(c.close)
        return c

    def new_fingerprint(self):
        c = self.tls_conn()
        try:
            self.assertEqual(c.request('GET', '/probe').status, 200)
            return conn_fingerprint(c)
        finally:
            c.close()

    def reload_and_wait(self, pattern):
        before = len(gwtest.re.findall(pattern, self.gw.proc.log()))
        self.gw.reload()
        gwtest.wait_until(lambda: len(gwtest.re.findall(pattern, self.gw.proc.log())) > before,
                          timeout=10, message='log line %r' % pattern)

    def test_sighup_serves_the_new_certificate_and_old_connections_keep_working(self):
        fp_a, fp_b = file_fingerprint(self.pairs[0][0]), file_fingerprint(self.pairs[1][0])
        self.assertNotEqual(fp_a, fp_b)
        self.assertEqual(self.new_fingerprint(), fp_a)
        old = self.tls_conn()
        self.assertEqual(old.request('GET', '/before').status, 200)

        self.install(*self.pairs[1])
        self.reload_and_wait(r'configuration reloaded')
        gwtest.wait_until(lambda: self.new_fingerprint() == fp_b, timeout=3,
                          message='a new connection with the new certificate')
        # the keep-alive connection made before the reload: same session, still served
        for i in range(3):
            r = old.request('GET', '/after/%d' % i)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['path'], '/after/%d' % i)
        self.assertEqual(conn_fingerprint(old), fp_a)

    def test_mismatched_pair_refuses_the_reload_and_keeps_the_certificate(self):
        fp_a = file_fingerprint(self.pairs[0][0])
        old = self.tls_conn()
        self.assertEqual(old.request('GET', '/before').status, 200)
        # certificate b with the key of c
        self.install(self.pairs[1][0], self.pairs[2][1])
        self.reload_and_wait(r'reload refused')
        log = self.gw.proc.log()
        line = [l for l in log.splitlines() if 'reload refused' in l][-1]
        self.assertIn('the private key %s does not match the certificate %s' % (
            self.key, self.cert), line)
        self.assertEqual(self.new_fingerprint(), fp_a)
        self.assertEqual(old.request('GET', '/still').status, 200)

        # a garbage certificate file: refused the same way
        with open(self.cert, 'w') as f:
            f.write('-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n')
        self.reload_and_wait(r'reload refused')
        self.assertEqual(self.new_fingerprint(), fp_a)

        # fixed: the next reload takes it
        self.install(*self.pairs[2])
        self.reload_and_wait(r'configuration reloaded')
        fp_c = file_fingerprint(self.pairs[2][0])
        gwtest.wait_until(lambda: self.new_fingerprint() == fp_c, timeout=3,
                          message='the certificate after a good reload')
        self.assertTrue(self.gw.proc.alive())

    def test_many_reloads_leak_no_descriptor(self):
        self.assertEqual(self.new_fingerprint(), file_fingerprint(self.pairs[0][0]))
        fds = gwtest.fd_count(self.gw.pid)
        for i in range(20):
            self.install(*self.pairs[i % 2])
            self.reload_and_wait(r'configuration reloaded')
        self.assertEqual(self.new_fingerprint(), file_fingerprint(self.pairs[1][0]))
        gwtest.wait_until(lambda: gwtest.fd_count(self.gw.pid) <= fds + 2, timeout=3,
                          message='descriptors back to %d (now %d)' % (
                              fds, gwtest.fd_count(self.gw.pid)))


if __name__ == '__main__':
    import unittest
    unittest.main()
