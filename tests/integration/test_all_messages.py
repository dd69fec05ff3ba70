#!/usr/bin/env python3
"""test_all_messages.py — sweeps the whole API as the datamodel (idl/)
describes it, over XML-RPC with Python's xmlrpc.client:

- every message (the published ones and the hidden extensions, and the
  Async.* form of the async ones), called with a bogus session and
  type-correct dummy arguments, answers SESSION_INVALID [ref] — never
  MESSAGE_METHOD_UNKNOWN;
- with a valid session, every 'custom' message without a hand-written
  handler (xapi/handlers.c) answers NOT_IMPLEMENTED [name] (MESSAGE_REMOVED
  for removed ones); the hand-written ones answer a XenAPI result or error;
- one object of every class with a plain create is created, then every
  field getter of every row of every class answers a value of the field's
  wire type, get_record carries exactly the class's fields with the right
  wire types (and agrees with the getters and get_all_records), and every
  reference in a record names an existing object whose partner field (see
  idl/relations.idl) points back.

One TAP line per class or per group of checks, with the mismatches as
details.  A few threads, each with one keep-alive connection, keep it
fast.  test_xmlrpc.py tests the same messages one behaviour at a time."""
import os
import queue
import re
import threading
import xmlrpc.client

from xapitest import (TOP, Daemon, XenAPIError, check, dummy_value,
                      finish_daemon, full_record, load_idl, start_or_bail, tap,
                      unwrap)

N_THREADS = 4
BOGUS = 'OpaqueRef:bogus-session-0000'

model = load_idl()
errors_known = {e.code for e in model.errors}
d = start_or_bail(Daemon(tls=False))


def handwritten():
    """Names registered in the handler tables (*_handlers[]) of xapi/*.c."""
    names = set()
    xdir = os.path.join(TOP, 'xapi')
    for fn in sorted(os.listdir(xdir)):
        if not fn.endswith('.c'):
            continue
        with open(os.path.join(xdir, fn)) as f:
            text = f.read()
        for m in re.finditer(r'api_handler_entry \w+handlers\[\] = \{(.*?)\};',
                             text, re.S):
            names |= set(re.findall(
                r'\{\s*"([A-Za-z0-9_]+\.[A-Za-z0-9_]+)"\s*,', m.group(1)))
    return names


def outcome(proxy, method, args):
    """('ok', value) | ('err', details) | ('bad', text)."""
    try:
        r = getattr(proxy, method)(*args)
    except xmlrpc.client.Fault as e:
        return 'bad', 'XML-RPC fault %r' % e
    except Exception as e:
        return 'bad', '%s: %s' % (type(e).__name__, e)
    try:
        return 'ok', unwrap(method, r)
    except XenAPIError as e:
        return 'err', e.details
    except AssertionError as e:
        return 'bad', str(e)


