#!/usr/bin/env python3
"""test_transport.py — how the daemon's HTTP server carries the API:
HTTP/1.1 keep-alive and pipelining, chunked request bodies, the Unix
socket (default STATE_DIR/xapi.sock, or --unix PATH), HTTPS (TLS 1.2 or
later only, with the certificate generated in the state directory on first
start), curl as a client, and hostile input — an oversized Content-Length,
deep nesting, huge strings, garbage, truncated XML, DOCTYPE/entities, bad
framing, unknown paths — answered with a 4xx status or a XenAPI error while
the daemon stays up.  The codecs' own limits are unit-tested in
tests/unit; this file checks them end to end."""
import http.client
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
import warnings

from xapitest import (Client, Daemon, expect_error, finish_daemon,
                      http_request, parse_xmlrpc_response, start_or_bail, tap,
                      unverified_context, xmlrpc_body)

warnings.simplefilter('ignore', DeprecationWarning)

d = start_or_bail(Daemon(tls=True))
S = {}


def raw(data, port=None, timeout=15, shut=False, unix=None):
    """Sends bytes on a fresh connection and reads one response:
    (status, headers, body), or (None, None, b'') if the server closed
    without answering."""
    if unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(unix)
    else:
        sock = socket.create_connection(('127.0.0.1', port or d.http_port),
                                        timeout)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if shut:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass        # the server has closed already
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None, None, b''
        try:
            body = resp.read()
        except (http.client.IncompleteRead, ConnectionResetError) as e:
            body = getattr(e, 'partial', b'')
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        sock.close()


def read_responses(sock, n):
    """Reads n Content-Length-framed responses from sock; their bodies."""
    buf = b''
    out = []
    while len(out) < n:
        while b'\r\n\r\n' not in buf:
            more = sock.recv(65536)
            assert more, 'connection closed after %d responses' % len(out)
            buf += more
        head, buf = buf.split(b'\r\n\r\n', 1)
        lines = head.split(b'\r\n')
        assert b' 200 ' in lines[0] + b' ', lines[0]
        length = next(int(l.split(b':', 1)[1]) for l in lines[1:]
                      if l.lower().startswith(b'content-length:'))
        while len(buf) < length:
            more = sock.recv(65536)
            assert more, 'connection closed in a body'
            buf += more
        out.append(buf[:length])
        buf = buf[length:]
    return out


def post_head(path='/', length=None, extra=''):
    head = 'POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n' \
        % path
    if length is not None:
        head += 'Content-Length: %d\r\n' % length
    return (head + extra + '\r\n').encode()


def xml_post(body, path='/'):
    return post_head(path, len(body)) + body


def still_alive(what):
    assert d.alive(), 'the daemon did not survive %s; log:\n%s' % (
        what, d.log_tail())


