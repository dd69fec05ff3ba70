#!/usr/bin/env python3
"""test_jsonrpc.py — the XenAPI over JSON-RPC 1.0 and 2.0 (POST /jsonrpc
and /json) with raw http.client requests: the result and error envelopes
exactly as the wire protocol describes them, the JSON types of the API's
types (ints as numbers, datetimes as strings, void as ""), ids echoed,
sessions shared with XML-RPC, CORS, and malformed requests answered with
HTTP 400 rather than a crash.  test_xmlrpc.py covers the XML-RPC side."""
import re

from xapitest import (Daemon, finish_daemon, http_request,
                      parse_xmlrpc_response, start_or_bail, tap, xmlrpc_body)

d = start_or_bail(Daemon(tls=False))
S = {}


def call(method, params, version=2, id=1, path='/jsonrpc', conn=None):
    r = d.jsonrpc(method, params, version=version, id=id, path=path,
                  conn=conn)
    assert r.status == 200, r
    return r.json()


def result(method, *params):
    r = call(method, list(params))
    assert 'error' not in r, r
    return r['result']


def v2_error(method, *params):
    r = call(method, list(params))
    assert 'result' not in r and 'error' in r, r
    e = r['error']
    return [e['message']] + e['data']


try:
    @tap.test('test_v1_login_success_envelope_is_result_error_null_id')
    def _():
        r = d.jsonrpc('session.login_with_password', ['root', d.password],
                      version=1, id='login-1')
        assert r.status == 200, r
        body = r.json()
        assert set(body) == {'result', 'error', 'id'}, body
        assert body['error'] is None and body['id'] == 'login-1', body
        assert isinstance(body['result'], str) \
            and body['result'].startswith('OpaqueRef:'), body
        S['s'] = body['result']

    s = S.get('s') or result('session.login_with_password', 'root',
                             d.password)

    @tap.test('test_v1_error_envelope_is_result_null_error_array_id')
    def _():
        body = call('VM.get_all', ['OpaqueRef:gone'], version=1, id=42)
        assert body == {'result': None,
                        'error': ['SESSION_INVALID', 'OpaqueRef:gone'],
                        'id': 42}, body
        body = call('session.login_with_password', ['root', 'wrong'],
                    version=1, id='x')
        assert body == {'result': None,
                        'error': ['SESSION_AUTHENTICATION_FAILED'],
                        'id': 'x'}, body

    @tap.test('test_v2_success_envelope_is_jsonrpc_result_id_without_error')
    def _():
        body = call('VM.get_all', [s], version=2, id=3)
        assert set(body) == {'jsonrpc', 'result', 'id'}, body
        assert body['jsonrpc'] == '2.0' and body['id'] == 3, body
        assert isinstance(body['result'], list) and body['result'], body
        S['dom0'] = body['result'][0]

    dom0 = S.get('dom0') or result('VM.get_all', s)[0]

    @tap.test('test_v2_error_envelope_is_code_message_data_without_result')
    def _():
        body = call('VM.get_all', ['OpaqueRef:gone'], version=2, id='e')
        assert set(body) == {'jsonrpc', 'error', 'id'}, body
        e = body['error']
        assert set(e) == {'code', 'message', 'data'}, e
        assert isinstance(e['code'], int) and e['code'] != 0, e
        assert e['message'] == 'SESSION_INVALID', e
        assert e['data'] == ['OpaqueRef:gone'], e
        assert body['jsonrpc'] == '2.0' and body['id'] == 'e', body

    @tap.test('test_v2_error_data_carries_every_parameter')
    def _():
        assert v2_error('VM.get_record', s) == [
            'MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_record', '2', '1']
        assert v2_error('VM.nope', s) == ['MESSAGE_METHOD_UNKNOWN', 'VM.nope']
        bad = 'OpaqueRef:nothing'
        assert v2_error('VM.get_record', s, bad) == ['HANDLE_INVALID', 'VM',
                                                     bad]
        result('VM.add_to_other_config', s, dom0, 'dupkey', 'one')
        uuid = result('VM.get_uuid', s, dom0)
        assert v2_error('VM.add_to_other_config', s, dom0, 'dupkey',
                        'two') == ['MAP_DUPLICATE_KEY', 'VM', 'other_config',
                                   uuid, 'dupkey']
        result('VM.remove_from_other_config', s, dom0, 'dupkey')

    @tap.test('test_responses_have_content_type_application_json')
    def _():
        r = d.jsonrpc('VM.get_all', [s])
        assert r.headers.get('content-type', '').split(';')[0] \
            == 'application/json', r.headers
        r = d.jsonrpc('VM.get_all', ['bogus'], version=1)
        assert r.headers.get('content-type', '').split(';')[0] \
            == 'application/json', r.headers

    @tap.test('test_ints_are_json_numbers_without_point_or_exponent')
    def _():
        r = d.jsonrpc('VM.get_memory_static_max', [s, dom0])
        assert re.search(rb'"result":\s*\d+\s*[,}]', r.body), r.body
        v = r.json()['result']
        assert isinstance(v, int) and not isinstance(v, bool) and v > 0, v
        rec = result('VM.get_record', s, dom0)
        for f in ('memory_static_max', 'VCPUs_max', 'domid', 'user_version'):
            assert isinstance(rec[f], int) and not isinstance(rec[f], bool), \
                (f, rec[f])

    @tap.test('test_64bit_ints_round_trip_exactly_as_json_numbers')
    def _():
        net = result('network.create', s, {'other_config': {}})
        S['net'] = net
        for v in (2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 0):
            assert result('network.set_MTU', s, net, v) == ''
            r = d.jsonrpc('network.get_MTU', [s, net])
            assert re.search(rb'"result":\s*%d\s*[,}]' % v, r.body), r.body
            assert r.json()['result'] == v

    @tap.test('test_out_of_range_or_fractional_int_is_rejected')
    def _():
        net = S['net']
        for bad in (2 ** 64, 1.5):
            r = d.jsonrpc('network.set_MTU', [s, net, bad])
            if r.status == 200:
                body = r.json()
                assert 'error' in body and body['error']['message'] == \
                    'FIELD_TYPE_ERROR', (bad, body)
            else:
                assert r.status == 400, (bad, r)

    @tap.test('test_floats_bools_datetimes_maps_and_sets_have_their_json_types')
    def _():
        cpu = result('host_cpu.get_all', s)[0]
        u = result('host_cpu.get_utilisation', s, cpu)
        assert isinstance(u, float), u
        rec = result('VM.get_record', s, dom0)
        assert rec['is_control_domain'] is True, rec['is_control_domain']
        assert isinstance(rec['other_config'], dict), rec['other_config']
        assert isinstance(rec['tags'], list), rec['tags']
        m = result('VM.get_metrics', s, dom0)
        t = result('VM_metrics.get_start_time', s, m)
        assert isinstance(t, str) and re.match(
            r'^\d{8}T\d\d:\d\d:\d\dZ$', t), t

    @tap.test('test_void_result_is_an_empty_string')
    def _():
        body = call('VM.set_name_description', [s, dom0, 'json'], version=2)
        assert body.get('result') == '', body
        body = call('VM.set_name_description', [s, dom0, 'json'], version=1)
        assert body.get('result') == '' and body['error'] is None, body

    @tap.test('test_id_string_and_int_are_echoed')
    def _():
        for v in (1, 2):
            for i in ('abc', '', 0, 123456789, 'with "quotes" and \u00e9'):
                body = call('VM.get_all', [s], version=v, id=i)
                assert body['id'] == i and type(body['id']) is type(i), \
                    (v, i, body)

    @tap.test('test_session_from_xmlrpc_works_over_jsonrpc')
    def _():
        xs = d.login()
        assert result('VM.get_all', xs) == d.client().VM.get_all(xs)

    @tap.test('test_session_from_jsonrpc_works_over_xmlrpc')
    def _():
        js = result('session.login_with_password', 'root', d.password)
        c = d.client()
        assert c.VM.get_all(js) == result('VM.get_all', js)
        c.session.logout(js)
        assert v2_error('VM.get_all', js) == ['SESSION_INVALID', js]

    @tap.test('test_json_path_is_the_same_endpoint_as_jsonrpc')
    def _():
        body = call('VM.get_all', [s], path='/json')
        assert body.get('result') == result('VM.get_all', s), body

    @tap.test('test_strings_with_unicode_and_escapes_round_trip')
    def _():
        for v in ('caf\u00e9 \u65e5\u672c \U0001F600', 'quote " back \\ '
                  'slash / tab \t nl \n cr \r', '\u2028\u2029', '<xml>&amp;'):
            assert result('VM.set_name_description', s, dom0, v) == ''
            assert result('VM.get_name_description', s, dom0) == v, v

    @tap.test('test_string_with_NUL_is_rejected_or_kept_whole')
    def _():
        r = d.jsonrpc('VM.set_name_description', [s, dom0, 'a\u0000b'])
        if r.status == 200:
            body = r.json()
            if 'error' not in body:
                got = result('VM.get_name_description', s, dom0)
                assert got == 'a\u0000b', 'stored truncated: %r' % got
        else:
            assert r.status == 400, r

    @tap.test('test_control_characters_from_jsonrpc_keep_xmlrpc_responses_well_formed')
    def _():
        # JSON can carry U+0001, XML 1.0 cannot: either JSON-RPC refuses
        # the value, or the XML-RPC side must still answer well-formed XML
        # (else one name poisons VM.get_all_records for every XML-RPC
        # client).
        probs = []
        for v in ('a\u0001b', '\u0008', 'x\u001fy', '\ufffe'):
            r = d.jsonrpc('VM.set_name_description', [s, dom0, v])
            body = r.json() if r.status == 200 else {}
            if 'result' not in body:
                continue            # refused: fine
            for method, args in (('VM.get_name_description', (s, dom0)),
                                 ('VM.get_record', (s, dom0)),
                                 ('VM.get_all_records', (s,))):
                x = d.raw_xmlrpc(xmlrpc_body(method, *args))
                try:
                    parse_xmlrpc_response(x.body)
                except Exception as e:
                    probs.append('name_description %r set over JSON-RPC: '
                                 '%s over XML-RPC is ill-formed (%s)'
                                 % (v, method, e))
        result('VM.set_name_description', s, dom0, '')
        assert not probs, '\n'.join(probs)

    @tap.test('test_several_calls_on_one_keep_alive_connection')
    def _():
        conn = d.conn()
        try:
            for i in range(20):
                r = d.jsonrpc('VM.get_all', [s], id=i, conn=conn,
                              version=1 + i % 2)
                assert r.status == 200 and r.json()['id'] == i, r
        finally:
            conn.close()

    def post(body, path='/jsonrpc'):
        return d.post(path, body, {'Content-Type': 'application/json'})

    @tap.test('test_missing_id_is_http_400')
    def _():
        for v in ('', '"jsonrpc":"2.0",'):
            r = post(('{%s"method":"VM.get_all","params":["%s"]}'
                      % (v, s)).encode())
            assert r.status == 400, r

    @tap.test('test_null_id_is_http_400')
    def _():
        r = post(('{"method":"VM.get_all","params":["%s"],"id":null}'
                  % s).encode())
        assert r.status == 400, r

    @tap.test('test_params_not_an_array_is_http_400')
    def _():
        for p in ('"x"', '{"a":1}', '1', 'null'):
            r = post(('{"method":"VM.get_all","params":%s,"id":1}'
                      % p).encode())
            assert r.status == 400, (p, r)

    @tap.test('test_missing_params_is_http_400_or_a_count_mismatch')
    def _():
        r = post(b'{"method":"VM.get_all","id":1}')
        if r.status == 200:
            assert r.json()['error'][0] == \
                'MESSAGE_PARAMETER_COUNT_MISMATCH', r
        else:
            assert r.status == 400, r

    @tap.test('test_method_not_a_string_is_http_400')
    def _():
        for m in ('1', 'null', '["VM.get_all"]'):
            r = post(('{"method":%s,"params":[],"id":1}' % m).encode())
            assert r.status == 400, (m, r)

    @tap.test('test_malformed_json_is_http_400')
    def _():
        for body in (b'{', b'', b'not json', b'{"method":"VM.get_all",}',
                     b'{"method":"VM.get_all" "params":[]}', b'[]', b'"str"',
                     b'{"method":"VM.get_all","params":["\xff\xfe"],"id":1}',
                     b'{"method":"VM.get_all","params":[1e999],"id":1}',
                     b'{"method":"VM.get_all","params":[],"id":1} trailing',
                     b'[' * 10000 + b']' * 10000,
                     b'{"a":' * 10000 + b'1' + b'}' * 10000):
            r = post(body)
            assert r.status == 400, (body[:60], r)
            assert d.running(), 'daemon died on %r' % body[:60]

    @tap.test('test_unknown_jsonrpc_version_is_http_400')
    def _():
        r = post(b'{"jsonrpc":"3.0","method":"VM.get_all","params":[],'
                 b'"id":1}')
        assert r.status == 400, r

    @tap.test('test_OPTIONS_answers_with_CORS_headers')
    def _():
        for path in ('/jsonrpc', '/json', '/'):
            conn = d.conn()
            try:
                r = http_request(conn, 'OPTIONS', path, headers={
                    'Origin': 'http://example.com',
                    'Access-Control-Request-Method': 'POST'})
            finally:
                conn.close()
            assert r.status in (200, 204), (path, r)
            h = r.headers
            assert h.get('access-control-allow-origin') in (
                '*', 'http://example.com'), (path, h)
            assert 'POST' in h.get('access-control-allow-methods', ''), h
            assert 'content-type' in h.get('access-control-allow-headers',
                                           '').lower(), h

    @tap.test('test_POST_responses_carry_access_control_allow_origin')
    def _():
        r = d.jsonrpc('VM.get_all', [s])
        assert r.headers.get('access-control-allow-origin'), r.headers

    @tap.test('test_GET_on_jsonrpc_does_not_run_a_call')
    def _():
        conn = d.conn()
        try:
            r = http_request(conn, 'GET', '/jsonrpc')
        finally:
            conn.close()
        assert r.status in (200, 405), r
        assert b'"result"' not in r.body, r

    @tap.test('test_daemon_is_still_alive_after_the_jsonrpc_tests')
    def _():
        assert d.alive()
        assert result('VM.get_all', s)

finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
