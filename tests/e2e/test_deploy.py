"""Checks of the deployment files in deploy/ (no Docker engine or cluster needed).

No container is built or run here: the files are parsed and cross-checked against each
other and against gatewayd itself, so that a renamed port, probe path, environment
variable, image or metric breaks a test instead of a deployment.

- Dockerfile: multi-stage, Debian slim runtime, non-root USER, EXPOSE = the listen port,
  HEALTHCHECK on /health at that port, the files it copies exist, SIGTERM stop;
- deploy/gatewayd.conf and the Kubernetes ConfigMap's gatewayd.conf pass `gatewayd -t`
  (service host names resolved to 127.0.0.1 first: there is no cluster DNS here);
- compose.yaml: the gateways and mock backends run the image the Dockerfile builds, the
  config's backend/database/redis hosts are compose services, ports line up, secrets are
  the environment variables gatewayd reads, the grace period covers the 15 s drain;
- Kubernetes: every kind the deployment needs, probes on /ready and /health at the
  container port, Secret keys behind every secretKeyRef, selectors that match the pod
  labels, terminationGracePeriodSeconds >= the drain time;
- Prometheus scrapes /metrics of the compose gateways; the Grafana dashboard is valid
  JSON whose every metric exists in a real /metrics scrape of a gatewayd after traffic.

YAML is read with PyYAML (Debian python3-yaml, installed by .ci/run), through
/usr/bin/python3 when the interpreter running the tests lacks it; without it the YAML
checks skip.
"""

import json
import os
import re
import shutil
import subprocess
import unittest

import gwtest

DEPLOY = os.path.join(gwtest.REPO, 'deploy')
DRAIN_SECONDS = 15  # GATEWAYD_DRAIN_MS in gatewayd/gatewayd.c
SECRET_ENV = ('JWT_SECRET_KEY', 'GATEWAYD_ADMIN_TOKEN')
METRIC_RE = re.compile(r'\b((?:gatewayd|process)_[a-z0-9_]+)\b')


def read(*parts):
    with open(os.path.join(DEPLOY, *parts)) as f:
        return f.read()


def load_yaml_all(path):
    """Every document of a YAML file, or SkipTest when no YAML parser is installed."""
    try:
        import yaml
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except ImportError:
        pass
    if not os.access('/usr/bin/python3', os.X_OK):
        raise unittest.SkipTest('no YAML parser (Debian package python3-yaml)')
    code = ('import json, sys, yaml\n'
            'print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1]))'
            ' if d is not None]))')
    cp = subprocess.run(['/usr/bin/python3', '-c', code, path], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=30)
    if cp.returncode != 0:
        if b'No module named' in cp.stderr:
            raise unittest.SkipTest('no YAML parser (Debian package python3-yaml)')
        raise AssertionError('%s: %s' % (path, cp.stderr.decode(errors='replace')))
    return json.loads(cp.stdout)


def load_yaml(*parts):
    docs = load_yaml_all(os.path.join(DEPLOY, *parts))
    assert len(docs) == 1, '%s: %d documents' % ('/'.join(parts), len(docs))
    return docs[0]


def dockerfile_instructions(text):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, cur = [], ''
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith('#')):
            continue
        if s.endswith('\\'):
            cur += s[:-1] + ' '
            continue
        cur += s
        word, _, rest = cur.partition(' ')
        out.append((word.upper(), rest.strip()))
        cur = ''
    return out


def listen_port(conf_text):
    m = re.search(r'^\s*listen\s+\S*:(\d+)', conf_text, re.M)
    assert m, 'no listen line'
    return int(m.group(1))


def config_hosts(conf_text):
    """{directive: [host, ...]} of the backend, database and redis lines."""
    hosts = {'backend': [], 'database': [], 'redis': []}
    for m in re.finditer(r'^\s*backend\s+\S+\s+([^:\s]+):(\d+)', conf_text, re.M):
        hosts['backend'].append((m.group(1), int(m.group(2))))
    for d in ('database', 'redis'):
        m = re.search(r'^\s*%s\s+\w+://(?:[^@/\s]*@)?([^:/\s]+)' % d, conf_text, re.M)
        if m:
            hosts[d].append(m.group(1))
    return hosts


