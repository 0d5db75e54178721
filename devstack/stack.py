"""The whole local stack in one object: moto, the distribution registry, a second one (the DR
drill's scratch target, connection ``oci_dr``), the SMTP sink, and the Airflow connections
(``AIRFLOW_CONN_*``) pointing at them, for the demo and ad-hoc runs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from devstack.services import MotoService, RegistryService, SmtpService

OCI_USER = "registry-ops"


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    workdir: Path
    oci_password: str = field(default_factory=lambda: os.urandom(12).hex())
    moto: MotoService | None = None
    registry: RegistryService | None = None
    registry_dr: RegistryService | None = None  # where registry_dr_drill restores (empty at start)
    smtp: SmtpService | None = None

    def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        registry_root = self.workdir / "registry"
        shutil.rmtree(registry_root, ignore_errors=True)  # moto starts empty; so does the registry
        registry_root.mkdir()
        dr_root = self.workdir / "registry-dr"
        shutil.rmtree(dr_root, ignore_errors=True)
        dr_root.mkdir()
        self.moto = MotoService().start()
        self.registry = RegistryService(registry_root, OCI_USER, self.oci_password).start()
        self.registry_dr = RegistryService(dr_root, OCI_USER, self.oci_password).start()
        self.smtp = SmtpService(self.workdir / "mail").start()
        os.environ.update(
            AIRFLOW_CONN_AWS_DEFAULT=self.moto.conn_json(),
            AIRFLOW_CONN_OCI_LOCAL=self.registry.conn_json(),
            AIRFLOW_CONN_OCI_DR=self.registry_dr.conn_json(),
            AIRFLOW_CONN_SMTP_DEFAULT=self.smtp.conn_json(),
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            NO_PROXY="127.0.0.1,localhost",
        )
        return self

    def send_events_to(self, url: str, token: str) -> None:
        """Restart the registry (same storage, port and users) with its notifications going to
        ``url`` with ``Authorization: Bearer <token>``: the Registry page's event receiver. It
        keeps retrying a delivery until the receiver answers (Airflow may not be up yet)."""
        from devstack.services import NotifyEndpoint

        old = self.registry
        old.stop()
        endpoint = NotifyEndpoint(url, token, timeout="5s", threshold=5, backoff="1s")
        self.registry = RegistryService(old.root, OCI_USER, self.oci_password, old.port, notify=(endpoint,))
        self.registry.start()

    def stop(self) -> None:
        for service in (self.smtp, self.registry_dr, self.registry, self.moto):
            if service:
                service.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
