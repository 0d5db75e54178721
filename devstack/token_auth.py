"""Bearer-token auth for the local distribution registry: tests and the demo only, never production.

- :class:`TokenServer`: a tiny token service after the Docker registry token auth spec
  (https://distribution.github.io/distribution/spec/auth/token/) on 127.0.0.1 and a free port, in
  a background thread. ``GET /token?service=..&scope=repository:NAME:pull,push`` (``scope`` may
  repeat) with HTTP basic auth checked against the one user it was given; 401 for bad
  credentials; otherwise ``{"token", "access_token", "expires_in", "issued_at"}`` where the token
  is an RS256 JWT (iss, sub, aud = service, exp, nbf, iat, jti and ``access``) granting what was
  asked. It counts the tokens it issued so tests can assert on caching.
- :class:`TokenRegistryService`: :class:`~.services.RegistryService` with ``auth.token``
  configured for a :class:`TokenServer` (realm, service, issuer, and a self-signed X.509 root
  certificate for the signing key as ``rootcertbundle``).

Distribution 2.8 finds the signing key from the JWT header: an ``x5c`` chain verified against
``rootcertbundle``, a ``jwk``, or a ``kid`` equal to the libtrust key ID of a root certificate's key
(``registry/auth/token/token.go``). Tokens here carry ``x5c`` = [the self-signed certificate, base64
DER], which is its own root. The registry never calls the token server; only clients do.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devstack.services import RegistryService

DEFAULT_SERVICE = "registry-ops-registry"
DEFAULT_ISSUER = "registry-ops-token-server"
KNOWN_ACTIONS = frozenset({"pull", "push", "delete", "*"})


def _self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    """A self-signed CA certificate for ``key``, valid from a day ago for a year."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def parse_scope(scope: str) -> dict[str, Any] | None:
    """``type:name:actions`` as a JWT ``access`` entry, or None when malformed.

    The name may itself hold ``:`` (a registry host with a port), so type is what comes before
    the first colon and the actions what comes after the last one.
    """
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name or not actions:
        return None
    if kind == "registry" and name == "catalog":
        return {"type": "registry", "name": "catalog", "actions": ["*"]}
    wanted = [a for a in dict.fromkeys(actions.split(",")) if a in KNOWN_ACTIONS]
    return {"type": kind, "name": name, "actions": wanted}


class TokenServer:
    """Docker token auth service for one user, on 127.0.0.1 (port 0 unless given)."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        expires_in: int = 300,
        port: int = 0,
    ) -> None:
        self.username, self._password = username, password
        self.service, self.issuer, self.expires_in = service, issuer, expires_in
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = _self_signed(self._key, issuer)
        self._x5c = [base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()]
        self._lock = threading.Lock()
        self.issued = 0  # tokens handed out
        self.refused = 0  # requests answered 401
        self.scopes: list[list[str]] = []  # the scopes asked for, per issued token
        self._tokens: list[str] = []  # every token issued (tests check none leaks into logs)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.realm = f"{self.url}/token"
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> TokenServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def cert_pem(self) -> bytes:
        """The signing key's self-signed certificate (the registry's ``rootcertbundle``)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    # -- tokens ------------------------------------------------------------------------------
    def check(self, authorization: str | None) -> str | None:
        """The user name when the ``Authorization: Basic`` header matches, else None."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        ok_user = hmac.compare_digest(user.encode(), self.username.encode())
        ok_password = hmac.compare_digest(password.encode(), self._password.encode())
        return user if ok_user and ok_password else None

    def issue(self, subject: str, scopes: list[str], service: str | None = None) -> dict[str, Any]:
        """A token response body granting ``scopes`` (every action asked for: one all-powerful user)."""
        now = dt.datetime.now(dt.UTC)
        ts = int(now.timestamp())
        access = [a for a in map(parse_scope, scopes) if a]
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service or self.service,
            "exp": ts + self.expires_in,
            "nbf": ts,
            "iat": ts,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5c": self._x5c})
        with self._lock:
            self.issued += 1
            self.scopes.append(list(scopes))
            self._tokens.append(token)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": now.isoformat().replace("+00:00", "Z"),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/token":
                    self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
                    return
                query = parse_qs(parts.query)
                user = server.check(self.headers.get("Authorization"))
                if user is None:
                    with server._lock:
                        server.refused += 1
                    self._send(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                        {"WWW-Authenticate": f'Basic realm="{server.issuer}"'},
                    )
                    return
                service = (query.get("service") or [server.service])[0]
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                self._send(200, server.issue(user, scopes, service))

        return Handler


class TokenRegistryService(RegistryService):
    """``docker-registry`` (deletes enabled) trusting a :class:`TokenServer`'s tokens.

    The base class writes the storage/http config (without htpasswd); ``auth.token`` is appended.
    """

    def __init__(
        self,
        token_server: TokenServer,
        root: str | Path | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(root, port=port)
        self.token_server = token_server

    def _config(self) -> Path:
        config = super()._config()
        bundle = self.root / "token-root.pem"
        bundle.write_bytes(self.token_server.cert_pem())
        ts = self.token_server
        auth = (
            "auth:\n  token:\n"
            f"    realm: {ts.realm}\n"
            f"    service: {ts.service}\n"
            f"    issuer: {ts.issuer}\n"
            f"    rootcertbundle: {bundle}\n"
        )
        config.write_text(config.read_text().rstrip("\n") + "\n" + auth)
        return config

    def conn_json(self) -> str:
        conn = json.loads(super().conn_json())
        conn.update(login=self.token_server.username, password=self.token_server._password)
        return json.dumps(conn)


def start_token_stack(
    username: str, password: str, **server_kwargs: Any
) -> tuple[TokenServer, TokenRegistryService]:
    """A started token server and a started registry trusting it (stop both, registry first)."""
    server = TokenServer(username, password, **server_kwargs).start()
    try:
        registry = TokenRegistryService(server).start()
    except Exception:
        server.stop()
        raise
    return server, registry
