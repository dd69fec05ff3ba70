#!/usr/bin/env python3
"""import-reference.py — one-time bootstrap of idl/ from the reference.

Reads ../shared/reference/xenapi.json and xapi-errors.json and writes the
interface facts (names, types, qualifiers, defaults, parameters, errors,
roles, lifecycle states) into idl/classes/*.idl and idl/errors.idl in the
project's own format (see idl/README.md).  Descriptions are NOT taken from
the reference: they are written by hand in the .idl files; this script
leaves "TODO" placeholders.  After the bootstrap the .idl files are the
source of truth; do not re-run this over edited files (it refuses to
overwrite unless --force).
"""
import json
import os
import sys

HIER = ['pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin',
        'vm-operator', 'read-only']
STATES = {'Published_s': 'published', 'Deprecated_s': 'deprecated',
          'Removed_s': 'removed', 'Prototyped_s': 'prototyped'}
STANDARD = ['get_record', 'get_all', 'get_all_records', 'get_by_uuid',
            'get_by_name_label', 'create', 'destroy']
READER = 'read-only +client-cert'
WRITER = 'pool-operator'


def roles_text(roles):
    if not roles:
        return 'none'
    plain = [r for r in roles if r != 'client-cert']
    assert plain == HIER[:len(plain)], roles
    text = plain[-1]
    if 'client-cert' in roles:
        text += ' +client-cert'
    return text


def main():
    force = '--force' in sys.argv
    here = os.path.dirname(os.path.abspath(__file__))
    ref = os.path.join(here, '..', '..', 'shared', 'reference')
    classes = json.load(open(os.path.join(ref, 'xenapi.json')))
    errors = json.load(open(os.path.join(ref, 'xapi-errors.json')))
    outdir = os.path.join(here, 'classes')
    if os.listdir(outdir) and not force:
        sys.exit('idl/classes is not empty; refusing to overwrite (--force)')

    for c in classes:
        name = c['name']
        state = STATES[c['lifecycle']['state']]
        msgs = {m['name']: m for m in c['messages']}
        out = []
        out.append('# %s.idl: the %s class of the datamodel (see idl/README.md).' % (name, name))
        out.append('')
        out.append('class %s' % name)
        out.append('  doc: TODO')
        out.append('  lifecycle: %s' % state)
        if c['tag']:
            out.append('  tag: %s' % c['tag'])
        has_getters = any(('get_' + f['name']) in msgs and msgs['get_' + f['name']]['implicit']
                          for f in c['fields'])
        if c['fields'] and not has_getters:
            out.append('  getters: no')
        std = [s for s in STANDARD if s in msgs and msgs[s]['implicit']]
        out.append('  standard: %s' % (' '.join(std) if std else 'none'))
        for s in std:
            m = msgs[s]
            default = WRITER if s in ('create', 'destroy') else READER
            if roles_text(m['roles']) != default:
                out.append('  roles.%s: %s' % (s, roles_text(m['roles'])))
            if STATES[m['lifecycle']['state']] != state:
                out.append('  lifecycle.%s: %s' % (s, STATES[m['lifecycle']['state']]))
        out.append('')

        for e in c['enums']:
            out.append('enum %s' % e['name'])
            out.append('  doc: TODO')
            for v in e['values']:
                out.append('  value %s: TODO' % v['name'])
            out.append('')

        for f in c['fields']:
            fn = f['name']
            line = 'field %s %s : %s' % (fn, f['qualifier'], f['type'])
            if f.get('default') is not None:
                line += ' = ' + f['default']
            out.append(line)
            out.append('  doc: TODO')
            fstate = STATES[f['lifecycle']['state']]
            if fstate != state:
                out.append('  lifecycle: %s' % fstate)
            if f['tag']:
                out.append('  tag: %s' % f['tag'])
            g = msgs.get('get_' + fn)
            if g and g['implicit'] and roles_text(g['roles']) != READER:
                out.append('  roles.get: %s' % roles_text(g['roles']))
            s = msgs.get('set_' + fn)
            if s and s['implicit'] and roles_text(s['roles']) != WRITER:
                out.append('  roles.set: %s' % roles_text(s['roles']))
            out.append('')

        for m in c['messages']:
            if m['implicit']:
                continue
            out.append('message %s' % m['name'])
            out.append('  doc: TODO')
            for p in m['params']:
                out.append('  param %s : %s' % (p['name'], p['type']))
            res = m['result']
            out.append('  result: %s' % res[0])
            if m['errors']:
                out.append('  errors: %s' % ' '.join(e['name'] for e in m['errors']))
            out.append('  roles: %s' % roles_text(m['roles']))
            mstate = STATES[m['lifecycle']['state']]
            if mstate != state:
                out.append('  lifecycle: %s' % mstate)
            if m['tag']:
                out.append('  tag: %s' % m['tag'])
            out.append('')

        with open(os.path.join(outdir, name + '.idl'), 'w') as fp:
            fp.write('\n'.join(out).rstrip('\n') + '\n')

    out = ['# errors.idl: every error code of the API with its parameter names.', '']
    for e in errors:
        out.append('error %s%s' % (e['name'], ''.join(' ' + p for p in e['params'])))
        out.append('  doc: TODO')
        out.append('')
    with open(os.path.join(here, 'errors.idl'), 'w') as fp:
        fp.write('\n'.join(out).rstrip('\n') + '\n')


if __name__ == '__main__':
    main()
