"""idl.py — reads the datamodel in idl/ (the project's own format) into
Python objects.  Used by the C generator (gen-c.py), the IDL check test
(tests/unit/test_idl.py) and, later, the SDK and CLI generators.

The format is described in idl/README.md.  Generated ("implicit") messages
such as VM.get_name_label are not written in the files: derive_messages()
computes them from the fields and each class's `standard:` list, exactly
as the API defines them.
"""
import json
import os
import re

ROLES = ['pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin',
         'vm-operator', 'read-only']
READER = 'read-only +client-cert'
WRITER = 'pool-operator'
LIFECYCLES = ('published', 'deprecated', 'removed', 'prototyped')
STANDARD = ['get_record', 'get_all', 'get_all_records', 'get_by_uuid',
            'get_by_name_label', 'create', 'destroy']
QUALIFIERS = ('RW', 'RO/runtime', 'RO/constructor')


class IdlError(Exception):
    pass


def parse_roles(text):
    """'vm-admin +client-cert' -> list of role names in XenAPI's order."""
    parts = text.split()
    if parts == ['none']:
        return []
    if not parts or parts[0] not in ROLES:
        raise IdlError('bad roles: %r' % text)
    roles = ROLES[:ROLES.index(parts[0]) + 1]
    for extra in parts[1:]:
        if extra != '+client-cert':
            raise IdlError('bad roles: %r' % text)
        if roles[-1] == 'read-only':
            roles.insert(len(roles) - 1, 'client-cert')
        else:
            roles.append('client-cert')
    return roles


class Type:
    """A parsed type expression such as '(string -> VM ref) map'."""

    def __init__(self, text):
        self.text = text
        t = text.strip()
        self.kind = None
        self.key = self.elem = None
        self.name = None
        if t.endswith(' option'):
            self.kind, self.elem = 'option', Type(t[:-7])
        elif t.endswith(' set'):
            self.kind, self.elem = 'set', Type(t[:-4])
        elif t.endswith(' map'):
            inner = t[:-4].strip()
            if not (inner.startswith('(') and inner.endswith(')')):
                raise IdlError('bad map type %r' % t)
            inner = inner[1:-1]
            depth, split = 0, -1
            for i, ch in enumerate(inner):
                if ch == '(':
                    depth += 1
                elif ch == ')':
                    depth -= 1
                elif depth == 0 and inner.startswith(' -> ', i):
                    split = i
                    break
            if split < 0:
                raise IdlError('bad map type %r' % t)
            self.kind = 'map'
            self.key, self.elem = Type(inner[:split]), Type(inner[split + 4:])
        elif t.endswith(' ref'):
            self.kind, self.name = 'ref', t[:-4]
        elif t.endswith(' record'):
            self.kind, self.name = 'record', t[:-7]
        elif t.startswith('enum '):
            self.kind, self.name = 'enum', t[5:]
        elif t in ('string', 'int', 'float', 'bool', 'datetime', 'void'):
            self.kind = t
        elif t == 'an event batch':
            # event.from answers a struct {events, valid_ref_counts, token}
            # that the datamodel does not describe as a record type.
            self.kind = 'any'
        else:
            raise IdlError('unknown type %r' % t)

    def __str__(self):
        return self.text


class Field:
    def __init__(self, cls, name, qualifier, type_, default):
        self.cls, self.name, self.qualifier = cls, name, qualifier
        self.type, self.default = type_, default
        self.doc = ''
        self.lifecycle = cls.lifecycle
        self.tag = ''
        self.roles = {}       # 'get'/'set' -> role text
        self.inverse = None   # (class, field) of a relation partner
        self.persist = True   # kept across restarts (runtime statistics are not)
        self.relation_set = False  # this set is computed from the partner


class Param:
    def __init__(self, name, type_, default=None, doc=''):
        self.name, self.type, self.default, self.doc = name, type_, default, doc


