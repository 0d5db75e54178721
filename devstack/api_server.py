"""``airflow api-server`` alone (no scheduler), for tests that need Airflow's real UI and REST
API with our plugin loaded: the Registry page's browser test signs in through Airflow's login
form, opens the page from the nav and triggers a DAG run.

Users sign in with a password (the simple auth manager's users and passwords file), not the
demo's all-admins mode, so the test goes through a real sign-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """An API server on 127.0.0.1 with ``users`` (name -> password, all admins), the plugins
    folder of this repository and the caller's environment (AIRFLOW_HOME, connections)."""

    def __init__(self, work: Path, users: dict[str, str], **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.users = users
        passwords = work / "passwords.json"
        passwords.write_text(json.dumps(users))
        self.log_path = work / "api-server.log"
        self.env = {
            **os.environ,
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:admin" for u in users),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.base,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> ApiServer:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow api-server exited ({self.proc.returncode}): {self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        raise RuntimeError(f"airflow api-server did not answer within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def token(self, user: str) -> str:
        resp = requests.post(
            f"{self.base}/auth/token", json={"username": user, "password": self.users[user]}, timeout=10
        )
        resp.raise_for_status()
        return resp.json()["access_token"]

    def api(self, user: str, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(
            method,
            f"{self.base}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=30,
            **kwargs,
        )
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        self._log.close()


def reserialize_dags() -> None:
    """Parse this repository's DAGs into the metadata DB of the current ``AIRFLOW_HOME``: the REST
    API serves a DAG (and the assets it declares) only once it is serialized."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "reserialize"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