def gatewayd_env_names():
    """The environment variables gatewayd's sources read with getenv."""
    names = set()
    src = os.path.join(gwtest.REPO, 'gatewayd')
    for f in os.listdir(src):
        if f.endswith('.c'):
            with open(os.path.join(src, f), errors='replace') as fh:
                names.update(re.findall(r'getenv\("([A-Z0-9_]+)"\)', fh.read()))
    return names


class ConfigCheck(gwtest.GatewayTestCase):
    """`gatewayd -t` on a deployment config, its service names resolved to loopback."""

    def assertConfigValid(self, text, hosts):
        for h in hosts:
            text = re.sub(r'(?<=[\s/@])%s(?=:\d)' % re.escape(h), '127.0.0.1', text)
        rc, err, path = self.check_config(text)
        self.assertEqual(rc, 0, 'gatewayd -t: %s\n%s' % (err, text))


class DockerfileTest(ConfigCheck):

    def setUp(self):
        self.text = read('Dockerfile')
        self.ins = dockerfile_instructions(self.text)
        self.conf = read('gatewayd.conf')

    def final_stage(self):
        last = max(i for i, (k, _) in enumerate(self.ins) if k == 'FROM')
        return self.ins[last:]

    def test_multi_stage_slim_non_root(self):
        froms = [a for k, a in self.ins if k == 'FROM']
        self.assertGreaterEqual(len(froms), 2, froms)
        self.assertRegex(froms[0], r'\s+AS\s+build$')
        self.assertRegex(froms[-1], r'^debian:[\w.]+-slim$')
        final = self.final_stage()
        users = [a for k, a in final if k == 'USER']
        self.assertTrue(users, 'the runtime stage sets no USER')
        self.assertNotIn(users[-1].split(':')[0], ('root', '0'))
        useradd = ' '.join(a for k, a in final if k == 'RUN')
        self.assertIn('useradd', useradd)
        self.assertIn(users[-1].split(':')[0], useradd)
        self.assertEqual([a for k, a in final if k == 'STOPSIGNAL'], ['SIGTERM'])
        # the runtime has no compiler: only the build stage installs -dev packages
        self.assertNotIn('-dev', useradd)

    def test_expose_and_healthcheck_match_the_config(self):
        port = listen_port(self.conf)
        self.assertEqual(port, 8080, 'SPEC section 2 listens on 8080')
        self.assertEqual([a for k, a in self.ins if k == 'EXPOSE'], [str(port)])
        hc = [a for k, a in self.ins if k == 'HEALTHCHECK']
        self.assertEqual(len(hc), 1, hc)
        m = re.search(r'http://127\.0\.0\.1:(\d+)(/\S*)', hc[0])
        self.assertTrue(m, hc[0])
        self.assertEqual(int(m.group(1)), port)
        self.assertEqual(m.group(2), '/health')
        # curl is installed in the runtime stage for it
        self.assertIn(' curl ', ' '.join(a for k, a in self.final_stage() if k == 'RUN'))

    def test_copied_files_exist_and_entrypoint_is_built(self):
        built = []
        for k, a in self.ins:
            if k != 'COPY':
                continue
            args = a.split()
            if args[0].startswith('--from='):
                built += [os.path.basename(p) for p in args[1:-1]]
            elif args[:2] != ['.', '.']:
                for src in args[:-1]:
                    self.assertTrue(os.path.exists(os.path.join(gwtest.REPO, src)), src)
        self.assertIn('gatewayd', built)
        self.assertIn('mockbackend', built)
        ep = json.loads([a for k, a in self.ins if k == 'ENTRYPOINT'][-1])
        self.assertEqual(ep[0], 'gatewayd')
        self.assertIn('-f', ep, 'a container needs gatewayd in the foreground')
        cmd = json.loads([a for k, a in self.ins if k == 'CMD'][-1])
        self.assertIn('/etc/gatewayd/gatewayd.conf', cmd)
        self.assertIn('COPY deploy/gatewayd.conf /etc/gatewayd/gatewayd.conf', self.text)
        # the build stage builds with the repository's Makefile
        self.assertTrue(any(k == 'RUN' and 'make ' in a and 'bin/gatewayd' in a
                            for k, a in self.ins))
        self.assertTrue(os.path.exists(os.path.join(DEPLOY, 'Dockerfile.dockerignore')))

    def test_runtime_installs_every_library_gatewayd_links(self):
        """Each DT_NEEDED library of bin/gatewayd comes from a package the runtime installs."""
        if not (os.access(gwtest.GATEWAYD, os.X_OK) and shutil.which('readelf')
                and shutil.which('dpkg-query') and shutil.which('ldd')):
            self.skipTest('needs bin/gatewayd, readelf, ldd and dpkg')
        needed = re.findall(r'\(NEEDED\).*\[(.+)\]', subprocess.run(
            ['readelf', '-d', gwtest.GATEWAYD], stdout=subprocess.PIPE, timeout=30
        ).stdout.decode())
        paths = dict(re.findall(r'^\s*(\S+) => (\S+)', subprocess.run(
            ['ldd', gwtest.GATEWAYD], stdout=subprocess.PIPE, timeout=30
        ).stdout.decode(), re.M))
        runtime = ' '.join(a for k, a in self.final_stage() if k == 'RUN').split()
        for soname in needed:
            path = os.path.realpath(paths[soname])
            cp = subprocess.run(['dpkg-query', '-S', path], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, timeout=30)
            if cp.returncode != 0:  # /lib vs /usr/lib (merged /usr): try the other spelling
                alt = path[4:] if path.startswith('/usr/') else '/usr' + path
                cp = subprocess.run(['dpkg-query', '-S', alt], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, timeout=30)
            self.assertEqual(cp.returncode, 0, 'no package owns %s' % path)
            pkg = cp.stdout.decode().split(':')[0]
            if pkg in ('libc6', 'libgcc-s1'):
                continue  # in every Debian image
            self.assertIn(pkg, runtime, '%s (%s) is not installed in the runtime stage' % (
                soname, pkg))

    def test_container_config_is_valid(self):
        hosts = config_hosts(self.conf)
        self.assertConfigValid(self.conf, [h for h, _ in hosts['backend']] +
                               hosts['database'] + hosts['redis'])
        self.assertTrue(hosts['database'] and hosts['redis'], hosts)
        self.assertIn('postgresql://', self.conf)
        # secrets belong in the environment: no password in the database URL
        self.assertRegex(self.conf, r'postgresql://[^:@/\s]+@')


class ComposeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.c = load_yaml('compose.yaml')
        cls.services = cls.c['services']
        cls.conf = read('gatewayd.conf')

    def gateways(self):
        return {n: s for n, s in self.services.items() if n.startswith('gatewayd')}

    def test_services(self):
        self.assertEqual(len(self.gateways()), 2, list(self.services))
        for name in ('redis', 'postgres', 'prometheus', 'grafana'):
            self.assertIn(name, self.services)
        mocks = [n for n, s in self.services.items()
                 if 'mockbackend' in json.dumps(s.get('entrypoint', ''))]
        self.assertEqual(len(mocks), 3, mocks)

    def test_gateways_use_the_image_the_dockerfile_builds(self):
        images = set()
        for name, s in self.gateways().items():
            b = s['build']
            self.assertEqual(os.path.normpath(os.path.join(DEPLOY, b['context'])), gwtest.REPO)
            self.assertTrue(os.path.exists(os.path.join(gwtest.REPO, b['dockerfile'])))
            self.assertEqual(os.path.normpath(os.path.join(gwtest.REPO, b['dockerfile'])),
                             os.path.join(DEPLOY, 'Dockerfile'))
            images.add(s['image'])
        self.assertEqual(len(images), 1, images)
        for name, s in self.services.items():
            if 'mockbackend' in json.dumps(s.get('entrypoint', '')):
                self.assertIn(s['image'], images, name)

    def test_config_hosts_are_services_and_ports_line_up(self):
        hosts = config_hosts(self.conf)
        for host, port in hosts['backend']:
            self.assertIn(host, self.services, 'backend host %s is no compose service' % host)
            cmd = self.services[host].get('command', [])
            self.assertIn(str(port), cmd, '%s does not listen on %d: %r' % (host, port, cmd))
            self.assertIn('0.0.0.0', self.services[host]['entrypoint'])
        for host in hosts['database'] + hosts['redis']:
            self.assertIn(host, self.services)
        pg = self.services['postgres']['environment']
        m = re.search(r'postgresql://(\w+)@postgres:(\d+)/(\w+)', self.conf)
        self.assertEqual((m.group(1), m.group(3)), (pg['POSTGRES_USER'], pg['POSTGRES_DB']))
        port = listen_port(self.conf)
        for name, s in self.gateways().items():
            published = [p.split(':')[-1] for p in s['ports']]
            self.assertEqual(published, [str(port)], name)

    def test_gateway_environment_and_grace(self):
        read_by_gatewayd = gatewayd_env_names()
        for name in SECRET_ENV:
            self.assertIn(name, read_by_gatewayd, '%s is not read by gatewayd' % name)
        for name, s in self.gateways().items():
            env = s['environment']
            for var in SECRET_ENV:
                self.assertIn(var, env, name)
            self.assertIn('PGPASSWORD', env, 'libpq reads the database password from it')
            self.assertEqual(env['PGPASSWORD'].split(':-')[-1].rstrip('}'),
                             self.services['postgres']['environment']['POSTGRES_PASSWORD']
                             .split(':-')[-1].rstrip('}'))
            grace = s['stop_grace_period']
            self.assertRegex(grace, r'^\d+s$')
            self.assertGreaterEqual(int(grace[:-1]), DRAIN_SECONDS)
            conf_mount = [v for v in s['volumes'] if v.endswith(':/etc/gatewayd/gatewayd.conf:ro')]
            self.assertEqual(len(conf_mount), 1, s['volumes'])

    def test_mounted_files_exist(self):
        for name, s in self.services.items():
            for v in s.get('volumes', []):
                src = v.split(':')[0]
                if src.startswith('.'):
                    self.assertTrue(os.path.exists(os.path.join(DEPLOY, src)), '%s: %s' % (
                        name, src))


