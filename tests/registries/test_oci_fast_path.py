"""The OCI adapter's urllib3 fast path (``registries.transport``) against a scripted local server:
it retries and types errors as the ``requests`` path does, and leaves redirects, proxied
registries and ``.netrc`` credentials to ``requests``. (Mounted adapters are covered by
test_typed_errors and test_faults, which mount theirs on ``session``; basic auth by every test
on the htpasswd registry.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from include.registry_ops.registries.base import Throttled, Unavailable
from include.registry_ops.registries.oci import OciRegistry
from tests.conftest import OCI_PASSWORD, OCI_USER

DIGEST = "sha256:" + "ab" * 32


class Scripted(ThreadingHTTPServer):
    """Answers a request whose path starts with a key of ``routes`` with its (status, headers,
    body), any other with the next of ``script``, then ``final``; records the request lines."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.final: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
        self.seen: list[str] = []
        self.drop = False  # close each connection after answering, without saying so

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted
    protocol_version = "HTTP/1.1"  # keep-alive, as registries answer

    def _answer(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        srv = self.server
        routed = [answer for prefix, answer in srv.routes.items() if self.path.startswith(prefix)]
        status, headers, body = routed[0] if routed else srv.script.pop(0) if srv.script else srv.final
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = srv.drop

    do_GET = do_HEAD = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Scripted]:
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def catalog(*repos: str) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps({"repositories": list(repos)}).encode()


def test_fast_path_retries_429_and_503_then_answers(server):
    reg = OciRegistry("scripted", server.url, backoff=0.001)
    assert reg._fast.usable(server.url + "/v2/r/manifests/t", "HEAD", {})
    server.script = [(503, {}, b""), (429, {"Retry-After": "0"}, b"")]
    server.final = (200, {"Docker-Content-Digest": DIGEST, "Content-Length": "7"}, b"")
    head = reg.head_manifest("r", "t")
    assert head is not None and head.digest == DIGEST and head.size == 7
    assert server.seen == ["HEAD /v2/r/manifests/t"] * 3


def test_fast_path_gives_up_with_the_typed_error(server):
    reg = OciRegistry("scripted", server.url, backoff=0.001, retries=1)
    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
    server.final = (429, {"Retry-After": "0", "Content-Type": "application/json"}, body)
    with pytest.raises(Throttled) as err:
        reg.list_repositories()
    assert "HTTP 429 TOOMANYREQUESTS: slow down" in err.value.problem
    assert len(server.seen) == 2


def test_unreachable_registry_is_unavailable_after_the_retries(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    reg = OciRegistry("gone", f"http://127.0.0.1:{port}", backoff=0.001, retries=2, timeout=2)
    with pytest.raises(Unavailable) as err:
        reg.head_manifest("r", "t")
    assert "cannot reach" in err.value.problem
    assert reg.requests.counts["manifest_head"] == 3


def test_a_redirect_is_followed_by_requests(server):
    """The fast path does not follow a 3xx itself (requests does, dropping credentials when the
    redirect leaves the host): the listing still gets the page behind the redirect."""
    server.routes = {"/v2/_catalog": (307, {"Location": "/elsewhere/_catalog"}, b"")}
    server.final = catalog("one", "two")
    reg = OciRegistry("scripted", server.url, retries=0)
    assert reg.list_repositories() == ["one", "two"]
    # the fast path's answer was the 307; requests asked again and followed it
    assert server.seen == ["GET /v2/_catalog?n=1000"] * 2 + ["GET /elsewhere/_catalog"]


def test_a_proxied_registry_goes_through_the_proxy(server, monkeypatch):
    """A proxy from the environment applies to the registry: requests (which honours it) sends,
    not the fast path (which would connect to the registry directly)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("http_proxy", server.url)
    server.final = catalog("via-proxy")
    # 127.0.0.2:9 (discard) has nothing listening: only the proxy can answer
    reg = OciRegistry("proxied", "http://127.0.0.2:9", retries=0, timeout=2)
    assert reg.list_repositories() == ["via-proxy"]
    assert server.seen == ["GET http://127.0.0.2:9/v2/_catalog?n=1000"]


def test_netrc_credentials_are_sent_by_requests(registry_server, tmp_path, monkeypatch):
    """No credentials configured but a ``.netrc`` entry for the registry: requests sends it, as
    it did before the fast path existed (the fast path would ask without them and get 401)."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {OCI_USER} password {OCI_PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    reg = OciRegistry("netrc", registry_server.url, retries=0)
    assert isinstance(reg.list_repositories(), list)


def test_a_kept_alive_connection_the_server_closed_is_replaced_at_once(server):
    """The server closes each connection after its answer, without ``Connection: close``: the
    next request on the kept connection fails and goes again on a new one, costing no retry."""
    server.drop = True
    server.final = (200, {"Docker-Content-Digest": DIGEST}, b"")
    reg = OciRegistry("scripted", server.url, retries=0)
    for tag in ("a", "b", "c"):
        head = reg.head_manifest("r", tag)
        assert head is not None and head.digest == DIGEST
    assert server.seen == [f"HEAD /v2/r/manifests/{t}" for t in "abc"]