class Message:
    def __init__(self, cls, name):
        self.cls, self.name = cls, name
        self.doc = ''
        self.params = []
        self.result = Type('void')
        self.errors = []
        self.roles = []
        self.lifecycle = cls.lifecycle
        self.tag = ''
        self.async_ = None        # None: decided by the rule in finish()
        self.implicit = False
        self.kind = 'custom'      # or get/set/add_to/.../get_record/...
        self.field = None
        self.hidden = False       # an extension not in the reference

    @property
    def full_name(self):
        return '%s.%s' % (self.cls.name, self.name)


class Enum:
    def __init__(self, cls, name):
        self.cls, self.name = cls, name
        self.doc = ''
        self.values = []   # (name, doc)


class Class:
    def __init__(self, name):
        self.name = name
        self.doc = ''
        self.lifecycle = 'published'
        self.tag = ''
        self.getters = True
        self.standard = []
        self.std_roles = {}
        self.std_lifecycle = {}
        self.persist = True
        self.fields = []
        self.enums = []
        self.messages = []     # explicit ones, then derived ones appended

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        return None


class Error:
    def __init__(self, code, params):
        self.code, self.params = code, params
        self.doc = ''


class Model:
    def __init__(self):
        self.classes = []
        self.errors = []
        self.enums = {}

    def cls(self, name):
        for c in self.classes:
            if c.name == name:
                return c
        return None


def _split_default(text):
    if ' = ' in text:
        a, b = text.split(' = ', 1)
        return a.strip(), b.strip()
    return text.strip(), None


def parse_class_file(path):
    cls = None
    cur = None
    with open(path) as fp:
        lines = fp.read().split('\n')
    for lineno, raw in enumerate(lines, 1):
        where = '%s:%d' % (path, lineno)
        if not raw.strip() or raw.lstrip().startswith('#'):
            continue
        try:
            if not raw.startswith(' '):
                word, _, rest = raw.partition(' ')
                if word == 'class':
                    cls = cur = Class(rest.strip())
                elif word == 'enum':
                    cur = Enum(cls, rest.strip())
                    cls.enums.append(cur)
                elif word == 'field':
                    m = re.match(r'^(\S+) (\S+) : (.*)$', rest)
                    if not m:
                        raise IdlError('bad field line')
                    t, default = _split_default(m.group(3))
                    if m.group(2) not in QUALIFIERS:
                        raise IdlError('bad qualifier %r' % m.group(2))
                    cur = Field(cls, m.group(1), m.group(2), Type(t), default)
                    cls.fields.append(cur)
                elif word == 'message':
                    cur = Message(cls, rest.strip())
                    cls.messages.append(cur)
                else:
                    raise IdlError('unknown entry %r' % word)
                continue
            line = raw.strip()
            if isinstance(cur, Enum) and line.startswith('value '):
                name, _, doc = line[6:].partition(':')
                cur.values.append((name.strip(), doc.strip()))
                continue
            if isinstance(cur, Message) and line.startswith('param '):
                body = line[6:]
                parts = body.split(' : ')
                name = parts[0].strip()
                t, default = _split_default(parts[1])
                doc = ' : '.join(parts[2:]).strip()
                cur.params.append(Param(name, Type(t),
                                        json.loads(default) if default is not None else None,
                                        doc))
                continue
            key, _, val = line.partition(':')
            key, val = key.strip(), val.strip()
            if key == 'doc':
                cur.doc = val
            elif key == 'lifecycle' and cur is not None:
                if val not in LIFECYCLES:
                    raise IdlError('bad lifecycle %r' % val)
                cur.lifecycle = val
            elif key == 'tag':
                cur.tag = val
            elif isinstance(cur, Class) and key == 'getters':
                cur.getters = val != 'no'
            elif isinstance(cur, (Class, Field)) and key == 'persist':
                cur.persist = val != 'no'
            elif isinstance(cur, Class) and key == 'standard':
                cur.standard = [] if val == 'none' else val.split()
                for s in cur.standard:
                    if s not in STANDARD:
                        raise IdlError('unknown standard message %r' % s)
            elif isinstance(cur, Class) and key.startswith('roles.'):
                parse_roles(val)
                cur.std_roles[key[6:]] = val
            elif isinstance(cur, Class) and key.startswith('lifecycle.'):
                cur.std_lifecycle[key[10:]] = val
            elif isinstance(cur, Field) and key in ('roles.get', 'roles.set'):
                parse_roles(val)
                cur.roles[key[6:]] = val
            elif isinstance(cur, Message) and key == 'result':
                t = val.split(' : ')[0]
                cur.result = Type(t)
            elif isinstance(cur, Message) and key == 'errors':
                cur.errors = val.split()
            elif isinstance(cur, Message) and key == 'roles':
                cur.roles = parse_roles(val)
            elif isinstance(cur, Message) and key == 'async':
                cur.async_ = val == 'yes'
            elif isinstance(cur, Message) and key == 'hidden':
                cur.hidden = val == 'yes'
            else:
                raise IdlError('unknown attribute %r' % key)
        except IdlError as e:
            raise IdlError('%s: %s' % (where, e))
        except (IndexError, ValueError, AttributeError) as e:
            raise IdlError('%s: cannot parse (%s)' % (where, e))
    return cls


