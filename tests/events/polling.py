"""Waiting for what another process does (a registry's notification, the receiver's write)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``check()``'s first truthy answer, polled every 0.2 s; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")