def parallel(jobs, fn):
    """Runs fn(proxy, job) for every job on N_THREADS connections; returns
    the results in order."""
    results = [None] * len(jobs)
    q = queue.Queue()
    for i, j in enumerate(jobs):
        q.put((i, j))

    def worker():
        proxy = d.proxy(timeout=20)
        while True:
            try:
                i, j = q.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = fn(proxy, j)
            except Exception as e:
                results[i] = ('bad', '%s: %s' % (type(e).__name__, e))
    ts = [threading.Thread(target=worker) for _ in range(N_THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def dummy_args(m, session):
    args = []
    for p in m.params:
        if p.name == 'session_id' and p.type.kind == 'ref' \
                and p.type.name == 'session':
            args.append(session)
        else:
            args.append(dummy_value(model, p.type))
    return args


def has_session(m):
    return bool(m.params) and m.params[0].name == 'session_id'


# ---- wire types ----

UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                     r'[0-9a-f]{12}$')
DATETIME_RE = re.compile(r'^\d{8}T\d\d:\d\d:\d\dZ$')
INT_RE = re.compile(r'^-?\d+$')


def wire_problems(t, v, where, out):
    """Appends to out what is wrong with v as the XML-RPC form of type t."""
    k = t.kind
    bad = lambda why: out.append('%s: %s, got %r' % (where, why, v)[:300])
    if k == 'string':
        if not isinstance(v, str):
            bad('string expected')
    elif k == 'int':
        if isinstance(v, bool) or not isinstance(v, str) or not INT_RE.match(v):
            bad('int as a decimal string expected')
    elif k == 'float':
        if not isinstance(v, float):
            bad('<double> expected')
    elif k == 'bool':
        if not isinstance(v, bool):
            bad('<boolean> expected')
    elif k == 'datetime':
        if not isinstance(v, xmlrpc.client.DateTime) \
                or not DATETIME_RE.match(v.value):
            bad('<dateTime.iso8601> as YYYYMMDDTHH:MM:SSZ expected')
    elif k == 'enum':
        values = [x for x, _ in model.enums[t.name].values]
        if not isinstance(v, str) or v not in values:
            bad('one of enum %s %s expected' % (t.name, values[:12]))
    elif k == 'ref':
        if not isinstance(v, str) or not v.startswith('OpaqueRef:'):
            bad('OpaqueRef:... string expected')
    elif k == 'set':
        if not isinstance(v, list):
            bad('<array> expected')
        else:
            for i, x in enumerate(v):
                wire_problems(t.elem, x, '%s[%d]' % (where, i), out)
    elif k == 'map':
        if not isinstance(v, dict):
            bad('<struct> expected')
        else:
            for key, x in v.items():
                wire_problems(t.key, key, '%s key %r' % (where, key), out)
                wire_problems(t.elem, x, '%s[%r]' % (where, key), out)
    elif k == 'option':
        if v != '' and v != []:
            wire_problems(t.elem, v, where, out)
    elif k == 'record':
        if not isinstance(v, dict):
            bad('<struct> expected')


def refs_in(t, v):
    """(class, ref) of every non-null reference inside v of type t."""
    k = t.kind
    if k == 'ref' and isinstance(v, str):
        if v.startswith('OpaqueRef:') and v != 'OpaqueRef:NULL':
            yield t.name, v
    elif k == 'set' and isinstance(v, list):
        for x in v:
            yield from refs_in(t.elem, x)
    elif k == 'map' and isinstance(v, dict):
        for key, x in v.items():
            yield from refs_in(t.key, key)
            yield from refs_in(t.elem, x)
    elif k == 'option':
        yield from refs_in(t.elem, v)


main = d.client()
try:
    session = d.login(main)
    hand = handwritten()
    all_msgs = [m for c in model.classes for m in c.messages]

    # ---- 1. every message with a bogus session ----

    jobs = []
    for m in all_msgs:
        if has_session(m):
            jobs.append((m, m.full_name))
            if m.async_:
                jobs.append((m, 'Async.' + m.full_name))
    res = parallel(jobs, lambda p, j: outcome(p, j[1], dummy_args(j[0], BOGUS)))
    by_class = {}
    for (m, name), (kind, val) in zip(jobs, res):
        probs = by_class.setdefault(m.cls.name, [])
        if kind != 'err' or val != ['SESSION_INVALID', BOGUS]:
            probs.append('%s -> %s %r' % (name, kind, val))
    n_async = sum(1 for _, n in jobs if n.startswith('Async.'))
    for cls in model.classes:
        probs = by_class.get(cls.name, [])
        check('test_every_%s_message_with_a_bogus_session_is_SESSION_INVALID'
              % cls.name, not probs, '\n'.join(probs[:30]))
    check('test_bogus_session_sweep_covered_every_message',
          len(jobs) - n_async == sum(1 for m in all_msgs if has_session(m))
          and sum(1 for m in all_msgs if not m.hidden) >= 1828,
          '%d calls, %d async, %d messages in the IDL (%d not hidden)'
          % (len(jobs), n_async, len(all_msgs),
             sum(1 for m in all_msgs if not m.hidden)))

    # ---- 2. the messages without a session ----

    @tap.test('test_sessionless_messages_are_known_and_reject_dummy_credentials')
    def _():
        probs = []
        for m in all_msgs:
            if has_session(m):
                continue
            kind, val = outcome(main.proxy, m.full_name,
                                dummy_args(m, None))
            want = ('SESSION_AUTHENTICATION_FAILED' if m.full_name in hand
                    else 'NOT_IMPLEMENTED')
            if kind != 'err' or val[0] != want:
                probs.append('%s -> %s %r (want %s)' % (m.full_name, kind,
                                                         val, want))
        assert not probs, '\n'.join(probs)

    # ---- 3. custom messages with a valid session ----

    def _result_problems(m, val):
        out = []
        if m.result.kind == 'void':
            if val != '':
                out.append('void result is %r, not ""' % (val,))
        else:
            wire_problems(m.result, val, m.full_name, out)
        return out


    @tap.test('test_custom_messages_without_a_handler_answer_NOT_IMPLEMENTED_name')
    def _():
        # the local superuser passes every RBAC check in XenAPI, even of
        # messages that list no role
        todo = [m for m in all_msgs if m.kind == 'custom' and has_session(m)
                and m.full_name not in hand]
        res = parallel(todo, lambda p, m: outcome(p, m.full_name,
                                                  dummy_args(m, session)))
        probs = []
        for m, (kind, val) in zip(todo, res):
            want = (['MESSAGE_REMOVED'] if m.lifecycle == 'removed'
                    else ['NOT_IMPLEMENTED', m.full_name])
            if kind == 'ok':
                continue        # implemented generically: a real result
            if val != want:
                probs.append('%s -> %s %r (want %r)' % (m.full_name, kind,
                                                         val, want))
        assert not probs, '%d of %d:\n%s' % (len(probs), len(todo),
                                             '\n'.join(probs[:40]))

    @tap.test('test_handwritten_messages_answer_a_XenAPI_result_or_error')
    def _():
        names = sorted(hand)
        unknown = [n for n in names
                   if not any(m.full_name == n for m in all_msgs)]
        assert not unknown, 'handlers.c names messages not in the IDL: %s' \
            % unknown
        probs = []
        main_s = [session]
        for n in names:
            m = next(x for x in all_msgs if x.full_name == n)
            if not has_session(m):
                continue
            # session messages get a throwaway session: logout must not
            # end ours
            s2 = d.login(main) if m.cls.name == 'session' else main_s[0]
            kind, val = outcome(main.proxy, n, dummy_args(m, s2))
            if kind == 'bad':
                probs.append('%s -> %s' % (n, val))
            elif kind == 'err' and (val[0] not in errors_known
                                    or val[0] in ('INTERNAL_ERROR',
                                                  'MESSAGE_METHOD_UNKNOWN',
                                                  'NOT_IMPLEMENTED',
                                                  'RBAC_PERMISSION_DENIED')):
                probs.append('%s -> %r' % (n, val))
            if kind == 'ok':
                probs += ['%s result' % p for p in
                          _result_problems(m, val)]
            if s2 is main_s[0] and outcome(main.proxy, 'pool.get_all',
                                           [s2])[0] != 'ok':
                probs.append('%s with dummy arguments ended the caller\'s '
                             'session' % n)
                main_s[0] = d.login(main)
        assert not probs, '\n'.join(probs)
        assert main_s[0] == session, 'our session was ended'

    # ---- 4. one object of every class with a plain create ----

    existing = {}
    for cls in model.classes:
        if 'get_all' in cls.standard:
            kind, refs = outcome(main.proxy, cls.name + '.get_all', [session])
            if kind == 'ok':
                existing[cls.name] = refs
    existing['session'] = [session]
    order = ['network', 'VM', 'VDI', 'VBD', 'VIF', 'console']
    def msg(cname, name):
        return next((m for m in model.cls(cname).messages if m.name == name),
                    None)

    def live(cname, name):
        """The class has the generated (standard) message and it is not
        removed."""
        m = msg(cname, name)
        return m is not None and m.kind == name and m.lifecycle != 'removed'

    # subject.create has behaviour (it resolves the identifier with the
    # external authentication service); test_external_auth.py covers it.
    creatable = [c for c in model.classes if live(c.name, 'create')
                 and c.name != 'subject']
    creatable.sort(key=lambda c: (order.index(c.name) if c.name in order
                                  else len(order), c.name))
    created = {}

    def ref_for(t):
        rows = existing.get(t.name) or []
        return rows[0] if rows else 'OpaqueRef:NULL'

    @tap.test('test_every_class_with_a_plain_create_creates_from_a_full_record')
    def _():
        probs = []
        for cls in creatable:
            rec = full_record(model, cls.name)
            for f in cls.fields:
                if f.name in rec and f.type.kind == 'ref':
                    rec[f.name] = ref_for(f.type)
            if cls.name == 'VM':
                rec.update(name_label='sweep VM', memory_static_max='1024',
                           memory_dynamic_max='1024', memory_static_min='1024',
                           memory_dynamic_min='1024', VCPUs_max='1',
                           VCPUs_at_startup='1')
            if cls.name == 'VBD':
                rec.update(userdevice='1', empty=True)
            if cls.name == 'VDI':
                # a disk the SR's driver makes: it needs a size
                rec.update(virtual_size=str(1 << 20))
            if cls.name == 'PBD':
                # one PBD per SR and host (PBD_EXISTS): an SR of its own
                kind, val = outcome(main.proxy, 'SR.introduce', [
                    session, '', 'sweep SR', '', 'file', 'user', False, {}])
                rec['SR'] = val
                existing.setdefault('SR', []).append(val)
            kind, val = outcome(main.proxy, cls.name + '.create',
                                [session, rec])
            if kind != 'ok':
                probs.append('%s.create -> %s %r' % (cls.name, kind, val))
                continue
            created[cls.name] = val
            existing.setdefault(cls.name, []).append(val)
            # what was given is what is stored
            kind, got = outcome(main.proxy, cls.name + '.get_record',
                                [session, val])
            if kind != 'ok':
                probs.append('%s.get_record of a new row -> %r'
                             % (cls.name, got))
                continue
            for f in cls.fields:
                if cls.name == 'VDI' and f.name == 'sm_config':
                    continue    # the driver adds its own keys
                if f.name in rec and f.name != 'uuid' and f.type.kind in (
                        'string', 'int', 'bool', 'ref', 'map', 'set') \
                        and got.get(f.name) != rec[f.name]:
                    probs.append('%s.%s: created with %r, reads %r'
                                 % (cls.name, f.name, rec[f.name],
                                    got.get(f.name)))
        assert not probs, '\n'.join(probs)

    # ---- 5. getters and records of every row ----

    rows = {name: list(refs) for name, refs in existing.items() if refs}
    getter_jobs = []
    for cls in model.classes:
        for ref in rows.get(cls.name, []):
            for m in cls.messages:
                if m.kind == 'get':
                    getter_jobs.append((cls, ref, m))
    getter_res = parallel(getter_jobs, lambda p, j: outcome(
        p, j[2].full_name, [session, j[1]]))
    print('# %d getter calls on %d rows of %d classes'
          % (len(getter_jobs), sum(len(v) for v in rows.values()), len(rows)))
    values = {}
    probs_by_class = {}
    for (cls, ref, m), (kind, val) in zip(getter_jobs, getter_res):
        probs = probs_by_class.setdefault(cls.name, [])
        if kind == 'err' and m.lifecycle == 'removed' \
                and val == ['MESSAGE_REMOVED']:
            continue
        if kind != 'ok':
            probs.append('%s(%s) -> %s %r' % (m.full_name, ref, kind, val))
            continue
        values[(cls.name, ref, m.field.name)] = val
        wire_problems(m.field.type, val, '%s(%s)' % (m.full_name, ref[:20]),
                      probs)
    for cls in model.classes:
        if cls.name not in rows or not cls.getters:
            continue
        probs = probs_by_class.get(cls.name, [])
        check('test_every_field_getter_of_every_%s_returns_its_wire_type'
              % cls.name, not probs,
              '%d problems:\n%s' % (len(probs), '\n'.join(probs[:30])))

    @tap.test('test_every_generic_setter_of_every_row_accepts_the_current_value')
    def _():
        jobs = []
        for cls in model.classes:
            for ref in rows.get(cls.name, []):
                for m in cls.messages:
                    key = (cls.name, ref, m.field.name if m.field else None)
                    if m.kind == 'set' and key in values:
                        jobs.append((m, ref, values[key]))
        res = parallel(jobs, lambda p, j: outcome(
            p, j[0].full_name, [session, j[1], j[2]]))
        probs = []
        for (m, ref, v), (kind, val) in zip(jobs, res):
            if m.lifecycle == 'removed' and val == ['MESSAGE_REMOVED']:
                continue
            if (kind, val) != ('ok', ''):
                probs.append('%s(%s, %r) -> %s %r' % (m.full_name, ref[:24],
                                                       v, kind, val))
        # the values are unchanged
        for (m, ref, v) in jobs:
            kind, now = outcome(main.proxy, '%s.get_%s' % (m.cls.name,
                                                           m.field.name),
                                [session, ref])
            if kind == 'ok' and now != v:
                probs.append('%s(%s): was %r, now %r' % (m.full_name,
                                                          ref[:24], v, now))
        print('# %d setter calls' % len(jobs))
        assert not probs, '%d problems:\n%s' % (len(probs),
                                                '\n'.join(probs[:30]))

    @tap.test('test_every_generic_map_and_set_mutator_of_every_row_works')
    def _():
        probs = []
        n = 0
        for cls in model.classes:
            for ref in rows.get(cls.name, []):
                for m in cls.messages:
                    if m.kind not in ('add_to', 'add') \
                            or m.lifecycle == 'removed':
                        continue
                    f = m.field
                    get = '%s.get_%s' % (cls.name, f.name)
                    if m.kind == 'add_to':
                        if f.type.key.kind != 'string' \
                                or f.type.elem.kind not in ('string', 'int',
                                                            'bool', 'float'):
                            continue
                        k, v = 'it-sweep-key', dummy_value(model, f.type.elem)
                        add = [session, ref, k, v]
                        rm = ('%s.remove_from_%s' % (cls.name, f.name),
                              [session, ref, k])
                        present = lambda x: isinstance(x, dict) and k in x
                    else:
                        if f.type.elem.kind not in ('string', 'enum'):
                            continue
                        v = ('it-sweep-member' if f.type.elem.kind == 'string'
                             else dummy_value(model, f.type.elem))
                        add = [session, ref, v]
                        rm = ('%s.remove_%s' % (cls.name, f.name),
                              [session, ref, v])
                        present = lambda x: isinstance(x, list) and v in x
                    n += 1
                    kind, before = outcome(main.proxy, get, [session, ref])
                    kind, val = outcome(main.proxy, m.full_name, add)
                    if (kind, val) != ('ok', ''):
                        probs.append('%s -> %s %r' % (m.full_name, kind, val))
                        continue
                    kind, mid = outcome(main.proxy, get, [session, ref])
                    if not present(mid):
                        probs.append('%s: not there after adding: %r'
                                     % (m.full_name, mid))
                    kind, val = outcome(main.proxy, *rm)
                    if (kind, val) != ('ok', ''):
                        probs.append('%s -> %s %r' % (rm[0], kind, val))
                    kind, after = outcome(main.proxy, get, [session, ref])
                    if after != before:
                        probs.append('%s then %s: %r became %r'
                                     % (m.full_name, rm[0], before, after))
        print('# %d map/set mutators tried' % n)
        assert not probs, '\n'.join(probs[:30])

    records = {}
    rec_jobs = [(cls, ref) for cls in model.classes
                for ref in rows.get(cls.name, [])
                if live(cls.name, 'get_record')]
    rec_res = parallel(rec_jobs, lambda p, j: outcome(
        p, j[0].name + '.get_record', [session, j[1]]))
    for (cls, ref), (kind, val) in zip(rec_jobs, rec_res):
        probs = []
        if kind != 'ok':
            probs.append('get_record(%s) -> %s %r' % (ref, kind, val))
        else:
            records[(cls.name, ref)] = val
            want = {f.name for f in cls.fields}
            got = set(val)
            if want != got:
                probs.append('%s: missing fields %s, extra fields %s'
                             % (ref, sorted(want - got), sorted(got - want)))
            for f in cls.fields:
                if f.name in val:
                    wire_problems(f.type, val[f.name],
                                  '%s.%s' % (ref[:20], f.name), probs)
                    g = values.get((cls.name, ref, f.name), val[f.name])
                    if g != val[f.name]:
                        probs.append('%s.%s: getter says %r, record %r'
                                     % (ref[:20], f.name, g, val[f.name]))
        by = probs_by_class.setdefault('rec:' + cls.name, [])
        by.extend(probs)
    for cls in model.classes:
        if cls.name not in rows or not live(cls.name, 'get_record'):
            continue
        probs = probs_by_class.get('rec:' + cls.name, [])
        check('test_get_record_of_every_%s_has_exactly_the_IDL_fields_with_wire_types'
              % cls.name, not probs,
              '%d problems:\n%s' % (len(probs), '\n'.join(probs[:30])))

    @tap.test('test_get_all_and_get_all_records_of_every_class_agree_with_get_record')
    def _():
        probs = []
        for cls in model.classes:
            if not live(cls.name, 'get_all_records'):
                continue
            kind, recs = outcome(main.proxy, cls.name + '.get_all_records',
                                 [session])
            if kind != 'ok':
                probs.append('%s.get_all_records -> %r' % (cls.name, recs))
                continue
            if not isinstance(recs, dict):
                probs.append('%s.get_all_records: %r' % (cls.name, recs))
                continue
            refs = existing.get(cls.name, [])
            if sorted(recs) != sorted(refs):
                probs.append('%s: get_all %s, get_all_records %s'
                             % (cls.name, refs, sorted(recs)))
            for ref, rec in recs.items():
                if (cls.name, ref) in records \
                        and records[(cls.name, ref)] != rec:
                    probs.append('%s %s: get_all_records differs from '
                                 'get_record' % (cls.name, ref))
            kind, where = outcome(main.proxy,
                                  cls.name + '.get_all_records_where',
                                  [session, 'true'])
            if kind != 'ok' or sorted(where) != sorted(recs):
                probs.append('%s.get_all_records_where "true" -> %s %r'
                             % (cls.name, kind, where if kind != 'ok'
                                else sorted(where)))
        assert not probs, '\n'.join(probs[:40])

    @tap.test('test_get_by_uuid_and_get_by_name_label_find_every_row')
    def _():
        probs = []
        for (cname, ref), rec in records.items():
            cls = model.cls(cname)
            if live(cname, 'get_by_uuid') and 'uuid' in rec:
                kind, r = outcome(main.proxy, cname + '.get_by_uuid',
                                  [session, rec['uuid']])
                if (kind, r) != ('ok', ref):
                    probs.append('%s.get_by_uuid(%s) -> %s %r, want %s'
                                 % (cname, rec['uuid'], kind, r, ref))
                if not UUID_RE.match(rec['uuid']):
                    probs.append('%s %s: uuid %r is not a uuid'
                                 % (cname, ref, rec['uuid']))
            if live(cname, 'get_by_name_label') and 'name_label' in rec:
                kind, r = outcome(main.proxy, cname + '.get_by_name_label',
                                  [session, rec['name_label']])
                if kind != 'ok' or ref not in r:
                    probs.append('%s.get_by_name_label(%r) -> %s %r, want '
                                 'it to hold %s' % (cname, rec['name_label'],
                                                    kind, r, ref))
        assert not probs, '\n'.join(probs[:40])

    @tap.test('test_every_reference_in_every_record_names_an_existing_object')
    def _():
        probs = []
        known = {}

        def exists(cname, ref):
            if ref in rows.get(cname, []):
                return True
            if (cname, ref) not in known:
                cls = model.cls(cname)
                if cls is None or 'get_record' not in cls.standard:
                    known[(cname, ref)] = True
                else:
                    kind, _ = outcome(main.proxy, cname + '.get_record',
                                      [session, ref])
                    known[(cname, ref)] = kind == 'ok'
            return known[(cname, ref)]
        for (cname, ref), rec in records.items():
            for f in model.cls(cname).fields:
                for tcls, r in refs_in(f.type, rec.get(f.name)):
                    if not exists(tcls, r):
                        probs.append('%s %s .%s = %s: no such %s'
                                     % (cname, ref, f.name, r, tcls))
        assert not probs, '\n'.join(probs[:40])

    @tap.test('test_both_sides_of_every_relation_agree')
    def _():
        probs = []
        for (cname, ref), rec in records.items():
            for f in model.cls(cname).fields:
                if not f.inverse or f.name not in rec:
                    continue
                ocls, ofield = f.inverse
                for tcls, r in refs_in(f.type, rec[f.name]):
                    other = records.get((ocls, r))
                    if other is None or ofield not in other:
                        continue
                    back = other[ofield]
                    ok = back == ref if isinstance(back, str) \
                        else ref in back
                    if not ok:
                        probs.append('%s %s .%s -> %s %s, whose .%s is %r'
                                     % (cname, ref[:24], f.name, ocls, r[:24],
                                        ofield, back))
        assert not probs, '\n'.join(probs[:40])

    @tap.test('test_created_objects_can_be_destroyed')
    def _():
        probs = []
        for cname in reversed([c.name for c in creatable]):
            ref = created.get(cname)
            if not ref or not live(cname, 'destroy'):
                continue
            kind, val = outcome(main.proxy, cname + '.destroy',
                                [session, ref])
            if (kind, val) != ('ok', ''):
                probs.append('%s.destroy -> %s %r' % (cname, kind, val))
                continue
            kind, val = outcome(main.proxy, cname + '.get_record',
                                [session, ref])
            if (kind, val) != ('err', ['HANDLE_INVALID', cname, ref]):
                probs.append('%s.get_record after destroy -> %s %r'
                             % (cname, kind, val))
        assert not probs, '\n'.join(probs)

    @tap.test('test_daemon_is_still_alive_after_the_sweep')
    def _():
        assert d.alive()
        main.VM.get_all(session)

finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
