"""xapitest.py — the harness shared by the integration tests in this folder.

Every tests/integration/test_*.py imports it to:

- start `xapi --backend sim` in a temporary state directory on loopback
  (port 0; the ports, the Unix socket and the host uuid are read from the
  daemon's "xapi ready" line), stop it with SIGTERM, kill it with SIGKILL,
  restart it on the same state directory, and check its log (stderr, kept
  in a file) for AddressSanitizer/UBSan/LeakSanitizer reports;
- talk to it: XML-RPC with Python's xmlrpc.client over TCP, over the Unix
  socket (a custom transport) and over HTTPS (unverified context); raw
  HTTP requests and JSON-RPC 1.0/2.0 with http.client;
- report TAP lines ("ok - name", "not ok - name", "ok - name # SKIP why"),
  one per behaviour, and exit non-zero when one failed.

The runner (tests/run-tests.sh) sets XAPI_BUILD_DIR (the build directory,
whose xapi/xapi is the daemon) and XAPI_TOP (the source tree, whose idl/
gives the datamodel).  Python standard library only.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xmlrpc.client

TOP = os.environ.get('XAPI_TOP') or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get('XAPI_BUILD_DIR') or os.path.join(TOP, 'build-asan')
XAPI = os.path.join(BUILD, 'xapi', 'xapi')
IDL_DIR = os.path.join(TOP, 'idl')

# The same sanitizer settings as tests/run-tests.sh, for runs by hand.
os.environ.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0')
os.environ.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1:halt_on_error=1')

SANITIZER_PATTERNS = ('ERROR: AddressSanitizer', 'runtime error:',
                      'ERROR: LeakSanitizer')


def load_idl():
    """The datamodel of the tree under test (idl/idl.py)."""
    if IDL_DIR not in sys.path:
        sys.path.insert(0, IDL_DIR)
    import idl
    return idl.load(IDL_DIR)


# ---- TAP reporting ----

class Skip(Exception):
    """Raised by a test to report itself skipped, with the reason."""


class Tap:
    def __init__(self):
        self.failed = 0
        self.passed = 0
        self.skipped = 0
        self.lock = threading.Lock()

    @staticmethod
    def _clean(name):
        return ' '.join(str(name).split()).replace('#', '')

    def _detail(self, detail):
        if detail:
            for line in str(detail).rstrip('\n').split('\n')[:80]:
                print('#   ' + line)

    def check(self, name, cond, detail=''):
        """Reports one behaviour; detail is printed (as TAP comments) when
        it failed.  Returns cond."""
        with self.lock:
            if cond:
                self.passed += 1
                print('ok - %s' % self._clean(name))
            else:
                self.failed += 1
                print('not ok - %s' % self._clean(name))
                self._detail(detail)
            sys.stdout.flush()
        return bool(cond)

    def skip(self, name, reason):
        with self.lock:
            self.skipped += 1
            print('ok - %s # SKIP %s' % (self._clean(name),
                                         ' '.join(str(reason).split())))
            sys.stdout.flush()

    def run(self, name, fn, *args, **kwargs):
        """Runs fn; it passes if it returns without raising.  An
        AssertionError (or any exception) makes it fail with the message,
        Skip makes it skip."""
        try:
            fn(*args, **kwargs)
        except Skip as e:
            self.skip(name, str(e))
            return False
        except AssertionError as e:
            return self.check(name, False, str(e) or traceback.format_exc())
        except XenAPIError as e:
            where = traceback.extract_tb(e.__traceback__)
            here = [f for f in where if not f.filename.endswith('xapitest.py')]
            f = (here or where)[-1]
            return self.check(name, False, 'unexpected XenAPI error %r\nat '
                              '%s:%d: %s' % (e.details,
                                             os.path.basename(f.filename),
                                             f.lineno, f.line))
        except Exception:
            return self.check(name, False, traceback.format_exc())
        return self.check(name, True)

    def test(self, name):
        """Decorator: runs the function at once as the test `name`."""
        def wrap(fn):
            self.run(name, fn)
            return fn
        return wrap

    def finish(self):
        print('# %d passed, %d failed, %d skipped'
              % (self.passed, self.failed, self.skipped))
        sys.stdout.flush()
        sys.exit(1 if self.failed else 0)


tap = Tap()
check = tap.check


# ---- XenAPI calls ----

class XenAPIError(Exception):
    """A XenAPI failure: details is [CODE, param, ...]."""

    def __init__(self, details):
        Exception.__init__(self, details)
        self.details = list(details)
        self.code = self.details[0] if self.details else None


def unwrap(method, r):
    if not isinstance(r, dict) or 'Status' not in r:
        raise AssertionError('%s: not a XenAPI result struct: %r' % (method, r))
    if r['Status'] == 'Success':
        if set(r) != {'Status', 'Value'}:
            raise AssertionError('%s: success struct has members %r'
                                 % (method, sorted(r)))
        return r['Value']
    if r['Status'] == 'Failure':
        if set(r) != {'Status', 'ErrorDescription'}:
            raise AssertionError('%s: failure struct has members %r'
                                 % (method, sorted(r)))
        raise XenAPIError(r['ErrorDescription'])
    raise AssertionError('%s: bad Status %r' % (method, r['Status']))


class _Method:
    def __init__(self, client, name):
        self._client, self._name = client, name

    def __getattr__(self, name):
        return _Method(self._client, '%s.%s' % (self._name, name))

    def __call__(self, *args):
        return self._client.call(self._name, *args)


class Client:
    """A XenAPI client over an xmlrpc.client.ServerProxy: c.VM.get_all(s)
    returns the Value or raises XenAPIError."""

    def __init__(self, proxy):
        self.proxy = proxy

    def call(self, method, *args):
        return unwrap(method, getattr(self.proxy, method)(*args))

    def __getattr__(self, name):
        if name.startswith('_'):
            raise AttributeError(name)
        return _Method(self, name)


def expect_error(fn, code, params=None, what=''):
    """Calls fn(); it must fail with code (and exactly params if given).
    Returns the error details."""
    try:
        r = fn()
    except XenAPIError as e:
        if e.code != code:
            raise AssertionError('%sexpected %s, got error %r'
                                 % (what and what + ': ', code, e.details))
        if params is not None and e.details[1:] != list(params):
            raise AssertionError('%sexpected %r, got %r'
                                 % (what and what + ': ', [code] + list(params),
                                    e.details))
        return e.details
    raise AssertionError('%sexpected %s, got success %r'
                         % (what and what + ': ', code, r))


class TimeoutTransport(xmlrpc.client.Transport):
    """HTTP transport with a socket timeout (keep-alive, as the default)."""

    def __init__(self, timeout=30, **kw):
        xmlrpc.client.Transport.__init__(self, **kw)
        self.timeout = timeout

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        self._connection = host, http.client.HTTPConnection(
            chost, timeout=self.timeout)
        return self._connection[1]


class TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout=30, context=None, **kw):
        xmlrpc.client.SafeTransport.__init__(self, context=context, **kw)
        self.timeout = timeout

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        self._connection = host, http.client.HTTPSConnection(
            chost, timeout=self.timeout, context=self.context)
        return self._connection[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket."""

    def __init__(self, path, timeout=30):
        http.client.HTTPConnection.__init__(self, 'localhost', timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path, timeout=30):
        xmlrpc.client.Transport.__init__(self)
        self.unix_path, self.timeout = path, timeout

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, UnixHTTPConnection(self.unix_path,
                                                    self.timeout)
        return self._connection[1]


