"""What the bench scripts share for printing their figures and counting S3 requests."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any

WIDTH = 100


def out(line: str = "") -> None:
    print(line, flush=True)


def note(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def title(text: str) -> None:
    out()
    out("=" * WIDTH)
    out(text)
    out("=" * WIDTH)


def row(label: str, value: Any, comment: str = "") -> None:
    text = f"  {label:<50} {value!s:>14}"
    out(f"{text}   {comment}" if comment else text)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class S3Counter:
    """S3 requests by operation through botocore's before-send event."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> Counter[str]:
        """The counts so far, and a fresh start."""
        with self._lock:
            got, self.counts = self.counts, Counter()
        return got
