"""What an earlier listing of a registry already read, so the next one does not read it again.

Manifests and image configs are content-addressed: the bytes behind a digest never change, so a
digest read once (in any repository of the registry) never needs another GET. Tags do move, so
a tag the earlier listing saw is asked with one ``HEAD`` (the digest it has now) and fetched
only when that digest is new. The inventory keeps this in its snapshots (``inventory_cache``).

Cached manifests are trusted only after their bytes hash to their digest again: a damaged cache
costs GETs, never wrong records. Configs are kept as the four fields the records use.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Manifest

# The image config fields inventory records read (``created`` and the platform).
CONFIG_FIELDS = ("created", "os", "architecture", "variant")


def config_subset(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in CONFIG_FIELDS if config.get(k) not in (None, "")}


@dataclass
class KnownContent:
    """Manifests and configs by digest, the digest each (repository, tag) had, and what this
    listing saw (the next cache: only what still exists, so it never grows without bound)."""

    manifests: dict[str, Manifest] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    seen_manifests: dict[str, Manifest] = field(default_factory=dict)
    seen_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pending: dict[str, threading.Event] = field(default_factory=dict, repr=False)

    @classmethod
    def verified(
        cls,
        manifests: list[tuple[str, str, bytes]],
        configs: dict[str, dict[str, Any]],
        tags: dict[tuple[str, str], str],
    ) -> KnownContent:
        """From stored (digest, media type, bytes) rows: rows whose bytes do not hash to their
        digest are dropped (and counted as ``rejected``)."""
        known = cls(configs=dict(configs), tags=dict(tags))
        for digest, media_type, raw in manifests:
            algorithm, _, hexdigest = digest.partition(":")
            if algorithm == "sha256" and hashlib.sha256(raw).hexdigest() == hexdigest:
                known.manifests[digest] = Manifest(digest, media_type, raw)
            else:
                known.stats["rejected"] += 1
        return known

    def manifest(self, digest: str, fetch: Callable[[], Manifest]) -> Manifest:
        """The manifest of ``digest``: from the cache, else ``fetch()`` once, however many
        threads ask at the same time (a digest with two tags, a child of two indexes). Either way
        it is part of what this listing saw."""
        with self._lock:
            m = self.manifests.get(digest)
            pending = None if m else self._pending.get(digest)
            owner = m is None and pending is None
            if owner:
                pending = self._pending[digest] = threading.Event()
            self.stats["manifest_misses" if owner else "manifest_hits"] += 1
        if m is None:
            assert pending is not None
            m = self._fetched(digest, fetch, pending, owner)
        self.saw_manifest(m)
        return m

    def _fetched(
        self, digest: str, fetch: Callable[[], Manifest], pending: threading.Event, owner: bool
    ) -> Manifest:
        if not owner:
            pending.wait()
            return self.manifests.get(digest) or fetch()  # the owner's fetch failed: try ours
        try:
            m = fetch()
            self.manifests[digest] = m
            return m
        finally:
            with self._lock:
                del self._pending[digest]
            pending.set()

    def saw_manifest(self, m: Manifest) -> None:
        self.seen_manifests[m.digest] = m

    def config(self, digest: str) -> dict[str, Any] | None:
        """The cached config fields of ``digest`` (recorded as seen), or None: fetch it and
        :meth:`saw_config` it."""
        cfg = self.configs.get(digest)
        with self._lock:
            self.stats["config_hits" if cfg is not None else "config_misses"] += 1
        if cfg is not None:
            self.seen_configs[digest] = cfg
        return cfg

    def saw_config(self, digest: str, config: dict[str, Any]) -> None:
        self.seen_configs[digest] = config_subset(config)
