"""What every section loader gets: the config, one S3 client, the time of the request, and a
process-wide memo, so a warm page costs one small pointer read per section rather than
re-reading a 100,000-row snapshot (the pointer's content is the memo key: a new run changes it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ..config import Config

T = TypeVar("T")


class Memo:
    """A small LRU of computed values keyed by what they were computed from (an S3 key and its
    ETag, a pointer's JSON). Objects under a run's folder are written once, so a key naming one
    never goes stale; thread-safe (the page serves requests from a thread pool)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()  # outside the lock: two racing requests compute twice, never block
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class PageContext:
    config: Config
    s3: Any
    now: datetime
    memo: Memo = field(default_factory=Memo)

    @property
    def bucket(self) -> str:
        return self.config.storage.bucket
