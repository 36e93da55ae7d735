"""End-to-end tests of the access log (`access_log FILE|stdout|off`) and GET /logs.

One JSON object per request, written off the hot path by the log thread: the fields of
the issue (time, request id, client ip, identity, method, path, status, bytes, backend,
datacenter, cache, latency, rate-limit decision), credentials in the query redacted,
SIGUSR1 and reload reopening the file (logrotate), an unwritable path refused at start,
and /logs serving the newest entries to admins.
"""

import json
import os
import signal
import time

import gwtest

CONFIG = '''
    backend b1 127.0.0.1:{b1} dc=us-east
    datacenter us-east lat=39.04 lon=-77.49
    access_log {tmp}/access.log
    tier free 3/3600s
    ip_limit 1000/60s
    route /jwt auth=jwt
    route / auth=none
'''


class AccessLogCase(gwtest.GatewayTestCase):
    config = CONFIG

    def setUp(self):
        super().setUp()
        self.backend = self.start_backend('b1')
        self.gw = self.start_gateway(self.config)
        self.path = os.path.join(self.tmp, 'access.log')

    def lines(self, path=None):
        try:
            with open(path or self.path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def wait_entry(self, pred, path=None, timeout=3.0):
        found = []

        def check():
            found[:] = [e for e in self.lines(path) if pred(e)]
            return bool(found)
        gwtest.wait_until(check, timeout, message='access log entry')
        return found[-1]

    def by_request_id(self, rid, path=None):
        return self.wait_entry(lambda e: e.get('request_id') == rid, path)


class FieldsTest(AccessLogCase):
    def test_proxied_request_fields(self):
        r = self.get('/hello/world?a=1', {'X-Request-Id': 'req-fields-1'})
        self.assertStatus(r, 200)
        e = self.by_request_id('req-fields-1')
        self.assertEqual(e['method'], 'GET')
        self.assertEqual(e['path'], '/hello/world?a=1')
        self.assertEqual(e['status'], 200)
        self.assertEqual(e['bytes'], len(r.body))
        self.assertEqual(e['backend'], 'b1')
        self.assertEqual(e['datacenter'], 'us-east')
        self.assertEqual(e['client_ip'], '127.0.0.1')
        self.assertEqual(e['identity'], '')
        self.assertEqual(e['ratelimit'], 'none')
        self.assertIsInstance(e['latency_us'], int)
        self.assertGreater(e['latency_us'], 0)
        self.assertIn('cache', e)
        # RFC 3339 UTC time, within a minute of now
        t = time.mktime(time.strptime(e['time'][:19], '%Y-%m-%dT%H:%M:%S')) - time.timezone
        self.assertLess(abs(t - time.time()), 60, e['time'])
        self.assertTrue(e['time'].endswith('Z'), e['time'])

    def test_every_request_one_line_of_json(self):
        before = len(self.lines())
        for i in range(30):
            self.assertStatus(self.get('/n/%d' % i), 200)
        gwtest.wait_until(lambda: len(self.lines()) >= before + 30, 3.0, message='30 lines')
        paths = [e['path'] for e in self.lines()]
        for i in range(30):
            self.assertEqual(paths.count('/n/%d' % i), 1, paths)

    def test_credentials_in_the_query_are_redacted(self):
        self.get('/q?token=s3cr3t-value&b=2&password=hunter22', {'X-Request-Id': 'req-red'})
        e = self.by_request_id('req-red')
        self.assertEqual(e['path'], '/q?token=REDACTED&b=2&password=REDACTED')
        with open(self.path, 'rb') as f:
            text = f.read()
        self.assertNotIn(b's3cr3t-value', text)
        self.assertNotIn(b'hunter22', text)

    def test_identity_rate_limit_and_errors(self):
        h = {'Authorization': 'Bearer ' + gwtest.access_token('4242')}
        for i in range(4):  # free: 3 per hour, the 4th is refused
            h['X-Request-Id'] = 'req-rl-%d' % i
            r = self.get('/jwt/x', h)
            self.assertStatus(r, 200 if i < 3 else 429)
        ok = self.by_request_id('req-rl-0')
        self.assertEqual(ok['identity'], 'u:4242')
        self.assertEqual(ok['ratelimit'], 'allowed')
        refused = self.by_request_id('req-rl-3')
        self.assertEqual(refused['status'], 429)
        self.assertEqual(refused['ratelimit'], 'rejected')
        self.assertEqual(refused['error'], 'rate_limited')
        self.assertEqual(refused['backend'], '')
        # an invalid credential: the gateway's own 401
        self.get('/jwt/x', {'Authorization': 'Bearer not.a.jwt', 'X-Request-Id': 'req-401'})
        e = self.by_request_id('req-401')
        self.assertEqual(e['status'], 401)
        self.assertTrue(e['error'], e)
        with open(self.path, 'rb') as f:
            self.assertNotIn(h['Authorization'].split()[1].encode(), f.read())

    def test_streamed_upload_keeps_its_path(self):
        body = b'x' * (900 * 1024)  # far more than a connection buffer, under limits body
        r = self.request('POST', '/upload/big?x=1', {'X-Request-Id': 'req-big'}, body)
        self.assertStatus(r, 200)
        e = self.by_request_id('req-big')
        self.assertEqual(e['method'], 'POST')
        self.assertEqual(e['path'], '/upload/big?x=1')


class ReopenTest(AccessLogCase):
    def test_sigusr1_reopens_after_rotation(self):
        self.get('/before', {'X-Request-Id': 'req-before'})
        self.by_request_id('req-before')
        rotated = self.path + '.1'
        os.rename(self.path, rotated)
        self.gw.proc.send_signal(signal.SIGUSR1)
        gwtest.wait_until(lambda: os.path.exists(self.path), 3.0, message='new log file')
        self.get('/after', {'X-Request-Id': 'req-after'})
        self.by_request_id('req-after')
        self.assertFalse([e for e in self.lines(rotated) if e['request_id'] == 'req-after'])
        self.assertFalse([e for e in self.lines() if e['request_id'] == 'req-before'])

    def test_reload_switches_the_file(self):
        other = os.path.join(self.tmp, 'other.log')
        self.gw.reload(self.gw.config_text.replace('access.log', 'other.log'))
        gwtest.wait_until(lambda: os.path.exists(other), 5.0, message='other.log created')
        self.get('/switched', {'X-Request-Id': 'req-switched'})
        self.by_request_id('req-switched', other)
        self.assertFalse([e for e in self.lines() if e['request_id'] == 'req-switched'])

    def test_reload_to_off_stops_writing(self):
        self.gw.reload(self.gw.config_text.replace('access_log %s/access.log' % self.tmp,
                                                   'access_log off'))
        time.sleep(0.3)
        n = len(self.lines())
        self.assertStatus(self.get('/quiet'), 200)
        time.sleep(0.3)
        self.assertEqual(len(self.lines()), n)


class StartupTest(gwtest.GatewayTestCase):
    def test_unwritable_path_is_refused_at_start(self):
        self.start_backend('b1')
        gw = self.start_gateway('''
            backend b1 127.0.0.1:{b1}
            access_log /nonexistent-dir/for/access.log
        ''', wait=False)
        self.assertNotEqual(gw.proc.wait(10), 0)
        self.assertIn('access_log /nonexistent-dir/for/access.log', gw.proc.log())

    def test_bad_directive_is_a_config_error(self):
        rc, err, path = self.check_config('access_log\n')
        self.assertEqual(rc, 1)
        self.assertIn('access_log', err)

    def test_stdout(self):
        self.start_backend('b1')
        gw = self.start_gateway('''
            backend b1 127.0.0.1:{b1}
            access_log stdout
        ''')
        self.assertStatus(self.get('/to-stdout', {'X-Request-Id': 'req-stdout'}), 200)

        def on_stdout():
            with open(gw.proc.out_path) as f:
                return '"request_id":"req-stdout"' in f.read()
        gwtest.wait_until(on_stdout, 3.0, message='line on stdout')


class LogsEndpointTest(AccessLogCase):
    def test_logs_newest_last_with_limit(self):
        for i in range(5):
            self.get('/ring/%d' % i, {'X-Request-Id': 'req-ring-%d' % i})
        self.by_request_id('req-ring-4')
        r = self.get('/logs?limit=3', self.admin_headers())
        self.assertStatus(r, 200)
        entries = r.json()['entries']
        self.assertEqual(len(entries), 3, entries)
        self.assertEqual([e['request_id'] for e in entries],
                         ['req-ring-2', 'req-ring-3', 'req-ring-4'])
        self.assertEqual(entries[-1]['path'], '/ring/4')

    def test_logs_needs_admin_and_a_good_limit(self):
        self.assertStatus(self.get('/logs'), 401)
        for bad in ('0', '-3', 'x', ''):
            self.assertStatus(self.get('/logs?limit=' + bad, self.admin_headers()), 400)
        # a larger limit is the ring's size, as /admin/logs does
        self.assertStatus(self.get('/logs?limit=100000', self.admin_headers()), 200)

    def test_logs_without_a_file(self):
        self.gw.reload(self.gw.config_text.replace('access_log %s/access.log' % self.tmp,
                                                   'access_log off'))
        time.sleep(0.3)
        self.get('/no-file', {'X-Request-Id': 'req-no-file'})

        def seen():
            r = self.get('/logs?limit=5', self.admin_headers())
            return any(e['request_id'] == 'req-no-file' for e in r.json()['entries'])
        gwtest.wait_until(seen, 3.0, message='/logs entry without a file')
