"""xenapi_build — the PEP 517 build backend of the XenAPI Python SDK.

It builds the wheel (one module, XenAPI.py), the editable wheel (PEP 660:
a .pth file naming this folder) and the source archive with the standard
library only, so `pip install ./sdk/python` needs no download: pip's
isolated build environment has nothing to install ([build-system]
requires = []).  The project's name, version, summary and Python
requirement are read from pyproject.toml's [project] table.
"""
import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ['XenAPI.py']
SDIST_FILES = ['pyproject.toml', 'README.md', 'XenAPI.py',
               'build_backend/xenapi_build.py']
SDIST_DIRS = ['examples']
TAG = 'py3-none-any'


def _project():
    """The [project] table of pyproject.toml (name, version, description,
    requires-python, readme)."""
    path = os.path.join(HERE, 'pyproject.toml')
    try:
        import tomllib
    except ImportError:         # Python < 3.11: the few keys used here
        tomllib = None
    if tomllib is not None:
        with open(path, 'rb') as f:
            return tomllib.load(f)['project']
    table, out = None, {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if line.startswith('['):
                table = line
                continue
            m = re.match(r'^([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"\s*$', line)
            if table == '[project]' and m:
                out[m.group(1)] = m.group(2)
    return out


def _names():
    p = _project()
    name, version = p['name'], p['version']
    safe = re.sub(r'[-_.]+', '_', name)
    return p, name, version, safe


def _metadata():
    p, name, version, _ = _names()
    lines = ['Metadata-Version: 2.1', 'Name: ' + name, 'Version: ' + version]
    if p.get('description'):
        lines.append('Summary: ' + p['description'])
    if p.get('requires-python'):
        lines.append('Requires-Python: ' + p['requires-python'])
    body = ''
    readme = p.get('readme')
    if isinstance(readme, str) and os.path.exists(os.path.join(HERE, readme)):
        lines.append('Description-Content-Type: text/markdown')
        with open(os.path.join(HERE, readme), encoding='utf-8') as f:
            body = '\n' + f.read()
    return ('\n'.join(lines) + '\n' + body).encode('utf-8')


def _wheel_file():
    _, _, version, _ = _names()
    return ('Wheel-Version: 1.0\nGenerator: xenapi_build %s\n'
            'Root-Is-Purelib: true\nTag: %s\n' % (version, TAG)).encode()


def _dist_info():
    _, _, version, safe = _names()
    return '%s-%s.dist-info' % (safe, version)


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return '%s,sha256=%s,%d' % (arcname, digest.rstrip(b'=').decode(),
                                len(data))


def _write_wheel(wheel_directory, files):
    """Writes a wheel holding `files` ([(arcname, bytes)]) plus the
    .dist-info; returns its file name."""
    _, _, version, safe = _names()
    info = _dist_info()
    files = list(files) + [(info + '/METADATA', _metadata()),
                           (info + '/WHEEL', _wheel_file())]
    record = [_record_line(a, d) for a, d in files]
    record.append(info + '/RECORD,,')
    files.append((info + '/RECORD', ('\n'.join(record) + '\n').encode()))
    wheel_name = '%s-%s-%s.whl' % (safe, version, TAG)
    os.makedirs(wheel_directory, exist_ok=True)
    path = os.path.join(wheel_directory, wheel_name)
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for arcname, data in files:
            zi = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return wheel_name


def _read(rel):
    with open(os.path.join(HERE, rel), 'rb') as f:
        return f.read()


# ---- PEP 517 ----

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory,
                                     config_settings=None):
    info = _dist_info()
    d = os.path.join(metadata_directory, info)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'METADATA'), 'wb') as f:
        f.write(_metadata())
    with open(os.path.join(d, 'WHEEL'), 'wb') as f:
        f.write(_wheel_file())
    return info


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    return _write_wheel(wheel_directory, [(m, _read(m)) for m in MODULES])


def build_sdist(sdist_directory, config_settings=None):
    p, name, version, safe = _names()
    base = '%s-%s' % (safe, version)
    rels = list(SDIST_FILES)
    for d in SDIST_DIRS:
        for root, dirs, files in os.walk(os.path.join(HERE, d)):
            dirs[:] = sorted(x for x in dirs if x != '__pycache__')
            for fn in sorted(files):
                if not fn.endswith('.pyc'):
                    rels.append(os.path.relpath(os.path.join(root, fn), HERE))
    os.makedirs(sdist_directory, exist_ok=True)
    out = base + '.tar.gz'
    now = int(time.time())
    with tarfile.open(os.path.join(sdist_directory, out), 'w:gz',
                      format=tarfile.PAX_FORMAT) as t:
        entries = [(r, _read(r)) for r in rels if
                   os.path.exists(os.path.join(HERE, r))]
        entries.append(('PKG-INFO', _metadata()))
        for rel, data in entries:
            ti = tarfile.TarInfo('%s/%s' % (base, rel.replace(os.sep, '/')))
            ti.size = len(data)
            ti.mtime = now
            ti.mode = 0o755 if rel.startswith('examples/') else 0o644
            t.addfile(ti, io.BytesIO(data))
    return out


# ---- PEP 660 (pip install -e) ----

def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_editable(metadata_directory,
                                        config_settings=None):
    return prepare_metadata_for_build_wheel(metadata_directory,
                                            config_settings)


def build_editable(wheel_directory, config_settings=None,
                   metadata_directory=None):
    _, _, _, safe = _names()
    pth = (HERE + '\n').encode('utf-8')
    return _write_wheel(wheel_directory, [('__editable__.%s.pth' % safe,
                                           pth)])
