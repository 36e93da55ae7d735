"""End-to-end tests of GET /metrics (SPEC sections 6 and 8): Prometheus text format 0.0.4,
every family with HELP and TYPE, and counters that agree exactly with known traffic.

Traffic comes from 127.0.0.1, which a tiny `ip_limit` governs; the scrapes come from
127.0.0.2, which is `ip_limit_exempt`, so that scraping does not spend the quota. The
assertions compare two scrapes (before and after the traffic), so nothing the harness
does at start-up matters. `promtool check metrics` runs on the output when promtool is
installed (Debian package `prometheus`); otherwise that one check is skipped.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import time

import gwtest

SCRAPER = '127.0.0.2'
IP_LIMIT = 20

CONFIG = '''
    backend b1 127.0.0.1:{b1} dc=us-east
    tier free 2/3600s
    ip_limit %d/3600s
    ip_limit_exempt %s/32
    ban threshold=1000 base=1s multiplier=2 max=2s
    route /api auth=none
    route /status auth=none
    route /jwt auth=jwt
''' % (IP_LIMIT, SCRAPER)

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def jwt(claims, secret=gwtest.JWT_SECRET):
    h = b64u(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())
    p = b64u(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), (h + '.' + p).encode(), hashlib.sha256).digest()
    return h + '.' + p + '.' + b64u(sig)


def access_token(sub='4242', tier='free'):
    now = int(time.time())
    return jwt({'sub': sub, 'tier': tier, 'iss': 'gatewayd', 'iat': now, 'nbf': now,
                'exp': now + 600, 'jti': os.urandom(16).hex(), 'typ': 'access'})


def parse_metrics(text):
    """{family: {'help','type','samples': {(name, frozenset(labels)): value}}}; raises on
    anything that is not well-formed text format."""
    fams = {}
    for line in text.split('\n'):
        if line == '':
            continue
        if line.startswith('# HELP ') or line.startswith('# TYPE '):
            kind, name, rest = line[2:6], *line[7:].split(' ', 1)
            f = fams.setdefault(name, {'samples': {}})
            f['help' if kind == 'HELP' else 'type'] = rest
            continue
        m = SAMPLE_RE.match(line)
        if m is None:
            raise AssertionError('bad sample line %r' % line)
        name, labels, value = m.group(1), m.group(2) or '', float(m.group(3))
        lab = dict(LABEL_RE.findall(labels))
        fam = name
        for suffix in ('_bucket', '_sum', '_count'):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and fams.get(base, {}).get('type') == 'histogram':
                fam = base
        if fam not in fams or 'type' not in fams[fam] or 'help' not in fams[fam]:
            raise AssertionError('sample %r without HELP/TYPE' % line)
        key = (name, frozenset(lab.items()))
        if key in fams[fam]['samples']:
            raise AssertionError('duplicate sample %r' % line)
        fams[fam]['samples'][key] = value
    return fams


class Scrape:
    def __init__(self, text):
        self.text = text
        self.fams = parse_metrics(text)

    def get(self, name, **labels):
        fam = self.fams.get(name)
        for suffix in ('_bucket', '_sum', '_count'):
            if fam is None and name.endswith(suffix):
                fam = self.fams.get(name[:-len(suffix)])
        if fam is None:
            return 0.0
        return fam['samples'].get((name, frozenset(labels.items())), 0.0)


class MetricsTest(gwtest.GatewayTestCase):
    timeout = 60

    def setUp(self):
        super().setUp()
        self.b1 = self.start_backends(1)[0]
        self.gw = self.start_gateway(CONFIG)

    def scrape_raw(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(gwtest.DEFAULT_TIMEOUT)
        try:
            s.bind((SCRAPER, 0))
            s.connect((gwtest.HOST, self.gw.port))
            s.sendall(b'GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n')
            data = b''
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        head, _, body = data.partition(b'\r\n\r\n')
        lines = head.decode('latin-1').split('\r\n')
        status = int(lines[0].split(' ')[1])
        headers = {k.strip().lower(): v.strip() for k, v in
                   (ln.split(':', 1) for ln in lines[1:])}
        return status, headers, body

    def scrape(self):
        status, headers, body = self.scrape_raw()
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(headers.get('content-type', '').split(';')[:2],
                         ['text/plain', ' version=0.0.4'], headers)
        self.assertEqual(int(headers['content-length']), len(body))
        return Scrape(body.decode())

    def test_format_and_names(self):
        m = self.scrape()
        want = {
            'gatewayd_requests_total': 'counter',
            'gatewayd_request_duration_seconds': 'histogram',
            'gatewayd_backend_up': 'gauge',
            'gatewayd_backend_active_connections': 'gauge',
            'gatewayd_circuit_state': 'gauge',
            'gatewayd_ratelimit_decisions_total': 'counter',
            'gatewayd_cache_requests_total': 'counter',
            'gatewayd_queue_depth': 'gauge',
            'gatewayd_jwt_verifications_total': 'counter',
            'gatewayd_geo_requests_total': 'counter',
            'process_open_fds': 'gauge',
            'process_resident_memory_bytes': 'gauge',
            'process_start_time_seconds': 'gauge',
            'gatewayd_threads': 'gauge',
        }
        for name, typ in want.items():
            self.assertIn(name, m.fams, 'missing family %s' % name)
            self.assertEqual(m.fams[name].get('type'), typ, name)
            self.assertTrue(m.fams[name].get('help'), name)
        self.assertEqual(m.get('gatewayd_backend_up', backend='b1'), 1)
        self.assertEqual(m.get('gatewayd_circuit_state', backend='b1'), 0)
        self.assertEqual(m.get('gatewayd_backend_active_connections', backend='b1'), 0)
        self.assertEqual(m.get('gatewayd_queue_depth'), 0)
        # process metrics agree with /proc
        pid = self.gw.pid
        # the control, log and pool threads (and their sockets and files) start just after
        # the HTTP listeners: scrape again until the process has all of them
        agree = []

        def threads_agree():
            got = self.scrape().get('gatewayd_threads')
            agree[:] = [got, len(os.listdir('/proc/%d/task' % pid))]
            return agree[0] == agree[1]
        gwtest.wait_until(lambda: threads_agree() or False, 3,
                          message='gatewayd_threads = /proc task count %r' % (agree,))
        m = self.scrape()
        fds = len(os.listdir('/proc/%d/fd' % pid))
        self.assertLessEqual(abs(m.get('process_open_fds') - fds), 3, (m.get('process_open_fds'), fds))
        rss = gwtest.rss_kb(pid) * 1024
        self.assertLess(abs(m.get('process_resident_memory_bytes') - rss), 16 << 20)
        self.assertGreater(m.get('process_resident_memory_bytes'), 1 << 20)
        start = m.get('process_start_time_seconds')
        self.assertLess(abs(start - time.time()), 60, start)
        # every configured tier and the IP limiter are listed, even at zero
        for tier in ('free', 'ip'):
            for decision in ('allowed', 'rejected'):
                self.assertIn(('gatewayd_ratelimit_decisions_total',
                               frozenset({'tier': tier, 'decision': decision}.items())),
                              m.fams['gatewayd_ratelimit_decisions_total']['samples'])

    def test_counters_match_traffic(self):
        before = self.scrape()
        c = self.client()
        n_ok, n_b404, n_g404, n_badjwt = 9, 2, 3, 2
        for _ in range(n_ok):
            self.assertStatus(c.get('/api/x'), 200)
        for _ in range(n_b404):
            self.assertStatus(c.get('/status/404'), 404)          # the backend's 404
        for _ in range(n_g404):
            self.assertStatus(c.get('/nowhere'), 404)             # no route: the gateway's
        bad = access_token()[:-4] + 'AAAA'
        for _ in range(n_badjwt):
            self.assertStatus(c.get('/jwt', {'Authorization': 'Bearer ' + bad}), 401)
        good = access_token()
        # tier free 2/3600s: two pass, the third is 429
        self.assertStatus(c.get('/jwt', {'Authorization': 'Bearer ' + good}), 200)
        self.assertStatus(c.get('/jwt', {'Authorization': 'Bearer ' + good}), 200)
        self.assertStatus(c.get('/jwt', {'Authorization': 'Bearer ' + good}), 429)
        used = n_ok + n_b404 + n_g404 + n_badjwt + 3
        # the rest of the per-IP quota passes, then 3 rejections
        n_more = IP_LIMIT - used
        self.assertGreater(n_more, 0)
        for _ in range(n_more):
            self.assertStatus(c.get('/api/y'), 200)
        n_ip429 = 3
        for _ in range(n_ip429):
            r = c.get('/api/z')
            self.assertStatus(r, 429)
            self.assertEqual(r.json().get('tier'), 'ip')
        c.close()
        after = self.scrape()

        def d(name, **labels):
            return after.get(name, **labels) - before.get(name, **labels)

        proxied_200 = n_ok + 2 + n_more
        self.assertEqual(d('gatewayd_requests_total', code='200', backend='b1'), proxied_200)
        self.assertEqual(d('gatewayd_requests_total', code='404', backend='b1'), n_b404)
        self.assertEqual(d('gatewayd_requests_total', code='404', backend='none'), n_g404)
        self.assertEqual(d('gatewayd_requests_total', code='401', backend='none'), n_badjwt)
        self.assertEqual(d('gatewayd_requests_total', code='429', backend='none'), 1 + n_ip429)
        # the first scrape itself is counted once it is answered
        self.assertEqual(d('gatewayd_requests_total', code='200', backend='none'), 1)
        total = proxied_200 + n_b404 + n_g404 + n_badjwt + 1 + n_ip429 + 1
        all_req = sum(v for (name, _), v in
                      after.fams['gatewayd_requests_total']['samples'].items()) - \
            sum(v for (name, _), v in before.fams['gatewayd_requests_total']['samples'].items())
        self.assertEqual(all_req, total)

        self.assertEqual(d('gatewayd_request_duration_seconds_count'), total)
        self.assertEqual(d('gatewayd_request_duration_seconds_bucket', le='+Inf'), total)
        self.assertGreater(d('gatewayd_request_duration_seconds_sum'), 0)
        les = sorted((float(dict(lab)['le']), v) for (name, lab), v in
                     after.fams['gatewayd_request_duration_seconds']['samples'].items()
                     if name.endswith('_bucket'))
        self.assertEqual(len(les), 14)
        for (_, a), (_, b) in zip(les, les[1:]):
            self.assertLessEqual(a, b)   # cumulative

        self.assertEqual(d('gatewayd_ratelimit_decisions_total', tier='ip', decision='allowed'),
                         IP_LIMIT)
        self.assertEqual(d('gatewayd_ratelimit_decisions_total', tier='ip', decision='rejected'),
                         n_ip429)
        self.assertEqual(d('gatewayd_ratelimit_decisions_total', tier='free', decision='allowed'), 2)
        self.assertEqual(d('gatewayd_ratelimit_decisions_total', tier='free', decision='rejected'), 1)
        self.assertEqual(d('gatewayd_jwt_verifications_total', result='valid'), 3)
        self.assertEqual(d('gatewayd_jwt_verifications_total', result='invalid'), n_badjwt)
        self.assertEqual(d('gatewayd_cache_requests_total', result='bypass'), proxied_200 + n_b404)
        self.assertEqual(d('gatewayd_geo_requests_total', datacenter='us-east', country='unknown'),
                         proxied_200 + n_b404)
        self.assertEqual(after.get('gatewayd_queue_depth'), 0)
        self.assertEqual(after.get('gatewayd_backend_active_connections', backend='b1'), 0)
        # bounded cardinality: no label value comes from a key, a user or an address
        for fam in after.fams.values():
            for (_, lab) in fam['samples']:
                for k, v in lab:
                    self.assertNotIn('4242', v)
                    self.assertNotIn('127.0.0', v)
        self.promtool(after.text)

    def promtool(self, text):
        tool = shutil.which('promtool')
        if tool is None:
            self.skipTest('promtool not installed (apt-get install prometheus): '
                          '`promtool check metrics` not run')
        p = subprocess.run([tool, 'check', 'metrics'], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        self.assertEqual(p.stdout.decode().strip(), '', p.stdout.decode())

    def test_promtool_clean(self):
        self.assertStatus(self.get('/api/x'), 200)
        self.promtool(self.scrape().text)


if __name__ == '__main__':
    import unittest
    unittest.main()
