"""End-to-end tests of geographic routing (SPEC sections 2, 3, 6 and 8; gatewayd.conf(5)).

Clients are presented through a trusted proxy: the test talks from loopback, which is
`trusted_proxy 127.0.0.0/8`, and names the client in X-Forwarded-For with addresses from
the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
Each datacenter has its own mockbackend process, so one datacenter can be killed while the
others answer. The MaxMind DB cases build a real .mmdb with MaxMind::DB::Writer (Debian's
libmaxmind-db-writer-perl) and are skipped when that Perl module is missing.
"""

import json
import math
import os
import re
import subprocess
import time

import gwtest

NO_IP_LIMIT = 'ip_limit 1000000/1s'
FAST_HEALTH = 'health_check interval=1s timeout=500ms rise=1 fall=1'

DCS = {'us-east': (39.04, -77.49), 'eu-west': (53.35, -6.26), 'ap-south': (1.35, 103.82)}
BERLIN = (52.52, 13.40)

# A documentation address per place, and where geo_static puts it.
DE = '203.0.113.7'      # Berlin
US = '198.51.100.9'     # New York
SG = '192.0.2.44'       # Singapore (geo_static), or London in the test MMDB
STATICS = """
geo_static 203.0.113.0/24 country=DE lat=52.52 lon=13.40
geo_static 198.51.100.0/24 country=US lat=40.71 lon=-74.00
"""

MMDB_WRITER = r'''
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my ($out, @nets) = @ARGV;
my %types = (country => 'map', iso_code => 'utf8_string', location => 'map',
             latitude => 'double', longitude => 'double');
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 28, database_type => 'GeoLite2-City',
    languages => ['en'], description => { en => 'gatewayd test database' },
    remove_reserved_networks => 0,
    map_key_type_callback => sub { $types{ $_[0] } },
);
for my $n (@nets) {
    my ($net, $cc, $lat, $lon) = split /,/, $n;
    my %rec = (country => { iso_code => $cc });
    $rec{location} = { latitude => $lat + 0, longitude => $lon + 0 } if defined $lon;
    $tree->insert_network($net, \%rec);
}
open my $fh, '>:raw', "$out.tmp" or die "$out: $!";
$tree->write_tree($fh);
close $fh or die;
rename "$out.tmp", $out or die;
'''