class KubernetesTest(ConfigCheck):

    def setUp(self):
        k = os.path.join(DEPLOY, 'k8s')
        kust = load_yaml('k8s', 'kustomization.yaml')
        self.docs = []
        for f in kust['resources']:
            self.docs += load_yaml_all(os.path.join(k, f))
        listed = set(kust['resources'])
        on_disk = {f for f in os.listdir(k) if f.endswith('.yaml')} - {'kustomization.yaml'}
        self.assertEqual(listed, on_disk, 'kustomization.yaml and the directory differ')
        self.kinds = {}
        for d in self.docs:
            self.kinds.setdefault(d['kind'], []).append(d)

    def one(self, kind):
        self.assertIn(kind, self.kinds, sorted(self.kinds))
        self.assertEqual(len(self.kinds[kind]), 1, kind)
        return self.kinds[kind][0]

    def container(self):
        return self.one('Deployment')['spec']['template']['spec']['containers'][0]

    def test_kinds(self):
        for kind in ('Deployment', 'Service', 'ConfigMap', 'Secret', 'HorizontalPodAutoscaler',
                     'PodDisruptionBudget'):
            self.one(kind)

    def test_probes(self):
        c = self.container()
        ports = {p['name']: p['containerPort'] for p in c['ports']}
        conf = self.one('ConfigMap')['data']['gatewayd.conf']
        self.assertEqual(list(ports.values()), [listen_port(conf)])
        self.assertEqual(c['readinessProbe']['httpGet']['path'], '/ready')
        self.assertEqual(c['livenessProbe']['httpGet']['path'], '/health')
        for probe in ('readinessProbe', 'livenessProbe'):
            port = c[probe]['httpGet']['port']
            self.assertEqual(ports.get(port, port), listen_port(conf), probe)

    def test_secrets_and_env(self):
        c = self.container()
        secret = self.one('Secret')
        keys = set(secret.get('stringData', {})) | set(secret.get('data', {}))
        env = {e['name']: e for e in c['env']}
        for name in SECRET_ENV:
            self.assertIn(name, env)
        for name, e in env.items():
            ref = e.get('valueFrom', {}).get('secretKeyRef')
            if ref:
                self.assertEqual(ref['name'], secret['metadata']['name'], name)
                self.assertIn(ref['key'], keys, name)
        self.assertTrue(set(SECRET_ENV) <= gatewayd_env_names())

    def test_graceful_termination(self):
        spec = self.one('Deployment')['spec']['template']['spec']
        pre = self.container().get('lifecycle', {}).get('preStop', {}).get('exec', {})
        sleep = int(pre['command'][1]) if pre.get('command', [''])[0] == 'sleep' else 0
        self.assertGreaterEqual(spec['terminationGracePeriodSeconds'], DRAIN_SECONDS + sleep)
        self.assertEqual(spec['securityContext']['runAsNonRoot'], True)

    def test_references(self):
        dep = self.one('Deployment')
        labels = dep['spec']['template']['metadata']['labels']
        for kind in ('Service', 'PodDisruptionBudget'):
            obj = self.one(kind)
            sel = obj['spec']['selector']
            sel = sel.get('matchLabels', sel)
            self.assertTrue(sel and all(labels.get(k) == v for k, v in sel.items()), kind)
        self.assertEqual(dep['spec']['selector']['matchLabels'], labels)
        hpa = self.one('HorizontalPodAutoscaler')['spec']
        self.assertEqual((hpa['scaleTargetRef']['kind'], hpa['scaleTargetRef']['name']),
                         ('Deployment', dep['metadata']['name']))
        self.assertGreaterEqual(hpa['minReplicas'], 2)
        svc = self.one('Service')['spec']['ports'][0]
        self.assertIn(svc['targetPort'], [p['name'] for p in self.container()['ports']])
        vols = {v['name']: v for v in dep['spec']['template']['spec']['volumes']}
        mounts = {m['name']: m['mountPath'] for m in self.container()['volumeMounts']}
        cm = self.one('ConfigMap')
        cfg_vol = [n for n, v in vols.items() if 'configMap' in v]
        self.assertEqual(len(cfg_vol), 1)
        self.assertEqual(vols[cfg_vol[0]]['configMap']['name'], cm['metadata']['name'])
        args = self.container()['args']
        conf_path = args[args.index('-c') + 1]
        self.assertEqual(os.path.dirname(conf_path), mounts[cfg_vol[0]])
        self.assertIn(os.path.basename(conf_path), cm['data'])
        self.assertEqual(self.container()['image'].split(':')[0], 'gatewayd')

    def test_configmap_config_is_valid(self):
        conf = self.one('ConfigMap')['data']['gatewayd.conf']
        hosts = config_hosts(conf)
        self.assertConfigValid(conf, [h for h, _ in hosts['backend']] + hosts['database'] +
                               hosts['redis'])


