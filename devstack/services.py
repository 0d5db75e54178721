"""Local services on 127.0.0.1 for tests, benches and the demo (never used in production).

- :class:`MotoService`: moto's ``ThreadedMotoServer`` (ECR, S3, IAM, STS, ECS, Lambda,
  CloudWatch, Secrets Manager) on a free port, in this process so the seeder can reach its
  backend; ECR listing calls page like AWS (see ``moto_paging``) and layer downloads work
  (``GetDownloadUrlForLayer`` answered by ``moto_layers`` and its layer server).
- :class:`RegistryService`: the CNCF distribution registry from Debian's ``docker-registry``
  package, deletes enabled, optional htpasswd basic auth (bcrypt, the only hash it accepts).
  The stack runs two: the fleet's and the DR drill's scratch target (deletes enabled there too,
  so the drill can remove what it restored).
- :class:`SmtpService`: aiosmtpd keeping every message in memory and as ``.eml`` files.
"""

from __future__ import annotations

import contextlib
import email
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import requests

REGISTRY_BIN = "docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, ok: tuple[int, ...] = (200, 401), timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code in ok:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f}s ({last})")


def moto_process() -> tuple[subprocess.Popen[bytes], str]:
    """moto's server in a child process on a free port (benches: its CPU is then not the
    measuring process's); the process and its endpoint. The caller terminates it."""
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/", ok=(200,), timeout=60)
    return proc, endpoint


class MotoService:
    """moto server on 127.0.0.1 and a free port."""

    def __init__(self, paging: bool = True, layers: bool = True) -> None:
        from moto.server import ThreadedMotoServer

        from devstack.moto_ecr_extras import enable_pull_through_cache_rules
        from devstack.moto_layers import LayerServer, enable_layer_downloads
        from devstack.moto_paging import enable_aws_paging

        enable_pull_through_cache_rules()  # ECR registry settings read by backups (moto lacks them)

        if paging:
            enable_aws_paging()
        if layers:
            enable_layer_downloads()
        self._layers = LayerServer() if layers else None
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> MotoService:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request
        self._server.start()
        if self._layers:
            self._layers.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def reset(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10)

    def stop(self) -> None:
        if self._layers:
            self._layers.stop()
        self._server.stop()

    def conn_json(self, region: str = "us-east-1") -> str:
        """An Airflow AWS connection (JSON form) pointing at this server."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {
                    "region_name": region,
                    "endpoint_url": self.endpoint,
                    "config_kwargs": {"s3": {"addressing_style": "path"}},
                },
            }
        )


@dataclass(frozen=True)
class NotifyEndpoint:
    """One ``notifications.endpoints[]`` entry of the registry's config: where it POSTs its event
    envelopes, with ``Authorization: Bearer <token>``. The registry retries a failed delivery
    forever; ``threshold`` failures in a row make it wait ``backoff`` (small: tests are quick)."""

    url: str
    token: str | None = None
    name: str = "registry-ops"
    timeout: str = "2s"
    threshold: int = 3
    backoff: str = "250ms"

    def config(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "timeout": self.timeout,
            "threshold": self.threshold,
            "backoff": self.backoff,
        }
        if self.token:
            entry["headers"] = {"Authorization": [f"Bearer {self.token}"]}
        return entry


class RegistryService:
    """``docker-registry serve CONFIG`` with filesystem storage in a temp dir; ``notify``: the
    endpoints it sends its notifications to (none by default). The log level stays ``warn``:
    at ``info`` the registry logs each endpoint's headers, bearer token included.

    Options the benches use (off by default, so tests see a plain registry): ``blob_cache``
    adds ``storage: cache: blobdescriptor: inmemory``, the blob-descriptor cache production
    distribution deployments run with (Harbor's is redis); ``gogc`` sets the Go runtime's
    ``GOGC`` of the registry process (distribution 2.8 compiles its URL routes' regexps on
    every request, about half its CPU per manifest HEAD, and collects that garbage: GOGC=400
    cut its CPU per HEAD by about a quarter on the bench machine)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        username: str | None = None,
        password: str | None = None,
        port: int | None = None,
        notify: tuple[NotifyEndpoint, ...] = (),
        *,
        blob_cache: bool = False,
        gogc: int | None = None,
    ) -> None:
        if not shutil.which(REGISTRY_BIN):
            raise RuntimeError(
                f"{REGISTRY_BIN} not found: install Debian's package (apt-get install docker-registry)"
            )
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="registry-"))
        self.username, self.password = username, password
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.notify = tuple(notify)
        self.blob_cache, self.gogc = blob_cache, gogc
        self._proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        auth = ""
        if self.username:
            import bcrypt

            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.root / "htpasswd").write_text(f"{self.username}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: registry-ops-test\n    path: {self.root / 'htpasswd'}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            + ("  cache:\n    blobdescriptor: inmemory\n" if self.blob_cache else "")
            + "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: registry-ops-local\n"
            + auth
            + self._notifications()
        )
        return config

    def _notifications(self) -> str:
        if not self.notify:
            return ""
        import yaml

        endpoints = [e.config() for e in self.notify]
        return yaml.safe_dump({"notifications": {"endpoints": endpoints}}, sort_keys=False)

    def start(self) -> RegistryService:
        config = self._config()
        self._log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "GOGC": str(self.gogc)} if self.gogc is not None else None
        self._proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        try:
            wait_http(f"{self.url}/v2/")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            if self._proc.poll() is None:
                self._proc.kill()
        if getattr(self, "_log", None):
            self._log.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def conn_json(self) -> str:
        import json

        conn: dict[str, Any] = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": self.port,
            "extra": {"scheme": "http"},
        }
        if self.username:
            conn.update(login=self.username, password=self.password)
        return json.dumps(conn)


class SmtpService:
    """An SMTP sink on 127.0.0.1 that keeps what it receives (memory and ``.eml`` files)."""

    def __init__(self, maildir: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.maildir = Path(maildir or tempfile.mkdtemp(prefix="mail-"))
        self.maildir.mkdir(parents=True, exist_ok=True)
        self.messages: list[Message] = []
        self._controller: Any = None

    def start(self) -> SmtpService:
        from aiosmtpd.controller import Controller

        service = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                raw = envelope.original_content or envelope.content
                msg = email.message_from_bytes(raw)
                service.messages.append(msg)
                (service.maildir / f"{len(service.messages):04d}.eml").write_bytes(raw)
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()

    def conn_json(self) -> str:
        import json

        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.port,
                "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "registry-ops@example.com"},
            }
        )