def parse_errors_file(path):
    errors = []
    cur = None
    with open(path) as fp:
        for lineno, raw in enumerate(fp, 1):
            raw = raw.rstrip('\n')
            if not raw.strip() or raw.lstrip().startswith('#'):
                continue
            if raw.startswith('error '):
                # error CODE ["param", ...] (JSON, since some parameter
                # names contain spaces) or error CODE p1 p2 ...
                code, _, rest = raw[6:].strip().partition(' ')
                rest = rest.strip()
                params = json.loads(rest) if rest.startswith('[') else rest.split()
                cur = Error(code, params)
                errors.append(cur)
            elif raw.strip().startswith('doc:') and cur:
                cur.doc = raw.strip()[4:].strip()
            else:
                raise IdlError('%s:%d: cannot parse' % (path, lineno))
    return errors


def parse_relations_file(path, model):
    with open(path) as fp:
        for lineno, raw in enumerate(fp, 1):
            line = raw.split('#', 1)[0].strip()
            if not line:
                continue
            m = re.match(r'^relation (\w+)\.(\w+) <-> (\w+)\.(\w+)$', line)
            if not m:
                raise IdlError('%s:%d: bad relation' % (path, lineno))
            a = model.cls(m.group(1))
            b = model.cls(m.group(3))
            fa = a and a.field(m.group(2))
            fb = b and b.field(m.group(4))
            if not fa or not fb:
                raise IdlError('%s:%d: unknown field in relation' % (path, lineno))
            fa.inverse = (b.name, fb.name)
            fb.inverse = (a.name, fa.name)
            # The set side of a one-to-many relation is computed from the
            # ref side; in a many-to-many relation both sides are stored
            # and kept mirrored.
            if fb.type.kind == 'set' and fa.type.kind == 'ref':
                fb.relation_set = True


def _mk(cls, name, kind, params, result, roles, lifecycle, field=None):
    m = Message(cls, name)
    m.kind, m.field, m.implicit = kind, field, True
    m.params = params
    m.result = Type(result)
    m.roles = parse_roles(roles)
    m.lifecycle = lifecycle
    return m


