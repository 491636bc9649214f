"""HTTP transport: urllib3 connection pools for one EBS endpoint, with botocore's error mapping.

``Transport.send()`` returns urllib3's response unread (streaming), so the caller decides how
the body is consumed: whole (``read``), into its own memory (``readinto``), or later straight
from the socket by native code. Every urllib3 and socket error leaves as the botocore-shaped
error from :mod:`ebsfast.exceptions` that boto3 would raise for it, chained to the original.

Settings are botocore's (``httpsession.py``, ``endpoint.py``, ``args.py``), resolved here:

- ``verify``: ``False`` turns TLS verification off; a path is a CA bundle (file or directory);
  ``True`` trusts certifi's bundle when certifi is installed, else the system store; ``None``
  (the default, as in ``boto3.client``) takes ``AWS_CA_BUNDLE``, then the profile's
  ``ca_bundle``, then ``REQUESTS_CA_BUNDLE``, then behaves as ``True``.
- proxies: ``Config.proxies`` when set (used as given); otherwise ``http_proxy``/``https_proxy``
  from the environment (lower case wins, as in urllib), skipped for hosts in ``no_proxy``.
  ``Config.proxies_config`` keys ``proxy_ca_bundle``, ``proxy_client_cert`` and
  ``proxy_use_forwarding_for_https`` apply; ``user:pass@`` in a proxy URL becomes
  ``Proxy-Authorization: Basic``.
- ``Config.tcp_keepalive`` (else ``BOTOCORE_TCP_KEEPALIVE``, else the profile's
  ``tcp_keepalive``) adds SO_KEEPALIVE; ``Config.client_cert`` is a cert path or
  ``(cert, key)``.
- The pool keeps at most ``max_pool_connections`` idle connections per host and, like botocore,
  does not block when all are busy: an extra connection is opened and closed after use.
"""
from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3 import exceptions as _u3
from urllib3.connection import HTTPConnection
from urllib3.util.proxy import connection_requires_http_tunnel
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from . import exceptions as _exc
from .config import as_config

logger = logging.getLogger(__name__)

# urllib3 2 sends file bodies in 16 KiB pieces by default; botocore measured 128 KiB as the
# point of diminishing returns for large transfers, and a block is 512 KiB.
BLOCKSIZE = 128 * 1024

# One shared instance: urllib3 returns a Retry given to it unchanged, so this saves building a
# new one per request. total=False makes urllib3 re-raise the first error as it is.
_NO_RETRIES = Retry(total=False, redirect=False, raise_on_redirect=False)