def unverified_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---- raw HTTP ----

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # lower-case name -> value
        self.body = body

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return '<HTTP %s %r>' % (self.status, self.body[:300])


def http_request(conn, method, path, body=None, headers=None):
    """One request on an http.client connection (kept open)."""
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)


def xmlrpc_body(method, *params):
    return xmlrpc.client.dumps(tuple(params), methodname=method,
                               encoding='utf-8').encode('utf-8')


def parse_xmlrpc_response(body):
    """Decodes an XML-RPC response body with xmlrpc.client."""
    p, u = xmlrpc.client.getparser()
    p.feed(body)
    p.close()
    return u.close()[0]


# ---- the daemon ----

class DaemonError(Exception):
    pass


class Daemon:
    """One xapi process (and its restarts) on one temporary state dir."""

    def __init__(self, tls=True, extra_args=(), password='it-root-pw',
                 unix_path=None):
        self.tmp = tempfile.mkdtemp(prefix='xapi-it.')
        self.state_dir = os.path.join(self.tmp, 'state')
        self.password = password
        self.pwfile = os.path.join(self.tmp, 'root-password')
        with open(self.pwfile, 'w') as f:
            f.write(password + '\n')
        self.log_path = os.path.join(self.tmp, 'xapi.log')
        self.out_path = os.path.join(self.tmp, 'xapi.out')
        self.tls = tls
        self.extra_args = list(extra_args)
        self.unix_arg = unix_path
        self.proc = None
        self.http_port = self.https_port = None
        self.unix_path = self.host_uuid = None
        self.ready_line = None
        self.starts = 0

    # lifecycle

    def command(self):
        args = [XAPI, '--state-dir', self.state_dir,
                '--listen', '127.0.0.1:0', '--backend', 'sim',
                '--root-password-file', self.pwfile]
        if self.tls:
            args += ['--listen-tls', '127.0.0.1:0']
        if self.unix_arg:
            args += ['--unix', self.unix_arg]
        return args + self.extra_args

    def start(self, timeout=30):
        if not os.access(XAPI, os.X_OK):
            raise DaemonError('no daemon at %s (set XAPI_BUILD_DIR)' % XAPI)
        if os.path.exists(self.out_path):
            os.unlink(self.out_path)
        with open(self.log_path, 'ab') as log, open(self.out_path, 'wb') as out:
            log.write(('---- start %d: %s\n' % (self.starts, ' '.join(
                self.command()))).encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=log,
                                         close_fds=True)
        self.starts += 1
        deadline = time.time() + timeout
        while True:
            with open(self.out_path, 'rb') as f:
                text = f.read().decode('utf-8', 'replace')
            # complete lines only: the last piece may still be written
            line = next((l for l in text.split('\n')[:-1]
                         if l.startswith('xapi ready')), None)
            if line:
                break
            if self.proc.poll() is not None:
                raise DaemonError('xapi exited with status %s before it was '
                                  'ready; log:\n%s' % (self.proc.returncode,
                                                       self.log_tail()))
            if time.time() > deadline:
                self.kill()
                raise DaemonError('xapi not ready after %ds; log:\n%s'
                                  % (timeout, self.log_tail()))
            time.sleep(0.02)
        self.ready_line = line
        info = dict(kv.split('=', 1) for kv in line.split(':', 1)[1].split()
                    if '=' in kv)
        self.http_port = int(info['http'].rsplit(':', 1)[1])
        self.https_port = (int(info['https'].rsplit(':', 1)[1])
                           if 'https' in info else None)
        self.unix_path = info.get('unix')
        self.host_uuid = info.get('host')
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status (None if it had to be
        killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                return None
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self):
        """SIGKILL, as a power cut."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, timeout=30):
        self.stop()
        return self.start(timeout)

    def cleanup(self):
        self.kill()
        if os.environ.get('XAPI_TEST_KEEP'):
            print('# kept %s' % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # logs

    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def log_tail(self, n=40):
        return '\n'.join(self.log_text().split('\n')[-n:])

    def sanitizer_reports(self):
        """The log's sanitizer reports (each with some following lines)."""
        lines = self.log_text().split('\n')
        out = []
        for i, l in enumerate(lines):
            if any(p in l for p in SANITIZER_PATTERNS):
                out.append('\n'.join(lines[i:i + 12]))
        return out

    # clients

    @property
    def url(self):
        return 'http://127.0.0.1:%d/' % self.http_port

    def proxy(self, timeout=30, **kw):
        return xmlrpc.client.ServerProxy(self.url,
                                         transport=TimeoutTransport(timeout),
                                         **kw)

    def client(self, timeout=30):
        return Client(self.proxy(timeout))

    def unix_client(self, timeout=30):
        return Client(xmlrpc.client.ServerProxy(
            'http://localhost/', transport=UnixTransport(self.unix_path,
                                                         timeout)))

    def https_client(self, timeout=30, context=None):
        ctx = context or unverified_context()
        return Client(xmlrpc.client.ServerProxy(
            'https://127.0.0.1:%d/' % self.https_port,
            transport=TimeoutSafeTransport(timeout, context=ctx)))

    def login(self, client=None, user='root', password=None, *extra):
        c = client or self.client()
        return c.session.login_with_password(
            user, self.password if password is None else password, *extra)

    def conn(self, timeout=30):
        return http.client.HTTPConnection('127.0.0.1', self.http_port,
                                          timeout=timeout)

    def post(self, path, body, headers=None, timeout=30):
        c = self.conn(timeout)
        try:
            return http_request(c, 'POST', path, body, headers)
        finally:
            c.close()

    def raw_xmlrpc(self, body, path='/'):
        if isinstance(body, str):
            body = body.encode('utf-8')
        return self.post(path, body, {'Content-Type': 'text/xml'})

    def jsonrpc(self, method, params, version=2, id=1, path='/jsonrpc',
                conn=None):
        req = {'method': method, 'params': params, 'id': id}
        if version == 2:
            req['jsonrpc'] = '2.0'
        body = json.dumps(req).encode()
        hdrs = {'Content-Type': 'application/json'}
        if conn is not None:
            return http_request(conn, 'POST', path, body, hdrs)
        return self.post(path, body, hdrs)

    def alive(self):
        """The process runs and answers an unauthenticated call."""
        if not self.running():
            return False
        try:
            r = self.post('/', xmlrpc_body('session.get_uuid', 'OpaqueRef:x'),
                          {'Content-Type': 'text/xml'}, timeout=10)
            return r.status == 200
        except OSError:
            return False


