#!/usr/bin/env python3
"""test_idl.py — checks that the datamodel in idl/ matches the reference
definition of the XenAPI (../shared/reference/xenapi.json and
xapi-errors.json): every class, field (type, qualifier, default,
lifecycle), message (parameters and their types, result type, errors,
roles, lifecycle), enum value and error code with its parameters.  Prints
TAP lines; skips with a message when ../shared is absent."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(TOP, 'idl'))
import idl  # noqa: E402

STATES = {'Published_s': 'published', 'Deprecated_s': 'deprecated',
          'Removed_s': 'removed', 'Prototyped_s': 'prototyped'}


def find_reference():
    for base in (os.environ.get('XAPI_SHARED'), os.path.join(TOP, '..', 'shared')):
        if base and os.path.exists(os.path.join(base, 'reference', 'xenapi.json')):
            return os.path.join(base, 'reference')
    return None


def main():
    ref = find_reference()
    results = []

    def report(name, problems):
        if problems:
            print('not ok - %s' % name)
            for p in problems[:40]:
                print('#   %s' % p)
            if len(problems) > 40:
                print('#   ... and %d more' % (len(problems) - 40))
        else:
            print('ok - %s' % name)
        results.append(not problems)

    if not ref:
        print('ok - idl_matches_reference # SKIP ../shared/reference not found')
        return 0
    model = idl.load()
    classes = json.load(open(os.path.join(ref, 'xenapi.json')))
    errors = json.load(open(os.path.join(ref, 'xapi-errors.json')))

    probs = []
    want = [c['name'] for c in classes]
    have = [c.name for c in model.classes]
    for n in sorted(set(want) ^ set(have)):
        probs.append('class %s: only in %s' % (n, 'reference' if n in want else 'idl'))
    report('idl_classes_match (%d)' % len(want), probs)

    fprobs, mprobs, eprobs = [], [], []
    nfields = nmsgs = nvals = 0
    for rc in classes:
        c = model.cls(rc['name'])
        if not c:
            continue
        if STATES[rc['lifecycle']['state']] != c.lifecycle:
            fprobs.append('%s: lifecycle' % c.name)
        rf = {f['name']: f for f in rc['fields']}
        for n in sorted(set(rf) ^ {f.name for f in c.fields}):
            fprobs.append('%s.%s: field only in %s' % (c.name, n, 'reference' if n in rf else 'idl'))
        for f in c.fields:
            r = rf.get(f.name)
            if not r:
                continue
            nfields += 1
            for what, a, b in (('type', f.type.text, r['type']),
                               ('qualifier', f.qualifier, r['qualifier']),
                               ('default', f.default, r.get('default')),
                               ('lifecycle', f.lifecycle, STATES[r['lifecycle']['state']])):
                if a != b:
                    fprobs.append('%s.%s: %s %r != %r' % (c.name, f.name, what, a, b))
        rm = {m['name']: m for m in rc['messages']}
        mine = {m.name: m for m in c.messages if not m.hidden}
        for n in sorted(set(rm) ^ set(mine)):
            mprobs.append('%s.%s: message only in %s' % (c.name, n, 'reference' if n in rm else 'idl'))
        for n, m in mine.items():
            r = rm.get(n)
            if not r:
                continue
            nmsgs += 1
            rp = [(p['name'], p['type']) for p in r['params']]
            mp = [(p.name, p.type.text) for p in m.params]
            checks = (('params', mp, rp),
                      ('result', m.result.text, r['result'][0]),
                      ('errors', m.errors if not m.implicit else [], [e['name'] for e in r['errors']]),
                      ('roles', m.roles, r['roles']),
                      ('lifecycle', m.lifecycle, STATES[r['lifecycle']['state']]),
                      ('implicit', m.implicit, r['implicit']))
            for what, a, b in checks:
                if a != b:
                    mprobs.append('%s.%s: %s %r != %r' % (c.name, n, what, a, b))
        re_ = {e['name']: [v['name'] for v in e['values']] for e in rc['enums']}
        me = {e.name: [v for v, _ in e.values] for e in c.enums}
        for n in sorted(set(re_) | set(me)):
            nvals += len(re_.get(n, []))
            if re_.get(n) != me.get(n):
                eprobs.append('%s: enum %s differs' % (c.name, n))
    report('idl_fields_match (%d fields)' % nfields, fprobs)
    report('idl_messages_match (%d messages)' % nmsgs, mprobs)
    report('idl_enums_match (%d values)' % nvals, eprobs)

    probs = []
    mine = {e.code: e.params for e in model.errors}
    for e in errors:
        if mine.get(e['name']) != e['params']:
            probs.append('error %s: %r != %r' % (e['name'], mine.get(e['name']), e['params']))
    for n in sorted(set(mine) - {e['name'] for e in errors}):
        probs.append('error %s: only in idl' % n)
    report('idl_errors_match (%d errors)' % len(errors), probs)

    total = sum(len(c['messages']) for c in classes)
    have = sum(1 for c in model.classes for m in c.messages if not m.hidden)
    report('idl_message_count (%d of %d)' % (have, total),
           [] if have == total else ['%d messages, reference has %d' % (have, total)])
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