def _ensure_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def default_ca_bundle() -> str | None:
    """certifi's bundle (what botocore trusts), or None for the system store."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def resolve_verify(verify: bool | str | None, environ: Mapping[str, str],
                   profile_config: Mapping[str, Any] | None = None) -> bool | str:
    """The verify value boto3 would use: see the module docstring."""
    if verify is not None:
        return verify
    bundle = environ.get("AWS_CA_BUNDLE") or (profile_config or {}).get("ca_bundle")
    if bundle:
        return bundle
    return environ.get("REQUESTS_CA_BUNDLE") or True


def environ_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``scheme -> proxy URL`` (and ``"no" -> no_proxy``) from the environment, as urllib's
    ``getproxies_environment`` reads ``os.environ``: a lower-case variable beats its upper-case
    twin, an empty lower-case one removes it, and a CGI request (``REQUEST_METHOD`` set)
    ignores ``HTTP_PROXY``, which a client could set through the ``Proxy:`` header
    (CVE-2016-1000110)."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        key = name.lower()
        if value and key.endswith("_proxy"):
            proxies[key[:-6]] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy") and name == name.lower():
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


def bypass_proxy(host: str, port: int | None, no_proxy: str | None) -> bool:
    """Whether ``no_proxy`` names this host, by urllib's rules: ``*`` matches all; an entry
    matches the host (or ``host:port``) itself or any name under it; a leading dot is ignored.
    Like botocore (through urllib) there is no CIDR matching."""
    if not no_proxy:
        return False
    if no_proxy.strip() == "*":
        return True
    host = host.lower().strip("[]")
    hostport = f"{host}:{port}" if port else host
    for entry in no_proxy.split(","):
        entry = entry.strip().lstrip(".").lower()
        if not entry:
            continue
        entry = entry.strip("[]") if entry.startswith("[") and entry.endswith("]") else entry
        if host == entry or hostport == entry:
            return True
        suffix = "." + entry
        if host.endswith(suffix) or hostport.endswith(suffix):
            return True
    return False


def _fix_proxy_url(url: str) -> str:
    if url.startswith(("http:", "https:")):
        return url
    if url.startswith("//"):
        return "http:" + url
    return "http://" + url


def mask_proxy_url(url: str) -> str:
    """The proxy URL with any user name and password replaced by ``***``."""
    parts = urlsplit(url)
    if not (parts.username or parts.password) or "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    masked = "***:***" if ":" in userinfo else "***"
    return parts._replace(netloc=f"{masked}@{hostport}").geturl()


def _proxy_headers(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    if parts.username and parts.password:
        token = f"{unquote(parts.username)}:{unquote(parts.password)}".encode("latin-1")
        return {"Proxy-Authorization": "Basic " + base64.b64encode(token).decode("ascii")}
    return {}


def _load_cert(ctx: ssl.SSLContext, cert: str | tuple[str, str]) -> None:
    if isinstance(cert, (tuple, list)):
        ctx.load_cert_chain(cert[0], keyfile=cert[1])
    else:
        ctx.load_cert_chain(cert)


class _Route:
    """Where requests for one (scheme, host, port) go: a pool, and how to name the target."""

    __slots__ = ("absolute_target", "base_url", "path_prefix", "pool", "proxy_url")

    def __init__(self, pool, absolute_target: bool, proxy_url: str | None, base_url: str,
                 path_prefix: str):
        self.pool = pool
        self.absolute_target = absolute_target
        self.proxy_url = proxy_url
        self.base_url = base_url
        self.path_prefix = path_prefix


class Transport:
    """Pooled HTTP(S) connections to one endpoint; safe to share between threads.

    ``Transport(endpoint_url, verify=None, config=Config(), environ=None, profile_config=None)``
    where ``environ`` defaults to ``os.environ`` and ``profile_config`` is the active profile's
    settings (``ca_bundle``, ``tcp_keepalive``) from the shared config file.
    """

    def __init__(self, endpoint_url: str, *, verify: bool | str | None = None,
                 config: Any = None, environ: Mapping[str, str] | None = None,
                 profile_config: Mapping[str, Any] | None = None):
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint_url must be an http:// or https:// URL with a host, "
                             f"got {endpoint_url!r}")
        cfg = as_config(config)
        env = os.environ if environ is None else environ
        profile = profile_config or {}
        self.endpoint_url = endpoint_url.rstrip("/")
        self._endpoint_key = (parts.scheme, parts.hostname, parts.port)
        self._endpoint_base = f"{parts.scheme}://{parts.netloc}"
        self._endpoint_prefix = parts.path.rstrip("/")
        self.verify = resolve_verify(verify, env, profile)
        self.max_pool_connections = cfg.max_pool_connections
        self.timeout = urllib3.Timeout(connect=cfg.connect_timeout, read=cfg.read_timeout)

        keepalive = cfg.tcp_keepalive
        if keepalive is None:
            keepalive = env.get("BOTOCORE_TCP_KEEPALIVE", profile.get("tcp_keepalive"))
        self.tcp_keepalive = bool(keepalive is not None and _ensure_boolean(keepalive))
        socket_options = list(HTTPConnection.default_socket_options)  # TCP_NODELAY
        if self.tcp_keepalive:
            socket_options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))

        if cfg.proxies is not None:
            self._proxies = {k: _fix_proxy_url(v) for k, v in cfg.proxies.items()
                             if k in ("http", "https") and v}
            self._no_proxy = None  # as botocore: explicit proxies apply to every host
        else:
            env_proxies = environ_proxies(env)
            self._proxies = {k: _fix_proxy_url(v) for k, v in env_proxies.items()
                             if k in ("http", "https")}
            self._no_proxy = env_proxies.get("no")
        self._proxies_config = dict(cfg.proxies_config or {})

        self._pool_kwargs: dict[str, Any] = {
            "timeout": self.timeout,
            "maxsize": cfg.max_pool_connections,
            "block": False,
            "socket_options": socket_options,
            "blocksize": BLOCKSIZE,
            "ssl_context": self._make_ssl_context(self.verify, cfg.client_cert),
        }
        if self.verify is False:
            # urllib3 sets each new connection's verify_mode from cert_reqs, over the context's
            self._pool_kwargs.update(cert_reqs="CERT_NONE", assert_hostname=False)
        else:
            self._pool_kwargs["cert_reqs"] = "CERT_REQUIRED"

        self._lock = threading.Lock()
        self._manager: urllib3.PoolManager | None = None
        self._proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self._routes: dict[tuple[str, str, int | None], _Route] = {}
        # (pool, connection) pairs given back in good order, for checkout (list.append and
        # list.pop are atomic, so no lock)
        self._idle: list = []

    # -- setup --------------------------------------------------------------------------------
    @staticmethod
    def _make_ssl_context(verify: bool | str, client_cert) -> ssl.SSLContext:
        # Trust anchors go into the context once, here: passing ca_certs to urllib3 instead
        # would re-read and re-parse the PEM bundle on every new connection.
        if verify is False:
            ctx = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        else:
            ctx = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            bundle = verify if isinstance(verify, str) else default_ca_bundle()
            if bundle is None:
                ctx.load_default_certs()
            elif os.path.isdir(bundle):
                ctx.load_verify_locations(capath=bundle)
            else:
                ctx.load_verify_locations(cafile=bundle)
        if client_cert:
            _load_cert(ctx, client_cert)
        return ctx

    def _proxy_ssl_context(self) -> ssl.SSLContext | None:
        settings = self._proxies_config
        ca_bundle = settings.get("proxy_ca_bundle")
        cert = settings.get("proxy_client_cert")
        if ca_bundle is None and cert is None:
            return None
        ctx = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        if ca_bundle is not None:
            ctx.load_verify_locations(cafile=ca_bundle)
        else:
            bundle = default_ca_bundle()
            if bundle is None:
                ctx.load_default_certs()
            else:
                ctx.load_verify_locations(cafile=bundle)
        if cert is not None:
            _load_cert(ctx, cert)
        return ctx

    def proxy_url_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through, or None."""
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if proxy and self._no_proxy and bypass_proxy(parts.hostname or "", parts.port,
                                                      self._no_proxy):
            return None
        return proxy

    def _manager_for(self, proxy_url: str | None):
        if proxy_url is None:
            if self._manager is None:
                self._manager = urllib3.PoolManager(**self._pool_kwargs)
            return self._manager
        manager = self._proxy_managers.get(proxy_url)
        if manager is None:
            kwargs = dict(self._pool_kwargs)
            kwargs["proxy_headers"] = _proxy_headers(proxy_url)
            proxy_ctx = self._proxy_ssl_context()
            if proxy_ctx is not None:
                kwargs["proxy_ssl_context"] = proxy_ctx
            forwarding = self._proxies_config.get("proxy_use_forwarding_for_https")
            if forwarding is not None:
                kwargs["use_forwarding_for_https"] = _ensure_boolean(forwarding)
            manager = urllib3.ProxyManager(proxy_url, **kwargs)
            self._proxy_managers[proxy_url] = manager
        return manager

    def _route(self, scheme: str, host: str, port: int | None, base_url: str,
               path_prefix: str) -> _Route:
        key = (scheme, host, port)
        route = self._routes.get(key)
        if route is not None:
            return route
        with self._lock:
            route = self._routes.get(key)
            if route is None:
                proxy_url = self.proxy_url_for(base_url)
                manager = self._manager_for(proxy_url)
                pool = manager.connection_from_host(host, port, scheme)
                # An HTTP proxy must be told the whole URL; through a CONNECT tunnel the
                # origin server wants only the path.
                absolute = proxy_url is not None and (
                    scheme == "http" or (urlsplit(proxy_url).scheme == "https" and
                                         getattr(manager, "proxy_config", None) is not None
                                         and manager.proxy_config.use_forwarding_for_https))
                route = _Route(pool, absolute, proxy_url, base_url, path_prefix)
                self._routes[key] = route
        return route

    def _resolve(self, url_or_path: str) -> tuple[_Route, str]:
        if url_or_path.startswith(("http://", "https://")):
            parts = urlsplit(url_or_path)
            base = f"{parts.scheme}://{parts.netloc}"
            route = self._route(parts.scheme, parts.hostname or "", parts.port, base, "")
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
        else:
            scheme, host, port = self._endpoint_key
            route = self._route(scheme, host or "", port, self._endpoint_base,
                                self._endpoint_prefix)
            path = route.path_prefix + (url_or_path if url_or_path.startswith("/")
                                        else "/" + url_or_path)
        target = route.base_url + path if route.absolute_target else path
        return route, target

    # -- requests -----------------------------------------------------------------------------
    def send(self, method: str, url_or_path: str, headers: Mapping[str, str] | None = None,
             body: bytes | bytearray | memoryview | None = None, *,
             preload: bool = False) -> urllib3.BaseHTTPResponse:
        """Send one request, without retries or redirects; return the response with its body
        unread, or read whole (and its connection back in the pool) when ``preload``.

        ``url_or_path`` is a full URL or a path (with query) under the endpoint URL.
        Errors: EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, SSLError,
        ProxyConnectionError, ConnectionClosedError, HTTPClientError (all from
        ``ebsfast.exceptions``, each ``from`` the urllib3 error).
        """
        route, target = self._resolve(url_or_path)
        chunked = False
        if headers:
            te = headers.get("Transfer-Encoding") or headers.get("transfer-encoding") or ""
            chunked = te.lower() == "chunked"
        try:
            response = route.pool.urlopen(
                method, target, body=body, headers=headers, retries=_NO_RETRIES,
                redirect=False, assert_same_host=False, preload_content=False,
                decode_content=False, chunked=chunked)
            if preload:
                # Read here rather than with urllib3's preload_content so a broken body is the
                # same ConnectionClosedError botocore raises for a non-streaming response.
                response.read(decode_content=False, cache_content=True)
                response.release_conn()
            return response
        except Exception as e:
            raise self._map_send_error(e, route, url_or_path) from e

    def _map_send_error(self, e: Exception, route: _Route, url_or_path: str) -> Exception:
        url = url_or_path if "://" in url_or_path else (
            route.base_url + route.path_prefix + url_or_path)
        if isinstance(e, _u3.SSLError):
            return _exc.SSLError(endpoint_url=url, error=e)
        if isinstance(e, (_u3.NewConnectionError, socket.gaierror)):
            return _exc.EndpointConnectionError(endpoint_url=url, error=e)
        if isinstance(e, _u3.ProxyError):
            return _exc.ProxyConnectionError(proxy_url=mask_proxy_url(route.proxy_url or ""),
                                             error=e)
        if isinstance(e, _u3.ConnectTimeoutError):
            return _exc.ConnectTimeoutError(endpoint_url=url, error=e)
        if isinstance(e, _u3.ReadTimeoutError):
            return _exc.ReadTimeoutError(endpoint_url=url, error=e)
        if isinstance(e, _u3.ProtocolError):
            return _exc.ConnectionClosedError(endpoint_url=url, error=e)
        logger.debug("Exception received when sending urllib3 HTTP request", exc_info=e)
        return _exc.HTTPClientError(error=e)

    # -- connections for the native exchange -----------------------------------------------
    def direct(self) -> bool:
        """True when :meth:`checkout` gives connections (no plain HTTP proxy between)."""
        scheme, host, port = self._endpoint_key
        return not self._route(scheme, host or "", port, self._endpoint_base,
                               self._endpoint_prefix).absolute_target

    def checkout(self):
        """``(pool, connection, was_idle)``: a connected urllib3 connection to the endpoint, for
        ebsfast's native exchange (which writes the request and reads the body itself,
        straight from the socket). None when the route needs urllib3's own request path (an
        HTTP proxy, which wants absolute request targets). Give back ``pool`` and
        ``connection`` with :meth:`checkin`.

        A connection given back in good order waits on a short stack of idle connections
        (at most ``max_pool_connections``) and is handed out again from there, most recent
        first, without a trip through urllib3's queue. Such a one comes with ``was_idle``
        True: the server may have closed it meanwhile, which the exchange finds out before
        sending (``idle_check``); the caller then gives it back as not reusable and checks
        out again. (urllib3 checks the connections of its own queue as it hands them out.)
        Connections come from, and beyond that stack go back to, urllib3's pool: TLS,
        proxies (CONNECT tunnels), pool limits and the connection's life stay urllib3's."""
        try:
            return self._idle.pop()
        except IndexError:
            pass
        scheme, host, port = self._endpoint_key
        route = self._route(scheme, host or "", port, self._endpoint_base,
                            self._endpoint_prefix)
        if route.absolute_target:
            return None
        pool = route.pool
        # urllib3 drops a connection the server closed while it sat in the pool.
        conn = pool._get_conn()
        try:
            if conn.sock is None:
                if pool.proxy is not None and connection_requires_http_tunnel(
                        pool.proxy, pool.proxy_config, pool.scheme):
                    pool._prepare_proxy(conn)  # CONNECT through the proxy, then TLS inside
                else:
                    conn.connect()
            # A plain socket is left in blocking mode: the native exchange then waits in
            # each receive (bounded by its own slices and the read timeout it is given)
            # rather than in a poll before it. TLS reads go through the SSL socket's own
            # recv_into, which keeps the read timeout.
            timeout = (None if isinstance(conn.sock, socket.socket)
                       and not isinstance(conn.sock, ssl.SSLSocket)
                       else self.timeout.read_timeout)
            if conn.sock.gettimeout() != timeout:  # a system call; most calls skip it
                conn.sock.settimeout(timeout)
        except Exception as e:
            if isinstance(e, ssl.SSLError):  # the handshake's own error, as urllib3 names it
                e = _u3.SSLError(e)
            if (pool.proxy is not None and not getattr(conn, "has_connected_to_proxy", True)
                    and isinstance(e, (OSError, _u3.NewConnectionError, _u3.TimeoutError,
                                       _u3.SSLError))):
                e = _u3.ProxyError("Unable to connect to proxy", e)  # as urllib3 says it
            conn.close()
            pool._put_conn(conn)
            raise self._map_send_error(e, route, self._endpoint_base) from e
        return pool, conn, False

    def checkin(self, pool, conn, reusable: bool) -> None:
        """Return a connection from :meth:`checkout`; one whose exchange did not finish cleanly
        (any error, a body not read whole, ``Connection: close``) is closed first, so the pool
        never hands it out again."""
        if reusable:
            idle = self._idle
            # (pool.pool is None once urllib3 closed the pool: close() ran meanwhile, and
            # _put_conn then closes the connection, as for any connection of a closed pool)
            if len(idle) < self.max_pool_connections and pool.pool is not None:
                idle.append((pool, conn, True))
                return
        else:
            conn.close()
        pool._put_conn(conn)

    # -- bodies -------------------------------------------------------------------------------
    @contextmanager
    def body_errors(self, response: urllib3.BaseHTTPResponse) -> Iterator[None]:
        """Map errors raised while reading ``response``'s body as botocore's StreamingBody
        does: a timeout is ReadTimeoutError, a cut or reset body ResponseStreamingError."""
        try:
            yield
        except _u3.ReadTimeoutError as e:
            raise _exc.ReadTimeoutError(endpoint_url=self._url_of(response), error=e) from e
        except (_u3.ProtocolError, _u3.SSLError) as e:
            raise _exc.ResponseStreamingError(error=e) from e

    def read(self, response: urllib3.BaseHTTPResponse, amt: int | None = None) -> bytes:
        """Up to ``amt`` bytes of the body (all of it when None)."""
        with self.body_errors(response):
            return response.read(amt, decode_content=False)

    def readinto(self, response: urllib3.BaseHTTPResponse, buffer) -> int:
        """Fill ``buffer`` (any writable buffer) from the body; returns the bytes written."""
        view = memoryview(buffer).cast("B")
        got = 0
        with self.body_errors(response):
            while got < len(view):
                n = response.readinto(view[got:])
                if not n:
                    break
                got += n
        return got

    def _url_of(self, response) -> str:
        url = getattr(response, "url", None)
        return self.endpoint_url + url if url and url.startswith("/") else (url or
                                                                            self.endpoint_url)

    @staticmethod
    def discard(response: urllib3.BaseHTTPResponse | None) -> None:
        """Finish with a response: its connection goes back to the pool only if the body was
        read to the end; otherwise the connection is closed, since unread bytes would be taken
        for the next response on it."""
        if response is None:
            return
        if not response.closed and response.length_remaining == 0:
            # Nothing left to read (HEAD, 204, Content-Length: 0, or read to the last byte but
            # not past it): one empty read completes the response and keeps the connection.
            try:
                response.read(decode_content=False)
            except Exception:  # noqa: BLE001 - broken anyway: closed below
                pass
        if not response.closed:
            # Closing shuts the socket; release_conn then hands the closed connection back as
            # an empty slot, which the pool reconnects on next use.
            response.close()
        response.release_conn()

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close every pooled connection; connections in use close when released. As with
        botocore, a later request opens new connections."""
        with self._lock:
            managers = [self._manager, *self._proxy_managers.values()]
            routes = list(self._routes.values())
            self._manager = None
            self._proxy_managers = {}
            self._routes = {}
        idle, self._idle = self._idle, []
        for _pool, conn, _ in idle:
            conn.close()
        # urllib3's PoolManager.clear() forgets its pools without closing them; closing each
        # one closes its idle connections, and those in use as they come back.
        for route in routes:
            route.pool.close()
        for manager in managers:
            if manager is not None:
                manager.clear()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Transport {self.endpoint_url} verify={self.verify!r} "
                f"max_pool_connections={self.max_pool_connections}>")


__all__ = ["Transport", "bypass_proxy", "default_ca_bundle", "environ_proxies",
           "mask_proxy_url", "resolve_verify"]