def finish_daemon(d, label='xapi'):
    """Stops the daemon with SIGTERM and reports that it exited cleanly and
    that its log has no sanitizer report."""
    started = d.proc is not None       # not stopped or killed by a test
    crashed = started and not d.running()
    rc = d.stop()
    if started:
        check('test_%s_exits_cleanly_on_sigterm' % label, rc == 0
              and not crashed, '%s exit status %r; log tail:\n%s'
              % ('it had died before the end:' if crashed else '', rc,
                 d.log_tail()))
    reports = d.sanitizer_reports()
    check('test_%s_log_has_no_sanitizer_report' % label, not reports,
          '\n----\n'.join(reports[:5]))


def start_or_bail(d, label='xapi'):
    """Starts the daemon; on failure reports it and exits."""
    try:
        d.start()
    except DaemonError as e:
        check('test_%s_starts' % label, False, str(e))
        d.cleanup()
        tap.finish()
    return d


# ---- values from the datamodel ----

DUMMY_DATETIME = '20240101T00:00:00Z'


def dummy_value(model, t, string='dummy'):
    """A type-correct XML-RPC value for an IDL type (ints as decimal
    strings, as XenAPI sends them; refs as OpaqueRef:NULL)."""
    k = t.kind
    if k == 'string' or k == 'any' or k == 'void':
        return string
    if k == 'int':
        return '0'
    if k == 'float':
        return 0.0
    if k == 'bool':
        return False
    if k == 'datetime':
        return xmlrpc.client.DateTime(DUMMY_DATETIME)
    if k == 'enum':
        return model.enums[t.name].values[0][0]
    if k == 'ref':
        return 'OpaqueRef:NULL'
    if k == 'set':
        return []
    if k == 'map':
        return {}
    if k == 'record':
        return {}
    if k == 'option':
        return dummy_value(model, t.elem, string)
    raise ValueError('no dummy for type %s' % t.text)


def constructor_fields(cls):
    """The fields a create call takes (not RO/runtime, not a computed
    relation set)."""
    return [f for f in cls.fields
            if f.qualifier != 'RO/runtime' and not f.relation_set]


def full_record(model, cls_name, **overrides):
    """A record for <cls>.create with every constructor field set."""
    cls = model.cls(cls_name)
    rec = {}
    for f in constructor_fields(cls):
        rec[f.name] = dummy_value(model, f.type, string='')
    for k, v in overrides.items():
        rec[k] = v
    return rec
