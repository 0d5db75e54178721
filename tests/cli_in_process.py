"""``registry-ops ARGS`` through ``cli.main`` in the test's own process, returned as a subprocess
would return it: a process per command pays a Python and Airflow start-up (seconds) each, and
tests that run many commands only need the exit code and what was printed."""

from __future__ import annotations

import json
import subprocess
from typing import Any

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


def run_json(capfd: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, Any, str]:
    """Exit code, the command's JSON result (None when it printed none), and everything else
    printed: stdout before the result, then stderr; all of stdout when no JSON result parses,
    so a test can still assert on raw text."""
    done = run(capfd, argv)
    result, before = _split_result(done.stdout)
    return done.returncode, result, before + done.stderr


def _split_result(stdout: str) -> tuple[Any, str]:
    """``(result, what stdout held before it)``. ``cli.main`` prints its result last, as
    ``json.dumps(indent=2)``: a document opening with a line that is exactly ``{`` or ``[`` (its
    nested lines are indented), or one line (``[]``, ``{}``). Under pytest, Airflow's loggers may
    write lines to the captured stdout before it: hence the last such opening line."""
    lines = stdout.splitlines()
    opens = [i for i, line in enumerate(lines) if line in ("{", "[")]
    start = opens[-1] if opens else _last_nonblank(lines)
    if start is None:
        return None, stdout
    try:
        result = json.loads("\n".join(lines[start:]))
    except json.JSONDecodeError:
        return None, stdout
    return result, "".join(line + "\n" for line in lines[:start])


def _last_nonblank(lines: list[str]) -> int | None:
    return next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip()), None)