class MonitoringTest(gwtest.GatewayTestCase):
    timeout = 60

    def dashboard_metrics(self):
        dash = json.loads(read('grafana', 'gatewayd.json'))
        exprs = [t['expr'] for p in dash['panels'] for t in p.get('targets', [])]
        self.assertGreaterEqual(len(exprs), 12, 'too few panels')
        names = set()
        for e in exprs:
            names.update(METRIC_RE.findall(e))
        return dash, exprs, names

    def test_prometheus_scrapes_the_gateways(self):
        prom = load_yaml('prometheus', 'prometheus.yml')
        compose = load_yaml('compose.yaml')
        jobs = [j for j in prom['scrape_configs'] if j['job_name'] == 'gatewayd']
        self.assertEqual(len(jobs), 1)
        self.assertEqual(jobs[0].get('metrics_path', '/metrics'), '/metrics')
        targets = [t for sc in jobs[0]['static_configs'] for t in sc['targets']]
        port = listen_port(read('gatewayd.conf'))
        gateways = {n for n in compose['services'] if n.startswith('gatewayd')}
        self.assertEqual({t.split(':')[0] for t in targets}, gateways)
        self.assertEqual({int(t.split(':')[1]) for t in targets}, {port})
        mount = [v for v in compose['services']['prometheus']['volumes']
                 if v.startswith('./prometheus/prometheus.yml:')]
        self.assertEqual(len(mount), 1)
        if shutil.which('promtool'):
            cp = subprocess.run(['promtool', 'check', 'config', os.path.join(
                DEPLOY, 'prometheus', 'prometheus.yml')], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(cp.returncode, 0, cp.stdout.decode(errors='replace'))

    def test_dashboard_covers_section_8(self):
        dash, exprs, names = self.dashboard_metrics()
        for m in ('gatewayd_requests_total', 'gatewayd_request_duration_seconds_bucket',
                  'gatewayd_backend_up', 'gatewayd_backend_active_connections',
                  'gatewayd_circuit_state', 'gatewayd_ratelimit_decisions_total',
                  'gatewayd_cache_requests_total', 'gatewayd_queue_depth',
                  'gatewayd_jwt_verifications_total', 'gatewayd_geo_requests_total',
                  'process_resident_memory_bytes', 'process_open_fds'):
            self.assertIn(m, names)
        self.assertTrue(any(e.startswith('histogram_quantile(') for e in exprs))
        ds = load_yaml('grafana', 'provisioning', 'datasources', 'prometheus.yml')
        uids = {d['uid'] for d in ds['datasources']}
        var = [v for v in dash['templating']['list'] if v['type'] == 'datasource'][0]
        self.assertIn(var['current']['value'], uids)
        prov = load_yaml('grafana', 'provisioning', 'dashboards', 'gatewayd.yml')
        compose = load_yaml('compose.yaml')
        mounts = dict(v.split(':')[:2] for v in compose['services']['grafana']['volumes'])
        self.assertEqual(os.path.dirname(mounts['./grafana/gatewayd.json']),
                         prov['providers'][0]['options']['path'])

    def test_dashboard_metrics_exist_in_a_real_scrape(self):
        _, _, names = self.dashboard_metrics()
        self.start_backends(2)
        self.start_gateway('''
            backend b1 127.0.0.1:{b1} dc=us-east
            backend b2 127.0.0.1:{b2} dc=eu-west
            datacenter us-east lat=39.04 lon=-77.49
            datacenter eu-west lat=53.35 lon=-6.26
            cache ttl=30s max_memory=8mb
            route /api/ auth=jwt
            route / auth=none cache=on
        ''')
        token = gwtest.access_token()
        for i in range(10):
            self.assertEqual(self.get('/x').status, 200)
            self.get('/api/y', {'Authorization': 'Bearer ' + token})
        self.get('/api/y', {'Authorization': 'Bearer not-a-token'})
        r = self.get('/metrics')
        self.assertEqual(r.status, 200)
        samples = set()
        for line in r.text.splitlines():
            if line and not line.startswith('#'):
                samples.add(re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line).group(0))
        missing = sorted(n for n in names if n not in samples)
        self.assertEqual(missing, [], 'dashboard metrics missing from /metrics')