def derive_messages(cls):
    """Appends the generated messages of cls (getters, setters, map/set
    mutators, standard messages) in a fixed order."""
    explicit = {m.name for m in cls.messages}
    sess = Param('session_id', Type('session ref'))
    selfp = Param('self', Type('%s ref' % cls.name))
    out = []
    for f in cls.fields:
        roles_get = f.roles.get('get', READER)
        roles_set = f.roles.get('set', WRITER)
        if cls.getters and 'get_' + f.name not in explicit:
            out.append(_mk(cls, 'get_' + f.name, 'get', [sess, selfp], f.type.text,
                           roles_get, f.lifecycle, f))
        if f.qualifier != 'RW':
            continue
        muts = [('set_', 'set', [Param('value', f.type)])]
        if f.type.kind == 'map':
            muts += [('add_to_', 'add_to', [Param('key', f.type.key), Param('value', f.type.elem)]),
                     ('remove_from_', 'remove_from', [Param('key', f.type.key)])]
        if f.type.kind == 'set':
            muts += [('add_', 'add', [Param('value', f.type.elem)]),
                     ('remove_', 'remove', [Param('value', f.type.elem)])]
        for prefix, kind, extra in muts:
            if prefix + f.name in explicit:
                continue
            out.append(_mk(cls, prefix + f.name, kind, [sess, selfp] + extra, 'void',
                           roles_set, f.lifecycle, f))
    rec = '%s record' % cls.name
    ref = '%s ref' % cls.name
    std = {
        'get_record': ([sess, selfp], rec),
        'get_all': ([sess], ref + ' set'),
        'get_all_records': ([sess], '(%s -> %s) map' % (ref, rec)),
        'get_by_uuid': ([sess, Param('uuid', Type('string'))], ref),
        'get_by_name_label': ([sess, Param('label', Type('string'))], ref + ' set'),
        'create': ([sess, Param('args', Type(rec))], ref),
        'destroy': ([sess, selfp], 'void'),
    }
    for s in cls.standard:
        if s in explicit:
            continue
        params, result = std[s]
        default = WRITER if s in ('create', 'destroy') else READER
        m = _mk(cls, s, s, params, result, cls.std_roles.get(s, default),
                cls.std_lifecycle.get(s, cls.lifecycle))
        if s in ('create', 'destroy'):
            m.async_ = True
        out.append(m)
    # XenAPI also answers <class>.get_all_records_where for every class with
    # get_all_records, though it is not in the published reference.
    if 'get_all_records' in cls.standard and 'get_all_records_where' not in explicit:
        m = _mk(cls, 'get_all_records_where', 'get_all_records_where',
                [sess, Param('expr', Type('string'))],
                '(%s -> %s) map' % (ref, rec), READER, cls.lifecycle)
        m.hidden = True
        out.append(m)
    for m in out:
        if m.async_ is None:
            m.async_ = False
    cls.messages.extend(out)


def load(idl_dir=None):
    if idl_dir is None:
        idl_dir = os.path.dirname(os.path.abspath(__file__))
    model = Model()
    cdir = os.path.join(idl_dir, 'classes')
    for fn in sorted(os.listdir(cdir)):
        if fn.endswith('.idl'):
            model.classes.append(parse_class_file(os.path.join(cdir, fn)))
    model.errors = parse_errors_file(os.path.join(idl_dir, 'errors.idl'))
    rel = os.path.join(idl_dir, 'relations.idl')
    if os.path.exists(rel):
        parse_relations_file(rel, model)
    for c in model.classes:
        for e in c.enums:
            # The reference repeats an enum in every class that uses it;
            # the copies must agree.
            prev = model.enums.get(e.name)
            if prev and [v for v, _ in prev.values] != [v for v, _ in e.values]:
                raise IdlError('enum %s defined twice, differently' % e.name)
            model.enums.setdefault(e.name, e)
    for c in model.classes:
        for m in c.messages:
            if m.async_ is None:
                raise IdlError('%s: missing "async: yes|no"' % m.full_name)
        derive_messages(c)
    check(model)
    return model


def check(model):
    names = {c.name for c in model.classes}
    errs = {e.code for e in model.errors}

    def check_type(t, where):
        if t.kind in ('ref', 'record') and t.name not in names and t.name != '<class>':
            raise IdlError('%s: unknown class %s' % (where, t.name))
        if t.kind == 'enum' and t.name not in model.enums:
            raise IdlError('%s: unknown enum %s' % (where, t.name))
        for sub in (t.key, t.elem):
            if sub:
                check_type(sub, where)

    for c in model.classes:
        seen = set()
        for f in c.fields:
            check_type(f.type, '%s.%s' % (c.name, f.name))
        for m in c.messages:
            if m.name in seen:
                raise IdlError('%s.%s defined twice' % (c.name, m.name))
            seen.add(m.name)
            for p in m.params:
                check_type(p.type, m.full_name)
            check_type(m.result, m.full_name)
            for e in m.errors:
                if e not in errs:
                    raise IdlError('%s: unknown error %s' % (m.full_name, e))
