"""XenAPI — Python bindings for the XenAPI.

A client for any toolstack that speaks the XenAPI over XML-RPC (xapi-c,
XenServer, XCP-ng), with the interface of XenServer's XenAPI.py so that
existing scripts work unchanged:

    import XenAPI
    session = XenAPI.Session('https://pool-master', ignore_ssl=True)
    session.xenapi.login_with_password('root', password, '2.21', 'my-script')
    try:
        for ref in session.xenapi.VM.get_all():
            print(session.xenapi.VM.get_name_label(ref))
        task = session.xenapi.Async.VM.start(vm, False, False)
    except XenAPI.Failure as e:
        print(e.details)            # ['VM_BAD_POWER_STATE', ref, ...]
    finally:
        session.xenapi.logout()

How a call is made:

- `session.xenapi.<Class>.<message>(args...)` (and `Async.<Class>.<message>`)
  sends `<Class>.<message>(session_ref, args...)`: the session reference is
  inserted as the first argument.
- The XenAPI result envelope is unwrapped: `{'Status': 'Success', 'Value':
  v}` returns v; `{'Status': 'Failure', 'ErrorDescription': [code, ...]}`
  raises `Failure` whose `details` is that list.  A malformed envelope
  raises `xmlrpc.client.Fault(500, ...)`.
- `SESSION_INVALID` (the session expired or was logged out behind our
  back) logs in again with the method and arguments of the last login and
  repeats the call, three times at most, then raises
  `xmlrpc.client.Fault(500, ...)`; with no earlier login it raises
  `xmlrpc.client.Fault(401, 'You must log in')`.
- `login_with_password`, `slave_local_login_with_password` (any message
  whose name starts with `login` or `slave_local`) and `logout` are handled
  by the session itself: they take no session argument, and remember or
  forget the session reference.
- Values are XML-RPC's: ints arrive as decimal strings (XenAPI's
  convention), datetimes as `xmlrpc.client.DateTime`.

Transports: `Session(url)` speaks HTTP or HTTPS (`ignore_ssl=True` accepts
any certificate, e.g. the self-signed one a host makes for itself);
`xapi_local()` speaks HTTP over the toolstack's Unix socket.

Python 3 standard library only.
"""

import errno
import http.client
import os
import socket
import ssl
import xmlrpc.client

__all__ = ['Failure', 'Session', 'UDSHTTPConnection', 'UDSTransport',
           'xapi_local', 'API_VERSION_1_1', 'API_VERSION_1_2',
           'LOCAL_SOCKET', 'LOCAL_SOCKET_ENV']

__version__ = '0.1.0'

API_VERSION_1_1 = '1.1'
API_VERSION_1_2 = '1.2'

#: Where XenServer's toolstack listens for local clients.
LOCAL_SOCKET = '/var/lib/xcp/xapi'

#: The environment variable that overrides LOCAL_SOCKET for xapi_local().
LOCAL_SOCKET_ENV = 'XAPI_SOCKET'

# How many times a call is tried when the answer is SESSION_INVALID (each
# retry after a fresh login).
_TRIES = 3


class Failure(Exception):
    """A call answered with a XenAPI error.

    `details` is the ErrorDescription list: the error code followed by its
    parameters, all strings, e.g. ['HANDLE_INVALID', 'VM', 'OpaqueRef:x'].
    """

    def __init__(self, details):
        if isinstance(details, (list, tuple)):
            details = list(details)
        else:
            details = [details]
        Exception.__init__(self, details)
        self.details = details

    def __str__(self):
        return str(self.details)

    def _details_map(self):
        """The details as a dict {'0': code, '1': first parameter, ...}."""
        return {str(i): d for i, d in enumerate(self.details)}


class _SessionInvalid(object):
    """The marker _unwrap() returns for a SESSION_INVALID answer."""

    def __repr__(self):
        return '<XenAPI: SESSION_INVALID>'


_SESSION_INVALID = _SessionInvalid()


def _unwrap(response):
    """The Value of a XenAPI result envelope; raises Failure for an error
    other than SESSION_INVALID, which returns _SESSION_INVALID."""
    if not isinstance(response, dict) or 'Status' not in response:
        raise xmlrpc.client.Fault(
            500, 'Missing Status in response from server: %r' % (response,))
    if response['Status'] == 'Success':
        if 'Value' not in response:
            raise xmlrpc.client.Fault(
                500, 'Missing Value in response from server')
        return response['Value']
    description = response.get('ErrorDescription')
    if not isinstance(description, (list, tuple)):
        raise xmlrpc.client.Fault(
            500, 'Missing ErrorDescription in response from server')
    if description and description[0] == 'SESSION_INVALID':
        return _SESSION_INVALID
    raise Failure(description)


# ---- the Unix socket transport ----

class UDSHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket.

    The socket is `path`, or, when no path is given, the URL's host name
    with every '_' read as '/' (XenServer's convention: the host
    '_var_lib_xcp_xapi' means /var/lib/xcp/xapi)."""

    def __init__(self, host, port=None, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                 path=None):
        http.client.HTTPConnection.__init__(self, host, port, timeout)
        self.unix_path = path

    def connect(self):
        path = self.unix_path or self.host.replace('_', '/')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if self.timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(self.timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class UDSTransport(xmlrpc.client.Transport):
    """An xmlrpc.client transport over a Unix socket (see
    UDSHTTPConnection for how the socket is named).  The connection is
    kept open between calls."""

    def __init__(self, use_datetime=False, path=None, timeout=None):
        xmlrpc.client.Transport.__init__(self, use_datetime=use_datetime)
        self.unix_path = path
        self.timeout = timeout

    def add_extra_header(self, key, value):
        """Sends the header `key: value` with every request."""
        self._extra_headers.append((key, value))

    def make_connection(self, host):
        if self._connection and self._connection[0] == host:
            return self._connection[1]
        name = host if isinstance(host, str) else host[0]
        if self.timeout is None:
            conn = UDSHTTPConnection(name, path=self.unix_path)
        else:
            conn = UDSHTTPConnection(name, timeout=self.timeout,
                                     path=self.unix_path)
        self._connection = host, conn
        return conn


# ---- sessions ----

class _Dispatcher(object):
    """Builds a dotted message name from attribute accesses
    (`xenapi.Async.VM.start`) and sends it when called."""

    def __init__(self, API_version, send, name):
        self.__API_version = API_version
        self.__send = send
        self.__name = name

    def __repr__(self):
        if self.__name:
            return '<XenAPI._Dispatcher for %s>' % self.__name
        return '<XenAPI._Dispatcher>'

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        if self.__name is None:
            full = name
        else:
            full = '%s.%s' % (self.__name, name)
        return _Dispatcher(self.__API_version, self.__send, full)

    def __call__(self, *args):
        if self.__name is None:
            raise TypeError('XenAPI._Dispatcher: no message name to call')
        return self.__send(self.__name, args)


def _is_login(name):
    return name.startswith('login') or name.startswith('slave_local')


class Session(xmlrpc.client.ServerProxy):
    """A connection to a XenAPI server and the session logged in on it.

    `uri` is http://HOST[:PORT]/ or https://HOST[:PORT]/; `transport`,
    `encoding`, `verbose` and `allow_none` are xmlrpc.client.ServerProxy's;
    `ignore_ssl=True` skips the verification of the server's certificate.

    session.xenapi.login_with_password(user, password[, version,
    originator]) logs in; session.xenapi.<Class>.<message>(...) calls with
    the session inserted; session.xenapi.logout() logs out.  The session
    reference is `session.handle` (or `session._session`, which a script
    may also set to use a session it was given).  As an
    xmlrpc.client.ServerProxy, a Session is a context manager that closes
    its connection at the end of the `with` block (it does not log out).
    """

    def __init__(self, uri, transport=None, encoding=None, verbose=False,
                 allow_none=True, ignore_ssl=False):
        # set first: __getattr__ must never see them missing
        self._session = None
        self.last_login_method = None
        self.last_login_params = None
        self.API_version = API_VERSION_1_1
        context = None
        if ignore_ssl:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        xmlrpc.client.ServerProxy.__init__(
            self, uri, transport=transport, encoding=encoding,
            verbose=verbose, allow_none=allow_none, context=context)
        self.transport = transport

    # the wire

    def _call(self, methodname, params):
        """Sends one XML-RPC call (no session inserted, no unwrapping)."""
        method = xmlrpc.client.ServerProxy.__getattr__(self, methodname)
        return method(*params)

    def xenapi_request(self, methodname, params):
        """Calls the XenAPI message `methodname` with the session and
        `params` (a tuple); returns its Value or raises Failure."""
        params = tuple(params)
        bare = methodname[len('session.'):] \
            if methodname.startswith('session.') else methodname
        if _is_login(bare):
            self._login(bare, params)
            return None
        if bare == 'logout':
            self._logout()
            return None
        for _ in range(_TRIES):
            result = _unwrap(self._call(methodname,
                                        (self._session,) + params))
            if result is not _SESSION_INVALID:
                return result
            if not self.last_login_method:
                raise xmlrpc.client.Fault(401, 'You must log in')
            self._login(self.last_login_method, self.last_login_params)
        raise xmlrpc.client.Fault(
            500, 'Tried %d times to get a valid session, but failed'
            % _TRIES)

    def _login(self, method, params):
        try:
            result = _unwrap(self._call('session.%s' % method, params))
        except OSError as e:
            if isinstance(e, socket.timeout) or e.errno == errno.ETIMEDOUT:
                raise xmlrpc.client.Fault(504, 'The connection timed out')
            raise
        if result is _SESSION_INVALID:
            raise xmlrpc.client.Fault(
                500, 'Received SESSION_INVALID when logging in')
        self._session = result
        self.last_login_method = method
        self.last_login_params = params
        self.API_version = self._get_api_version()
        return result

    def _logout(self):
        try:
            if self._session is not None:
                if (self.last_login_method or '').startswith('slave_local'):
                    message = 'session.local_logout'
                else:
                    message = 'session.logout'
                # an already invalid session is as good as logged out
                _unwrap(self._call(message, (self._session,)))
        finally:
            self._session = None
            self.last_login_method = None
            self.last_login_params = None
            self.API_version = API_VERSION_1_1

    def _get_api_version(self):
        """The API version of the pool's master, as 'MAJOR.MINOR'."""
        pool = self.xenapi.pool.get_all()[0]
        host = self.xenapi.pool.get_master(pool)
        major = self.xenapi.host.get_API_version_major(host)
        minor = self.xenapi.host.get_API_version_minor(host)
        return '%s.%s' % (major, minor)

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        if name == 'handle':
            return self._session
        if name == 'xenapi':
            return _Dispatcher(self.API_version, self.xenapi_request, None)
        if _is_login(name):
            return lambda *params: self._login(name, params)
        if name == 'logout':
            return _Dispatcher(self.API_version, self.xenapi_request,
                               'logout')
        return xmlrpc.client.ServerProxy.__getattr__(self, name)


def xapi_local(path=None):
    """A Session over the local toolstack's Unix socket: `path`, else the
    environment variable XAPI_SOCKET, else /var/lib/xcp/xapi."""
    path = path or os.environ.get(LOCAL_SOCKET_ENV) or LOCAL_SOCKET
    return Session('http://localhost/', transport=UDSTransport(path=path))
