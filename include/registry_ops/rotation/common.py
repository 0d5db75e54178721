"""What both rotations share: the secret wrapper, the error, the step record, and the guard that
keeps wire-level logs (botocore's request and response bodies) out of every log while a
rotation holds a secret.

botocore logs whole request and response bodies at DEBUG: ``CreateAccessKey``'s answer holds
the new secret access key and ``PutSecretValue``'s request the secret string. ``-vv`` (or a
DEBUG task log level) would print them, so the rotation raises those loggers to INFO for its
duration, whatever the caller configured.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# loggers that print request/response bodies or headers at DEBUG
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "requests")


class RotationError(RuntimeError):
    """A rotation cannot go on; the message names the account, secret and key (never a secret)."""


class Secret:
    """A secret string that never prints itself (``str``, ``repr``, f-strings, logs show
    ``<secret>``); ``reveal()`` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> Any:  # never pickled or copied into XCom by accident
        raise TypeError("a Secret cannot be serialised")


OnSecret = Callable[[str], None]


def no_mask(_: str) -> None:
    """Outside Airflow nothing masks: the rotation simply never logs a secret."""


@dataclass
class Step:
    """One step taken (or, in a dry run, planned): what, on which key or version, and why."""

    step: str
    target: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "target": self.target, "detail": self.detail}


@contextlib.contextmanager
def quiet_wire_logs() -> Iterator[None]:
    """Keep botocore/urllib3 (and their children) at INFO or above meanwhile."""
    touched: list[tuple[logging.Logger, int]] = []
    names = set(WIRE_LOGGERS)
    names.update(
        n for n in logging.root.manager.loggerDict if any(n.startswith(p + ".") for p in WIRE_LOGGERS)
    )
    for name in sorted(names):
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherits) or DEBUG
            touched.append((logger, logger.level))
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in touched:
            logger.setLevel(level)
