"""The OCI adapter's fast path: small body-less requests on ``http.client``, not ``requests``.

Why: an unchanged registry is re-inventoried with one manifest ``HEAD`` per tag, thousands per
run, and profiling showed the HTTP stack, not the exchange, spending our CPU: about 1.5 ms per
HEAD through ``requests`` (merging session settings, cookies, hooks, environment proxies and
``.netrc`` on every call), 0.6-0.8 ms on urllib3's pool directly, 0.35-0.45 ms on a kept-alive
``http.client`` connection, on a 2-core machine where the registry needs the other core. So the
fast path is the standard library's own client with a small pool of kept-alive connections; no
new dependency.

What the fast path takes (:meth:`FastPath.usable`): GET, HEAD and DELETE without a body or
streaming to the registry's own origin, while the session is as the adapter built it (no
other adapter mounted: tests and callers that mount one get exactly what they mounted) and no
proxy applies to the registry. What stays with ``requests``: uploads, streamed blobs, token
requests, and redirects (a 3xx on the fast path is asked again through ``requests``, which
drops credentials when a redirect leaves the host). The settings ``requests`` would take from
the environment (the CA bundle in ``REQUESTS_CA_BUNDLE``, proxies, ``.netrc``) are read once,
when the registry is built. TLS verifies as ``requests`` does (the same CA bundle, host names
checked) unless ``verify=False``.

A kept-alive connection the server has closed meanwhile fails on its next use; that one failure
is asked again at once on a new connection (what urllib3 and browsers do), any other failure is
raised as :data:`TransportError` for the adapter's retry loop.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_netrc_auth, parse_header_links, select_proxy

# Refused, reset, timed out, TLS, malformed answer: raised as requests.ConnectionError, so the
# caller handles both paths' failures alike.
_FAILURES = (OSError, http.client.HTTPException)
# What a reused connection the server closed while it sat idle raises on its next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class FastResponse:
    """The part of ``requests.Response`` the adapter reads, for a fully read answer."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status: int, headers: Any, content: bytes) -> None:
        self.status_code = status
        self.headers = headers  # http.client's HTTPMessage: case-insensitive, as requests' is
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """``Link`` header entries by ``rel`` (else url), as ``requests.Response.links``."""
        header = self.headers.get("Link")
        if not header:
            return {}
        return {link.get("rel") or link.get("url"): link for link in parse_header_links(header)}

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status_code < 400 and "Location" in self.headers


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """The verification ``requests`` applies for ``verify``: its CA bundle, a given file or
    directory, or none at all for ``False``."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str) and os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH if verify is True else verify)


class FastPath:
    """Body-less requests to the registry's own origin on kept-alive ``http.client``
    connections, at most ``maxsize`` kept idle (see the module docstring)."""

    def __init__(
        self,
        session: requests.Session,
        adapter: HTTPAdapter,
        base_url: str,
        has_creds: bool,
        maxsize: int,
        timeout: float,
    ) -> None:
        self.session = session
        self.adapter = adapter
        base = urlsplit(base_url)
        self.origin = f"{base.scheme}://{base.netloc}"
        env = session.merge_environment_settings(base_url, {}, None, None, None)
        proxied = select_proxy(base_url, env.get("proxies") or {}) is not None
        # .netrc credentials are what requests would send when we have none: leave those to it
        netrc = session.trust_env and not has_creds and get_netrc_auth(base_url) is not None
        self.enabled = base.scheme in ("http", "https") and not proxied and not netrc
        self._host, self._port, self._timeout = base.hostname or "", base.port, timeout
        self._tls = _tls_context(env.get("verify", True)) if base.scheme == "https" else None
        self._idle: list[http.client.HTTPConnection] = []
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def usable(self, url: str, method: str, kwargs: dict[str, Any]) -> bool:
        return (
            self.enabled
            and method in ("GET", "HEAD", "DELETE")
            and not kwargs
            and url.startswith(self.origin)
            and url[len(self.origin) : len(self.origin) + 1] == "/"
            and self.session.get_adapter(url) is self.adapter
        )

    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def send(self, method: str, url: str, headers: dict[str, str]) -> FastResponse | None:
        """The whole answer to ``url`` (one :meth:`usable` accepted), or None for a redirect (to
        be followed by ``requests``). Raises ``requests.ConnectionError`` when the request could
        not be made or answered."""
        target = url[len(self.origin) :]
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is not None:
                try:
                    return self._exchange(conn, method, target, headers)
                except _STALE:
                    pass  # closed by the server while idle: once more on a new connection
            return self._exchange(self._connect(), method, target, headers)
        except _FAILURES as exc:
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from None

    def _exchange(
        self, conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str]
    ) -> FastResponse | None:
        try:
            conn.request(method, target, headers=headers)
            resp = conn.getresponse()
            content = resp.read()
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            with self._lock:
                keep = len(self._idle) < self._maxsize
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()
        answer = FastResponse(resp.status, resp.headers, content)
        return None if answer.is_redirect else answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
