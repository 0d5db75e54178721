"""The OCI adapter's fast path: small body-less requests on urllib3 directly, not ``requests``.

Why: an unchanged registry is re-inventoried with one manifest ``HEAD`` per tag, thousands per
run, and profiling showed ``requests`` spending more of our CPU per call than the HTTP exchange
itself (merging session settings, cookies, hooks, environment proxies and ``.netrc`` on every
call): about 1.5 ms of CPU per HEAD against 0.6 ms on urllib3, on a 2-core machine where the
registry needs the other core. urllib3 is no new dependency: it is what ``requests`` sends with
(pinned in ``constraints.txt``), and the fast path uses the very connection pool of the
session's own ``HTTPAdapter``.

What the fast path takes (:meth:`FastPath.usable`): GET, HEAD and DELETE without a body or
streaming, while the session is as the adapter built it (no other adapter mounted: tests and
callers that mount one get exactly what they mounted) and no proxy applies to the registry.
What stays with ``requests``: uploads, streamed blobs, token requests, and redirects (a 3xx on
the fast path is asked again through ``requests``, which drops credentials when a redirect
leaves the host). The settings ``requests`` would take from the environment (the CA bundle in
``REQUESTS_CA_BUNDLE``, proxies, ``.netrc``) are read once, when the registry is built.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_netrc_auth, parse_header_links, select_proxy
from urllib3.util import parse_url

# What a caller must catch from FastPath.send: urllib3's transport failures (refused, reset,
# timed out, TLS), the counterparts of requests.RequestException.
TransportError = urllib3.exceptions.HTTPError


class FastResponse:
    """The part of ``requests.Response`` the adapter reads, for a fully read urllib3 answer."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status: int, headers: Any, content: bytes) -> None:
        self.status_code = status
        self.headers = headers  # urllib3's HTTPHeaderDict: case-insensitive, as requests' is
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


class FastPath:
    """Body-less requests through ``adapter``'s urllib3 pool (see the module docstring)."""

    def __init__(
        self, session: requests.Session, adapter: HTTPAdapter, base_url: str, has_creds: bool
    ) -> None:
        self.session = session
        self.adapter = adapter
        env = session.merge_environment_settings(base_url, {}, None, None, None)
        proxied = select_proxy(base_url, env.get("proxies") or {}) is not None
        # .netrc credentials are what requests would send when we have none: leave those to it
        netrc = session.trust_env and not has_creds and get_netrc_auth(base_url) is not None
        self.enabled = not proxied and not netrc
        verify = env.get("verify", True)
        if verify is False:
            self._tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"}
        elif isinstance(verify, str) and os.path.isdir(verify):
            self._tls = {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir": verify}
        else:
            bundle = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
            self._tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": bundle}

    def usable(self, url: str, method: str, kwargs: dict[str, Any]) -> bool:
        return (
            self.enabled
            and method in ("GET", "HEAD", "DELETE")
            and not kwargs
            and self.session.get_adapter(url) is self.adapter
        )

    def send(self, method: str, url: str, headers: dict[str, str], timeout: float) -> FastResponse | None:
        """The whole answer, or None for a redirect (to be followed by ``requests``).
        Raises :data:`TransportError` when the request could not be made or answered."""
        u = parse_url(url)
        pool = self.adapter.poolmanager.connection_from_host(
            u.host, u.port, u.scheme, pool_kwargs=self._tls if u.scheme == "https" else None
        )
        resp = pool.urlopen(
            method,
            u.request_uri,
            headers=headers,
            redirect=False,
            retries=False,  # the adapter's own loop retries, with backoff and typed errors
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            preload_content=True,
        )
        answer = FastResponse(resp.status, resp.headers, resp.data or b"")
        return None if answer.is_redirect else answer
