"""``registry-ops ARGS`` through ``cli.main`` in the test's own process, returned as a subprocess
would return it: a process per command pays a Python and Airflow start-up (seconds) each, and
tests that run many commands only need the exit code and what was printed."""

from __future__ import annotations

import subprocess

import pytest

from include.registry_ops.cli import main


def run(capfd: pytest.CaptureFixture[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Exit code (argparse's SystemExit included), stdout and stderr of ``registry-ops argv``."""
    capfd.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refuses the line: exit 2, its message on stderr
        code = exc.code if isinstance(exc.code, int) else 1
    out = capfd.readouterr()
    return subprocess.CompletedProcess(list(argv), code, out.out, out.err)
