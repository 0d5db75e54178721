"""The production package carries no test rig: what ``include/``, ``dags/`` and ``plugins/``
import is in the runtime requirements, and the image installs only those.

The local stack (``devstack/``: moto, the SMTP sink, seeding through moto's internals, the
shims) and the test oracles live outside ``include/``; a runtime import of them would break a
production Airflow that never installed moto or aiosmtpd.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DIRS = ("include", "dags", "plugins")
DEV_ONLY = {"devstack", "tests", "bench", "moto", "aiosmtpd", "pytest", "_pytest", "ruff"}


def _top_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _pins(name: str) -> set[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return {re.split(r"[=<>\[ ]", line)[0].lower() for line in lines if line and line[0].isalpha()}


def test_runtime_code_imports_nothing_of_the_test_rig():
    offenders = {
        f"{path.relative_to(ROOT)}: {sorted(_top_imports(path) & DEV_ONLY)}"
        for folder in RUNTIME_DIRS
        for path in (ROOT / folder).rglob("*.py")
        if _top_imports(path) & DEV_ONLY
    }
    assert not offenders
    assert not (ROOT / "include" / "registry_ops" / "devstack").exists()


def test_runtime_and_development_requirements_are_apart():
    runtime, dev = _pins("requirements.txt"), _pins("requirements-dev.txt")
    assert {"apache-airflow", "apache-airflow-providers-amazon", "boto3", "pandas"} <= runtime
    assert not runtime & {"pytest", "moto", "aiosmtpd", "ruff"}
    assert {"pytest", "moto", "aiosmtpd", "ruff"} <= dev
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")


def test_make_installs_the_development_set_and_the_image_the_runtime_set():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-r requirements-dev\.txt", makefile)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "requirements-dev" not in dockerfile and "devstack" not in dockerfile
    # one pip command, continued over lines with a backslash
    assert re.search(r"pip install (?:[^\n]|\\\n)*-r /opt/airflow/requirements\.txt", dockerfile)