try:
    c = d.client()
    s = c.session.login_with_password('root', d.password)

    # ---- keep-alive, pipelining, chunked ----

    @tap.test('test_several_xmlrpc_calls_on_one_keep_alive_connection')
    def _():
        conn = d.conn()
        try:
            conn.connect()
            sock = conn.sock
            for i in range(10):
                r = http_request(conn, 'POST', '/',
                                 xmlrpc_body('VM.get_all', s),
                                 {'Content-Type': 'text/xml'})
                assert r.status == 200, r
                assert parse_xmlrpc_response(r.body)['Status'] == 'Success'
                assert r.headers.get('connection', 'keep-alive').lower() \
                    != 'close', r.headers
                assert conn.sock is sock, 'reconnected after call %d' % i
        finally:
            conn.close()

    @tap.test('test_xmlrpc_client_reuses_its_connection')
    def _():
        proxy = d.proxy()
        cl = Client(proxy)
        cl.VM.get_all(s)
        conn = proxy._ServerProxy__transport._connection[1]
        sock = conn.sock
        for _ in range(5):
            cl.VM.get_all(s)
        assert conn.sock is sock and sock is not None

    @tap.test('test_pipelined_requests_are_answered_in_order')
    def _():
        bodies = [xmlrpc_body('VM.get_all', s),
                  xmlrpc_body('VM.get_all', 'OpaqueRef:pipelined'),
                  xmlrpc_body('pool.get_all', s)]
        data = b''.join(xml_post(b) for b in bodies)
        sock = socket.create_connection(('127.0.0.1', d.http_port), 10)
        try:
            sock.sendall(data)
            got = [parse_xmlrpc_response(b) for b in
                   read_responses(sock, len(bodies))]
        finally:
            sock.close()
        assert got[0]['Status'] == 'Success', got[0]
        assert got[1]['ErrorDescription'] == ['SESSION_INVALID',
                                              'OpaqueRef:pipelined'], got[1]
        assert got[2]['Value'] == c.pool.get_all(s), got[2]

    @tap.test('test_http_1_0_request_is_answered_and_closed')
    def _():
        body = xmlrpc_body('VM.get_all', s)
        data = (b'POST / HTTP/1.0\r\nContent-Type: text/xml\r\n'
                b'Content-Length: %d\r\n\r\n' % len(body)) + body
        sock = socket.create_connection(('127.0.0.1', d.http_port), 10)
        try:
            sock.sendall(data)
            chunks = []
            while True:
                b = sock.recv(65536)
                if not b:
                    break
                chunks.append(b)
        finally:
            sock.close()
        resp = b''.join(chunks)
        assert resp.startswith(b'HTTP/1.'), resp[:100]
        assert b' 200 ' in resp.split(b'\r\n')[0], resp[:100]
        assert b'<name>Status</name>' in resp, resp[-300:]

    @tap.test('test_chunked_request_body_is_accepted')
    def _():
        body = xmlrpc_body('VM.get_all', s)
        pieces = [body[:10], body[10:11], body[11:200], body[200:]]
        chunked = b''.join(b'%x\r\n%s\r\n' % (len(p), p) for p in pieces if p)
        data = (b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n'
                b'Transfer-Encoding: chunked\r\n\r\n' + chunked + b'0\r\n\r\n')
        status, _, resp = raw(data)
        assert status == 200, (status, resp[:200])
        r = parse_xmlrpc_response(resp)
        assert r['Status'] == 'Success' and r['Value'] == c.VM.get_all(s), r

    @tap.test('test_chunked_body_with_http_client_encode_chunked')
    def _():
        conn = d.conn()
        try:
            body = xmlrpc_body('pool.get_all', s)
            conn.request('POST', '/', body=iter([body[:50], body[50:]]),
                         headers={'Content-Type': 'text/xml',
                                  'Transfer-Encoding': 'chunked'},
                         encode_chunked=True)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        assert r.status == 200, (r.status, data[:200])
        assert parse_xmlrpc_response(data)['Value'] == c.pool.get_all(s)

    @tap.test('test_expect_100_continue_gets_100_then_the_response')
    def _():
        body = xmlrpc_body('pool.get_all', s)
        sock = socket.create_connection(('127.0.0.1', d.http_port), 10)
        try:
            sock.sendall(post_head('/', len(body), 'Expect: 100-continue\r\n'))
            first = b''
            while b'\r\n\r\n' not in first:
                more = sock.recv(4096)
                assert more, 'closed before 100 Continue'
                first += more
            assert first.startswith(b'HTTP/1.1 100'), first[:100]
            rest = first.split(b'\r\n\r\n', 1)[1]
            assert not rest, 'bytes after 100 Continue: %r' % rest[:100]
            sock.sendall(body)
            r = parse_xmlrpc_response(read_responses(sock, 1)[0])
        finally:
            sock.close()
        assert r['Value'] == c.pool.get_all(s), r

    @tap.test('test_request_sent_one_byte_at_a_time_is_served')
    def _():
        data = xml_post(xmlrpc_body('pool.get_all', s))
        sock = socket.create_connection(('127.0.0.1', d.http_port), 10)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                sock.send(data[i:i + 1])
                if i % 64 == 0:
                    time.sleep(0.001)
            r = parse_xmlrpc_response(read_responses(sock, 1)[0])
        finally:
            sock.close()
        assert r['Value'] == c.pool.get_all(s), r

    @tap.test('test_malformed_chunk_size_is_400')
    def _():
        data = (b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked'
                b'\r\n\r\nzz\r\nabc\r\n0\r\n\r\n')
        status, _, _ = raw(data)
        assert status == 400, status
        still_alive('a bad chunk size')

    @tap.test('test_content_length_and_chunked_together_is_400')
    def _():
        body = xmlrpc_body('VM.get_all', s)
        data = (b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n'
                b'Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n'
                % (len(body), len(body), body))
        status, _, _ = raw(data)
        assert status == 400, status

    # ---- the Unix socket ----

    @tap.test('test_unix_socket_defaults_to_state_dir_xapi_sock')
    def _():
        want = os.path.join(d.state_dir, 'xapi.sock')
        assert os.path.realpath(d.unix_path) == os.path.realpath(want), \
            d.unix_path
        assert stat.S_ISSOCK(os.stat(want).st_mode), oct(os.stat(want).st_mode)

    @tap.test('test_login_and_calls_over_the_unix_socket')
    def _():
        u = d.unix_client()
        us = u.session.login_with_password('root', d.password)
        assert u.VM.get_all(us) == c.VM.get_all(s)
        # sessions are shared between transports
        assert c.pool.get_all(us) == u.pool.get_all(s)
        u.session.logout(us)

    @tap.test('test_local_root_needs_no_password_on_the_unix_socket')
    def _():
        # As on XenServer: only root can connect to the socket (mode 0600),
        # and xe or XenAPI.xapi_local() log in there without a password.
        mode = stat.S_IMODE(os.stat(d.unix_path).st_mode)
        assert mode == 0o600, oct(mode)
        u = d.unix_client()
        us = u.session.login_with_password('root', 'not-the-password')
        assert u.pool.get_all(us) == c.pool.get_all(s)
        u.session.logout(us)
        expect_error(lambda: c.session.login_with_password(
            'root', 'not-the-password'), 'SESSION_AUTHENTICATION_FAILED')

    @tap.test('test_jsonrpc_over_the_unix_socket')
    def _():
        body = (b'{"jsonrpc":"2.0","method":"VM.get_all","params":["%s"],'
                b'"id":1}' % s.encode())
        data = (b'POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: '
                b'application/json\r\nContent-Length: %d\r\n\r\n'
                % len(body)) + body
        status, _, resp = raw(data, unix=d.unix_path)
        assert status == 200 and b'"result"' in resp, (status, resp)

    @tap.test('test_unix_option_puts_the_socket_where_asked')
    def _():
        d2 = Daemon(tls=False)
        path = os.path.join(d2.tmp, 'custom.sock')
        d2.unix_arg = path
        try:
            d2.start()
            assert d2.unix_path == path, d2.ready_line
            u = d2.unix_client()
            us = u.session.login_with_password('root', d2.password)
            assert u.pool.get_all(us)
            assert not os.path.exists(os.path.join(d2.state_dir,
                                                   'xapi.sock'))
            rc = d2.stop()
            assert rc == 0, rc
            assert not d2.sanitizer_reports(), d2.sanitizer_reports()[0]
        finally:
            d2.cleanup()

    # ---- HTTPS ----

    @tap.test('test_https_login_and_calls')
    def _():
        h = d.https_client()
        hs = h.session.login_with_password('root', d.password)
        assert h.VM.get_all(hs) == c.VM.get_all(s)
        h.session.logout(hs)

    @tap.test('test_https_negotiates_tls_1_2_or_later')
    def _():
        ctx = unverified_context()
        with socket.create_connection(('127.0.0.1', d.https_port), 10) as sk:
            with ctx.wrap_socket(sk) as ss:
                assert ss.version() in ('TLSv1.2', 'TLSv1.3'), ss.version()
        ctx = unverified_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(('127.0.0.1', d.https_port), 10) as sk:
            with ctx.wrap_socket(sk) as ss:
                assert ss.version() == 'TLSv1.2', ss.version()

    def old_tls(version):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.set_ciphers('ALL:@SECLEVEL=0')
            ctx.minimum_version = version
            ctx.maximum_version = version
        except (ssl.SSLError, ValueError) as e:
            return 'client cannot: %s' % e
        try:
            with socket.create_connection(('127.0.0.1', d.https_port),
                                          10) as sk:
                with ctx.wrap_socket(sk) as ss:
                    return 'accepted %s' % ss.version()
        except ssl.SSLError as e:
            return 'refused: %s' % e
        except OSError as e:
            return 'refused (connection): %s' % e

    @tap.test('test_client_limited_to_tls_1_1_is_refused')
    def _():
        r = old_tls(ssl.TLSVersion.TLSv1_1)
        assert r.startswith('refused'), r
        assert 'NO_PROTOCOLS_AVAILABLE' not in r, \
            'the client could not offer TLS 1.1 here: %s' % r

    @tap.test('test_client_limited_to_tls_1_0_is_refused')
    def _():
        r = old_tls(ssl.TLSVersion.TLSv1)
        assert r.startswith('refused'), r

    @tap.test('test_plain_http_on_the_tls_port_does_not_hang_or_kill_it')
    def _():
        status, _, body = raw(xml_post(xmlrpc_body('VM.get_all', s)),
                              port=d.https_port, timeout=10, shut=True)
        assert status is None or 400 <= status < 500, status
        still_alive('plain HTTP on the TLS port')

    @tap.test('test_certificate_is_generated_in_the_state_dir')
    def _():
        pem = os.path.join(d.state_dir, 'xapi-ssl.pem')
        assert os.path.exists(pem), os.listdir(d.state_dir)
        text = open(pem).read()
        assert '-----BEGIN CERTIFICATE-----' in text, text[:100]
        cert = text[text.index('-----BEGIN CERTIFICATE-----'):]
        cert = cert[:cert.index('-----END CERTIFICATE-----') + 25]
        der = ssl.PEM_cert_to_DER_cert(cert)
        with socket.create_connection(('127.0.0.1', d.https_port), 10) as sk:
            with unverified_context().wrap_socket(sk) as ss:
                served = ss.getpeercert(binary_form=True)
        assert served == der, 'the server presents another certificate'
        S['der'] = der

    @tap.test('test_private_key_is_not_readable_by_others')
    def _():
        keys = [f for f in ('xapi-ssl.key', 'xapi-ssl.pem')
                if os.path.exists(os.path.join(d.state_dir, f))
                and 'PRIVATE KEY' in open(os.path.join(d.state_dir, f)).read()]
        assert keys, 'no private key file in %s' % os.listdir(d.state_dir)
        for k in keys:
            mode = os.stat(os.path.join(d.state_dir, k)).st_mode
            assert not mode & 0o077, '%s has mode %o' % (k, mode & 0o777)

    # ---- curl ----

    curl = shutil.which('curl')
    login_xml = xmlrpc_body('session.login_with_password', 'root', d.password)

    def run_curl(*args):
        p = subprocess.run([curl, '-s', '-S', '--max-time', '20',
                            '-H', 'Content-Type: text/xml',
                            '--data-binary', '@-'] + list(args),
                           input=login_xml, capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr.decode()
        r = parse_xmlrpc_response(p.stdout)
        assert r['Status'] == 'Success', r
        return r['Value']

    if not curl:
        tap.skip('test_curl_can_log_in_over_http', 'curl is not installed')
        tap.skip('test_curl_can_log_in_over_https', 'curl is not installed')
        tap.skip('test_curl_can_log_in_over_the_unix_socket',
                 'curl is not installed')
    else:
        @tap.test('test_curl_can_log_in_over_http')
        def _():
            cs = run_curl('http://127.0.0.1:%d/' % d.http_port)
            assert c.pool.get_all(cs)

        @tap.test('test_curl_can_log_in_over_https')
        def _():
            cs = run_curl('-k', '--tlsv1.2',
                          'https://127.0.0.1:%d/' % d.https_port)
            assert c.pool.get_all(cs)

        @tap.test('test_curl_can_log_in_over_the_unix_socket')
        def _():
            cs = run_curl('--unix-socket', d.unix_path, 'http://localhost/')
            assert c.pool.get_all(cs)

    # ---- hostile input ----

    @tap.test('test_100MB_content_length_is_413_without_sending_the_body')
    def _():
        t0 = time.time()
        status, _, _ = raw(post_head('/', 100 * 1024 * 1024), timeout=10)
        assert status == 413, status
        assert time.time() - t0 < 8, 'took %.1fs' % (time.time() - t0)
        status, _, _ = raw(post_head('/jsonrpc', 100 * 1024 * 1024,
                                     'Expect: 100-continue\r\n'), timeout=10)
        assert status == 413, status
        still_alive('a 100 MB Content-Length')

    @tap.test('test_absurd_content_lengths_are_4xx')
    def _():
        for v in ('-1', 'abc', '99999999999999999999999999', '1, 2', ''):
            data = (b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n'
                    % v.encode())
            status, _, _ = raw(data, timeout=10, shut=True)
            assert status is not None and 400 <= status < 500, (v, status)
        still_alive('bad Content-Length values')

    @tap.test('test_deeply_nested_xml_is_rejected')
    def _():
        depth = 10000
        val = ('<value><array><data>' * depth + '</data></array></value>'
               * depth)
        body = ('<?xml version="1.0"?><methodCall><methodName>VM.get_all'
                '</methodName><params><param>%s</param></params>'
                '</methodCall>' % val).encode()
        status, _, resp = raw(xml_post(body))
        if status == 200:
            assert parse_xmlrpc_response(resp)['Status'] == 'Failure', resp
        else:
            assert status is not None and 400 <= status < 500, status
        body = ('<?xml version="1.0"?>' + '<a>' * depth + '</a>' * depth
                ).encode()
        status, _, _ = raw(xml_post(body))
        assert status is not None and 400 <= status < 500, status
        still_alive('XML nested 10,000 deep')

    @tap.test('test_deeply_nested_struct_values_are_rejected')
    def _():
        depth = 10000
        val = ('<value><struct><member><name>k</name>' * depth
               + '<value>x</value>' + '</member></struct></value>' * depth)
        body = ('<?xml version="1.0"?><methodCall><methodName>'
                'VM.set_other_config</methodName><params>'
                '<param><value>%s</value></param><param><value>x</value>'
                '</param><param>%s</param></params></methodCall>'
                % (s, val)).encode()
        status, _, resp = raw(xml_post(body))
        if status == 200:
            assert parse_xmlrpc_response(resp)['Status'] == 'Failure', resp
        else:
            assert status is not None and 400 <= status < 500, status
        still_alive('structs nested 10,000 deep')

    @tap.test('test_one_megabyte_string_round_trips')
    def _():
        h = c.host.get_all(s)[0]
        big = 'x' * (1 << 20)
        c.host.set_name_description(s, h, big)
        assert c.host.get_name_description(s, h) == big
        c.host.set_name_description(s, h, '')

    @tap.test('test_huge_string_is_rejected_and_the_daemon_survives')
    def _():
        big = b'A' * (20 << 20)
        body = (b'<?xml version="1.0"?><methodCall><methodName>'
                b'host.set_name_description</methodName><params>'
                b'<param><value>' + s.encode() + b'</value></param>'
                b'<param><value>x</value></param>'
                b'<param><value><string>' + big + b'</string></value></param>'
                b'</params></methodCall>')
        status, _, resp = raw(xml_post(body), timeout=30)
        if status == 200:
            assert parse_xmlrpc_response(resp)['Status'] == 'Failure', \
                resp[:300]
        else:
            assert status is not None and 400 <= status < 500, status
        still_alive('a 20 MB string')

    @tap.test('test_many_members_and_items_are_bounded_or_served')
    def _():
        n = 200000
        body = ('<?xml version="1.0"?><methodCall><methodName>VM.get_all'
                '</methodName><params><param><value><array><data>'
                + '<value>x</value>' * n + '</data></array></value></param>'
                '</params></methodCall>').encode()
        status, _, resp = raw(xml_post(body), timeout=30)
        if status == 200:
            r = parse_xmlrpc_response(resp)
            assert r['Status'] == 'Failure', r
        else:
            assert status is not None and 400 <= status < 500, status
        still_alive('an array of 200,000 items')

    @tap.test('test_garbage_body_is_400')
    def _():
        for path in ('/', '/jsonrpc'):
            junk = bytes((i * 131 + 7) % 256 for i in range(8192))
            status, _, _ = raw(xml_post(junk, path))
            assert status == 400, (path, status)
        still_alive('a garbage body')

    @tap.test('test_garbage_instead_of_http_is_refused')
    def _():
        for junk in (bytes(range(256)) * 16, b'\x16\x03\x01\x02\x00' + b'\0'
                     * 600, b'GARBAGE\r\n\r\n', b'\r\n' * 5000):
            status, _, _ = raw(junk, timeout=10, shut=True)
            assert status is None or 400 <= status < 500, status
        still_alive('garbage instead of HTTP')

    @tap.test('test_truncated_xml_is_400')
    def _():
        body = xmlrpc_body('VM.get_all', s)
        for cut in (len(body) // 2, len(body) - 5, 30):
            status, _, _ = raw(xml_post(body[:cut]))
            assert status == 400, (cut, status)
        still_alive('truncated XML')

    @tap.test('test_body_shorter_than_content_length_does_not_hang_the_server')
    def _():
        body = xmlrpc_body('VM.get_all', s)
        status, _, _ = raw(post_head('/', len(body) + 100) + body, timeout=10,
                           shut=True)
        assert status is None or 400 <= status < 500, status
        still_alive('a short body')

    @tap.test('test_xml_with_doctype_and_entities_is_rejected')
    def _():
        lol = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
               + ''.join('<!ENTITY lol%d "%s">' % (i, ('&lol%d;' % (i - 1)
                                                       if i else '&lol;') * 10)
                         for i in range(9))
               + ']><methodCall><methodName>VM.get_all</methodName><params>'
               '<param><value>&lol8;</value></param></params></methodCall>')
        status, _, _ = raw(xml_post(lol.encode()))
        assert status == 400, status
        ext = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM '
               '"file:///etc/passwd">]><methodCall><methodName>VM.get_all'
               '</methodName><params><param><value>&e;</value></param>'
               '</params></methodCall>')
        status, _, body = raw(xml_post(ext.encode()))
        assert status == 400, status
        assert b'root:' not in body, body
        still_alive('DOCTYPE and entities')

    @tap.test('test_undefined_entity_is_rejected_and_predefined_ones_work')
    def _():
        body = ('<?xml version="1.0"?><methodCall><methodName>VM.get_all'
                '</methodName><params><param><value>&nope;</value></param>'
                '</params></methodCall>').encode()
        status, _, _ = raw(xml_post(body))
        assert status == 400, status
        h = c.host.get_all(s)[0]
        body = ('<?xml version="1.0"?><methodCall><methodName>'
                'host.set_name_description</methodName><params>'
                '<param><value>%s</value></param><param><value>%s</value>'
                '</param><param><value>&lt;&amp;&gt;&quot;&apos;&#65;&#x42;'
                '</value></param></params></methodCall>' % (s, h)).encode()
        status, _, resp = raw(xml_post(body))
        assert status == 200, status
        assert c.host.get_name_description(s, h) == '<&>"\'AB', \
            c.host.get_name_description(s, h)

    @tap.test('test_huge_header_is_rejected')
    def _():
        data = (b'POST / HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'a' * 200000
                + b'\r\nContent-Length: 0\r\n\r\n')
        status, _, _ = raw(data, timeout=10)
        assert status in (400, 431), status
        data = (b'POST / HTTP/1.1\r\nHost: x\r\n'
                + b''.join(b'X-H%d: v\r\n' % i for i in range(5000))
                + b'Content-Length: 0\r\n\r\n')
        status, _, _ = raw(data, timeout=10)
        assert status in (400, 431), status
        still_alive('huge headers')

    @tap.test('test_bad_request_lines_are_4xx_or_5xx')
    def _():
        for line, ok in ((b'BREW / HTTP/1.1', (400, 405, 501)),
                         (b'POST / HTTP/2.0', (400, 505)),
                         (b'POST / HTTP/9.9', (400, 505)),
                         (b'POST', (400,)),
                         (b'POST  /  HTTP/1.1', (400,)),
                         (b'POST /\x00 HTTP/1.1', (400, 404))):
            status, _, _ = raw(line + b'\r\nHost: x\r\nContent-Length: 0'
                               b'\r\n\r\n', timeout=10, shut=True)
            assert status in ok, (line, status)
        still_alive('bad request lines')

    @tap.test('test_unknown_path_is_404')
    def _():
        for method in ('GET', 'POST'):
            conn = d.conn()
            try:
                r = http_request(conn, method, '/no/such/path',
                                 b'' if method == 'POST' else None)
            finally:
                conn.close()
            assert r.status == 404, (method, r)

    @tap.test('test_other_methods_on_the_rpc_paths_are_405')
    def _():
        for path in ('/', '/jsonrpc'):
            conn = d.conn()
            try:
                r = http_request(conn, 'PUT', path, b'x')
            finally:
                conn.close()
            assert r.status == 405, (path, r)
            assert 'POST' in r.headers.get('allow', ''), r.headers

    @tap.test('test_many_idle_and_half_sent_connections_do_not_block_new_calls')
    def _():
        socks = []
        try:
            for _ in range(200):
                socks.append(socket.create_connection(
                    ('127.0.0.1', d.http_port), 10))
            for sk in socks[::2]:
                sk.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: '
                           b'1000\r\n\r\n<?xml')
            # and some that never finish (or start) a TLS handshake
            for i in range(50):
                sk = socket.create_connection(('127.0.0.1', d.https_port), 10)
                if i % 2:
                    sk.sendall(b'\x16\x03\x01\x00\xa5\x01\x00\x00')
                socks.append(sk)
            t0 = time.time()
            assert Client(d.proxy(timeout=10)).VM.get_all(s)
            assert d.https_client(timeout=10).VM.get_all(s)
            assert time.time() - t0 < 5, 'took %.1fs' % (time.time() - t0)
        finally:
            for sk in socks:
                sk.close()
        still_alive('200 idle connections')

    @tap.test('test_client_disconnecting_mid_request_is_harmless')
    def _():
        for _ in range(20):
            sk = socket.create_connection(('127.0.0.1', d.http_port), 10)
            body = xmlrpc_body('VM.get_all', s)
            sk.sendall(xml_post(body)[:-10])
            sk.close()
            sk = socket.create_connection(('127.0.0.1', d.http_port), 10)
            sk.sendall(xml_post(body))
            sk.close()     # leaves before reading the response
        still_alive('clients leaving early')

    @tap.test('test_daemon_is_still_alive_after_the_transport_tests')
    def _():
        still_alive('the transport tests')
        assert c.VM.get_all(s)

    @tap.test('test_certificate_is_kept_across_restart')
    def _():
        der = S.get('der')
        assert der, 'no certificate seen'
        rc = d.stop()
        assert rc == 0, rc
        d.start()
        with socket.create_connection(('127.0.0.1', d.https_port), 10) as sk:
            with unverified_context().wrap_socket(sk) as ss:
                assert ss.getpeercert(binary_form=True) == der, \
                    'a new certificate after restart'

finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