def haversine_km(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + \
        math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def have_mmdb_writer():
    try:
        cp = subprocess.run(['perl', '-MMaxMind::DB::Writer::Tree', '-e', '1'],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return cp.returncode == 0


class GeoCase(gwtest.GatewayTestCase):
    timeout = 90

    def start_geo(self, extra='', residency=''):
        """One backend per datacenter: us1 (us-east), eu1 (eu-west), ap1 (ap-south)."""
        for bid in ('us1', 'eu1', 'ap1'):
            self.start_backend(bid)
        return self.start_gateway('\n'.join([
            'strategy round_robin', NO_IP_LIMIT, FAST_HEALTH,
            'trusted_proxy 127.0.0.0/8',
            'backend us1 127.0.0.1:{b1} dc=us-east',
            'backend eu1 127.0.0.1:{b2} dc=eu-west',
            'backend ap1 127.0.0.1:{b3} dc=ap-south',
            'datacenter us-east lat=39.04 lon=-77.49',
            'datacenter eu-west lat=53.35 lon=-6.26' + residency,
            'datacenter ap-south lat=1.35 lon=103.82',
            'route / auth=none',
            extra]))

    def geo_get(self, client=None, path='/'):
        headers = {'X-Forwarded-For': client} if client else None
        return self.get(path, headers)

    def dc_of(self, client=None):
        r = self.geo_get(client)
        self.assertStatus(r, 200)
        return r.header('X-Datacenter')

    def backend_healthy(self, bid):
        for b in self.get('/stats').json()['backends']:
            if b['id'] == bid:
                return b['healthy']
        raise AssertionError('no backend %s' % bid)

    def wait_health(self, bid, healthy):
        gwtest.wait_until(lambda: self.backend_healthy(bid) == healthy, timeout=15,
                          message='%s healthy=%s' % (bid, healthy))

    def geo_stats(self):
        r = self.get('/geo/stats')
        self.assertStatus(r, 200)
        self.assertIn('application/json', r.header('Content-Type', ''))
        return r.json()


class TestGeoRouting(GeoCase):

    def test_nearest_datacenter_and_headers(self):
        self.start_geo(STATICS)
        r = self.geo_get(DE)
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Datacenter'), 'eu-west')
        self.assertEqual(r.header('X-Backend'), 'eu1')
        self.assertEqual(r.header('X-Geo-Country'), 'DE')
        want = haversine_km(BERLIN, DCS['eu-west'])
        self.assertAlmostEqual(int(r.header('X-Geo-Distance-Km')), want, delta=2)
        r = self.geo_get(US)
        self.assertEqual(r.header('X-Datacenter'), 'us-east')
        self.assertEqual(r.header('X-Geo-Country'), 'US')
        # the same client always lands in the same datacenter
        self.assertEqual({self.dc_of(DE) for _ in range(6)}, {'eu-west'})

    def test_right_most_untrusted_hop_decides(self):
        self.start_geo(STATICS)
        # the client's own claim (left) is not believed: the hop our proxy saw is
        self.assertEqual(self.dc_of('%s, %s' % (DE, US)), 'us-east')
        # trusted hops (loopback) on the right are skipped
        self.assertEqual(self.dc_of('%s, 127.0.0.5' % DE), 'eu-west')

    def test_untrusted_peer_cannot_claim_a_location(self):
        for bid in ('us1', 'eu1'):
            self.start_backend(bid)
        self.start_gateway('\n'.join([
            'strategy round_robin', NO_IP_LIMIT, STATICS,
            'backend us1 127.0.0.1:{b1} dc=us-east',
            'backend eu1 127.0.0.1:{b2} dc=eu-west',
            'datacenter us-east lat=39.04 lon=-77.49',
            'datacenter eu-west lat=53.35 lon=-6.26',
            'geo_default us-east']))
        r = self.geo_get(DE)
        self.assertEqual(r.header('X-Datacenter'), 'us-east')
        self.assertIsNone(r.header('X-Geo-Country'))
        self.assertIsNone(r.header('X-Geo-Distance-Km'))

    def test_unlocated_clients_reach_every_backend(self):
        self.start_geo(STATICS)
        seen = {self.geo_get().header('X-Backend') for _ in range(9)}
        self.assertEqual(seen, {'us1', 'eu1', 'ap1'})
        # an address no provider knows is unlocated too
        seen = {self.geo_get('192.0.2.200').header('X-Backend') for _ in range(9)}
        self.assertEqual(seen, {'us1', 'eu1', 'ap1'})

    def test_geo_default(self):
        self.start_geo(STATICS + 'geo_default ap-south\n')
        r = self.geo_get()
        self.assertEqual(r.header('X-Datacenter'), 'ap-south')
        self.assertIsNone(r.header('X-Geo-Distance-Km'))
        self.assertEqual({self.dc_of() for _ in range(6)}, {'ap-south'})
        self.assertEqual(self.dc_of(DE), 'eu-west')

    def test_failover_to_next_nearest(self):
        self.start_geo(STATICS)
        self.assertEqual(self.dc_of(DE), 'eu-west')
        eu = self.backends[1]
        eu.kill()
        # at once (the failed connect is retried in the next datacenter) and after the
        # health checks took eu1 out: us-east is the next nearest to Berlin
        r = self.geo_get(DE)
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Datacenter'), 'us-east')
        self.wait_health('eu1', False)
        for _ in range(4):
            r = self.geo_get(DE)
            self.assertEqual(r.header('X-Datacenter'), 'us-east')
            self.assertEqual(int(r.header('X-Geo-Distance-Km')),
                             round(haversine_km(BERLIN, DCS['us-east'])))
        self.restart_backend(eu)
        self.wait_health('eu1', True)
        gwtest.wait_until(lambda: self.dc_of(DE) == 'eu-west', timeout=10,
                          message='back to eu-west')

    def test_residency_refuses_rather_than_violates(self):
        self.start_geo(STATICS, residency=' residency=EU')
        self.assertEqual(self.dc_of(DE), 'eu-west')
        self.assertEqual(self.dc_of(US), 'us-east')
        self.backends[1].kill()
        self.wait_health('eu1', False)
        r = self.geo_get(DE)
        self.assertStatus(r, 503)
        self.assertEqual(r.json()['error'], 'no_datacenter')
        self.assertTrue(r.json()['message'])
        self.assertIsNotNone(r.header('Retry-After'))
        # clients outside the region are not bound and still served
        self.assertEqual(self.dc_of(US), 'us-east')
        self.assertEqual(self.geo_get().status, 200)

    def test_geo_stats_and_metric(self):
        self.start_geo(STATICS)
        for _ in range(3):
            self.assertEqual(self.dc_of(DE), 'eu-west')
        for _ in range(2):
            self.assertEqual(self.dc_of(US), 'us-east')
        self.assertStatus(self.geo_get(), 200)

        def dc_requests(st):
            return sum(d['requests'] for d in st['datacenters'])
        # a worker counts a response right after its last byte went out: the client can
        # ask /geo/stats (on another worker) a moment before that
        st = gwtest.wait_until(lambda: (lambda s: s if dc_requests(s) >= 6 else None)(
            self.geo_stats()), 2, message='6 datacenter requests')
        self.assertEqual(st['countries'], {'DE': 3, 'US': 2})
        self.assertEqual(st['lookups'], {'total': 6, 'located': 5, 'unlocated': 1})
        dcs = {d['name']: d for d in st['datacenters']}
        self.assertEqual(set(dcs), set(DCS))
        self.assertEqual(dc_requests(st), 6)
        self.assertGreaterEqual(dcs['eu-west']['requests'], 3)
        self.assertEqual(dcs['eu-west']['lat'], 53.35)
        self.assertTrue(all(d['healthy'] for d in st['datacenters']))
        text = self.get('/metrics').text
        m = re.search(r'^gatewayd_geo_requests_total\{datacenter="eu-west",country="DE"\} (\d+)$',
                      text, re.M)
        self.assertIsNotNone(m, text[-2000:])
        self.assertEqual(int(m.group(1)), 3)
        self.assertRegex(text, r'(?m)^gatewayd_geo_requests_total\{datacenter="us-east",'
                               r'country="US"\} 2$')
        self.assertRegex(text, r'(?m)^gatewayd_geo_requests_total\{datacenter="[a-z-]+",'
                               r'country="unknown"\} 1$')

    def test_config_errors(self):
        rc, err, path = self.check_config('backend a 127.0.0.1:1 dc=x\n'
                                          'datacenter x lat=1 lon=2\n'
                                          'geo_default y\n')
        self.assertEqual(rc, 1)
        self.assertIn("%s:3: geo_default: 'y' is not a declared datacenter" % path, err)
        bogus = os.path.join(self.tmp, 'bogus.mmdb')
        with open(bogus, 'w') as f:
            f.write('not a database\n')
        rc, err, path = self.check_config('backend a 127.0.0.1:1\ngeo_db %s\n' % bogus)
        self.assertEqual(rc, 1)
        self.assertIn('%s:2: geo_db: cannot open MaxMind DB' % path, err)
        rc, err, path = self.check_config('backend a 127.0.0.1:1\n'
                                          'geo_static 203.0.113.0/24 country=Germany\n')
        self.assertEqual(rc, 1)
        self.assertIn('geo_static', err)


class TestGeoMaxMindDB(GeoCase):

    def setUp(self):
        if not have_mmdb_writer():
            self.skipTest('MaxMind::DB::Writer (libmaxmind-db-writer-perl) is not installed')

    def write_mmdb(self, path, *nets):
        self._gw_state()
        script = os.path.join(self.tmp, 'mkmmdb.pl')
        with open(script, 'w') as f:
            f.write(MMDB_WRITER)
        subprocess.run(['perl', script, path] + list(nets), check=True, timeout=60,
                       stdin=subprocess.DEVNULL)

    def test_mmdb_lookup_provider_order_and_reload(self):
        self._gw_state()
        db = os.path.join(self.tmp, 'city.mmdb')
        self.write_mmdb(db, '192.0.2.0/24,GB,51.51,-0.13', '2001:db8::/32,JP,35.68,139.65',
                        '198.51.100.0/24,FR,48.86,2.35', '203.0.113.0/24,NL')
        self.start_geo('geo_db %s\n'
                       'geo_static 198.51.100.0/24 country=US lat=40.71 lon=-74.00\n' % db)
        r = self.geo_get(SG)                          # London, from the MMDB
        self.assertEqual(r.header('X-Datacenter'), 'eu-west')
        self.assertEqual(r.header('X-Geo-Country'), 'GB')
        self.assertAlmostEqual(int(r.header('X-Geo-Distance-Km')),
                               haversine_km((51.51, -0.13), DCS['eu-west']), delta=2)
        r = self.geo_get('2001:db8::5')               # IPv6: Tokyo
        self.assertEqual(r.header('X-Datacenter'), 'ap-south')
        self.assertEqual(r.header('X-Geo-Country'), 'JP')
        # geo_static is asked first: the MMDB's France loses to the static New York
        r = self.geo_get(US)
        self.assertEqual(r.header('X-Datacenter'), 'us-east')
        self.assertEqual(r.header('X-Geo-Country'), 'US')
        # a Country record (no location): the country is known, the client is unlocated
        r = self.geo_get(DE)
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Geo-Country'), 'NL')
        self.assertIsNone(r.header('X-Geo-Distance-Km'))
        st = self.geo_stats()
        self.assertEqual(st['lookups']['located'], 4)
        self.assertEqual(st['countries'].get('GB'), 1)

        # a changed file is reopened on reload (SIGHUP)
        time.sleep(0.05)  # a distinct mtime even on coarse clocks
        self.write_mmdb(db, '192.0.2.0/24,SG,1.29,103.85')
        self.gateway.reload()
        gwtest.wait_until(lambda: self.geo_get(SG).header('X-Geo-Country') == 'SG',
                          timeout=10, message='the new MMDB after reload')
        self.assertEqual(self.dc_of(SG), 'ap-south')
        self.assertIsNone(self.geo_get('2001:db8::5').header('X-Geo-Country'))


class GeoProvider:
    """A local HTTP geolocation provider on loopback: GET /geo/<ip> answers from `answers`
    (a JSON object, an int status, or ('slow', seconds, object)), counting requests."""

    def __init__(self, answers):
        import http.server
        import threading

        provider = self
        self.answers = answers
        self.hits = {}
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                ip = self.path.rsplit('/', 1)[-1]
                with provider.lock:
                    provider.hits[ip] = provider.hits.get(ip, 0) + 1
                a = provider.answers.get(ip, 404)
                if isinstance(a, tuple):
                    time.sleep(a[1])
                    a = a[2]
                if isinstance(a, int):
                    self.send_response(a)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                body = json.dumps(a).encode()
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the gateway gave up (timeout)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((gwtest.HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, ip):
        with self.lock:
            return self.hits.get(ip, 0)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class TestGeoHTTP(GeoCase):

    def start_provider(self, opts='timeout=300ms'):
        p = GeoProvider({
            DE: {'status': 'success', 'countryCode': 'DE', 'lat': 52.52, 'lon': 13.40},
            '2001:db8::7': {'country_code': 'JP', 'latitude': 35.68, 'longitude': 139.65},
            '192.0.2.99': ('slow', 2.0, {'countryCode': 'SG', 'lat': 1.29, 'lon': 103.85}),
            '203.0.113.50': ('slow', 0.3, {'country': 'IE', 'loc': '53.35,-6.26'}),
            US: {'countryCode': 'FR', 'lat': 48.86, 'lon': 2.35},
        })
        self.addCleanup(p.stop)
        self.start_geo('geo_http http://127.0.0.1:%d/geo/{ip} %s\n'
                       'geo_static 198.51.100.0/24 country=US lat=40.71 lon=-74.00\n'
                       % (p.port, opts))
        return p

    def test_lookup_cached_and_negative(self):
        p = self.start_provider()
        r = self.geo_get(DE)
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Datacenter'), 'eu-west')
        self.assertEqual(r.header('X-Geo-Country'), 'DE')
        for _ in range(4):
            self.assertEqual(self.geo_get(DE).header('X-Geo-Country'), 'DE')
        self.assertEqual(p.count(DE), 1, 'answers are cached')
        r = self.geo_get('2001:db8::7')
        self.assertEqual(r.header('X-Datacenter'), 'ap-south')
        # unknown to the provider (404): unlocated, and cached as such
        for _ in range(3):
            r = self.geo_get('192.0.2.44')
            self.assertStatus(r, 200)
            self.assertIsNone(r.header('X-Geo-Country'))
        self.assertEqual(p.count('192.0.2.44'), 1, 'failures are cached too')
        # geo_static is asked first: the provider never hears of this client
        self.assertEqual(self.geo_get(US).header('X-Geo-Country'), 'US')
        self.assertEqual(p.count(US), 0)
        st = self.geo_stats()
        self.assertEqual(st['lookups']['located'], 7)
        self.assertEqual(st['lookups']['unlocated'], 3)

    def test_timeout_goes_on_unlocated(self):
        p = self.start_provider('timeout=300ms')
        t0 = time.monotonic()
        r = self.geo_get('192.0.2.99')
        took = time.monotonic() - t0
        self.assertStatus(r, 200)
        self.assertIsNone(r.header('X-Geo-Country'))
        self.assertLess(took, 1.5, 'the lookup timeout bounds the wait')
        self.assertEqual(p.count('192.0.2.99'), 1)
        # other clients were never held up meanwhile: the loop does not block
        self.assertEqual(self.dc_of(US), 'us-east')

    def test_concurrent_requests_share_a_lookup(self):
        import threading

        p = self.start_provider('timeout=2s')
        results = []

        def one():
            r = self.geo_get('203.0.113.50')
            results.append((r.status, r.header('X-Datacenter'), r.header('X-Geo-Country')))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(results, [(200, 'eu-west', 'IE')] * 6)
        # one lookup per worker thread at most (the daemon runs one per core)
        self.assertLessEqual(p.count('203.0.113.50'), os.cpu_count() or 2)
