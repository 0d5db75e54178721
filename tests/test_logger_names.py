"""One logger naming scheme: every module logs to ``logging.getLogger(__name__)``, so records are
named ``include.registry_ops.<module>`` and ``-v`` / Airflow's root handler treat them alike.

Airflow 3's task runner puts its handler on the root logger (``airflow.sdk._shared.logging``),
so module loggers reach the task log by propagation; the DAG tests read our lines in task logs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_loggers(path: Path) -> list[str]:
    """The argument of each module-level ``log = logging.getLogger(...)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr == "getLogger":
                found.append(ast.unparse(node.value.args[0]) if node.value.args else "<root>")
    return found


def test_every_module_logger_is_named_by_its_module():
    wrong = {
        str(path.relative_to(ROOT)): names
        for folder in ("include", "dags", "plugins")
        for path in (ROOT / folder).rglob("*.py")
        if (names := [n for n in _module_loggers(path) if n != "__name__"])
    }
    assert not wrong
    assert _module_loggers(ROOT / "include" / "registry_ops" / "retention" / "executor.py") == ["__name__"]
