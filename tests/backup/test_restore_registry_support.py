"""Helpers of the restore-registry tests (no tests here; the name keeps it with its tests).

- :func:`catalog_of`: a backup catalog of live repositories, read through the registry
  interface, with a :class:`MemorySource` holding their bytes: the engine's tests need a
  snapshot whose source is independent of the backup engine, and whose objects a test can damage.
- :class:`Writes`: every write call a registry adapter receives, recorded (and optionally
  stopped, as a crash would) by wrapping the adapter's write methods on the instance.
- :func:`contents`: what a registry holds of some repositories (digest -> manifest bytes,
  tags, blob sizes), for before/after comparisons.
"""

from __future__ import annotations

import io
import uuid
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

from include.registry_ops.backup.catalog import Catalog, ManifestEntry, RepositoryEntry
from include.registry_ops.registries.base import Manifest, Registry

WRITES = (
    "create_repository",
    "apply_repository_settings",
    "put_blob",
    "mount_blob",
    "put_manifest",
    "delete_manifest",
    "delete_tag",
    "delete_blob",
    "apply_registry_settings",
)


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}/"


class Crash(BaseException):
    """An injected crash: not an error the restore handles, so it stops the run like a kill."""


class MemorySource:
    """Snapshot bytes in memory: manifests and configs (``data``), layers (``layers``). What the
    catalog lists stays listed (``holds``) when a test deletes its bytes, as in a store that
    lost an object."""

    def __init__(self, data: dict[str, bytes], layers: dict[str, bytes]) -> None:
        self.data, self.layers = data, layers
        self.listed = set(data) | set(layers)
        self.reads: Counter[str] = Counter()

    def manifest_bytes(self, digest: str) -> bytes:
        self.reads[digest] += 1
        if digest not in self.data:
            raise RuntimeError(f"memory store: {digest} is missing")
        return self.data[digest]

    def open_layer(self, digest: str) -> IO[bytes]:
        self.reads[digest] += 1
        if digest not in self.layers:
            raise RuntimeError(f"memory store: layer {digest} is missing")
        return io.BytesIO(self.layers[digest])

    def holds(self, digest: str) -> bool:
        return digest in self.listed

    def where(self, digest: str) -> str:
        return f"{digest} (memory)"


def _entry(m: Manifest) -> ManifestEntry:
    body = m.body
    return ManifestEntry(
        digest=m.digest,
        media_type=m.media_type,
        size=len(m.raw),
        children=[c["digest"] for c in body.get("manifests") or []],
        subject=(body.get("subject") or {}).get("digest"),
        config=(body.get("config") or {}).get("digest"),
        layers=[x["digest"] for x in body.get("layers") or []],
    )


def catalog_of(reg: Registry, repos: list[str], *, layers: bool = True) -> tuple[Catalog, MemorySource]:
    """Everything ``repos`` hold, as a catalog and its bytes (``layers`` False: a metadata
    backup, layers named but not stored)."""
    catalog = Catalog(registry=reg.name, registry_kind=reg.kind)
    data: dict[str, bytes] = {}
    stored_layers: dict[str, bytes] = {}
    for name in sorted(repos):
        state, _ = reg.tag_map(name)
        entry = RepositoryEntry(
            name=name,
            settings=reg.describe_repository(name).as_dict() if reg.capabilities.repository_settings else {},
            tags={t: d for d, tags in state.items() for t in tags},
        )
        todo, seen = sorted(state), set()
        while todo:
            digest = todo.pop()
            if digest in seen:
                continue
            seen.add(digest)
            m = reg.get_manifest(name, digest)
            data[m.digest] = m.raw
            e = _entry(m)
            entry.manifests.append(e)
            todo.extend(e.children)
            if e.config:
                data[e.config] = reg.get_blob(name, e.config)
                catalog.blob_sizes[e.config] = len(data[e.config])
            for layer in e.layers:
                if layer not in stored_layers:
                    blob = reg.get_blob(name, layer)
                    catalog.blob_sizes[layer] = len(blob)
                    if layers:
                        stored_layers[layer] = blob
        catalog.repositories.append(entry)
    for digest, raw in data.items():
        catalog.objects[digest] = {"pack": "memory", "offset": 0, "size": len(raw)}
    for digest, blob in stored_layers.items():
        catalog.objects[digest] = {"key": f"memory/{digest}", "size": len(blob)}
    return catalog, MemorySource(data, stored_layers)


class Writes:
    """Records ``(method, repository, what)`` of every write; ``stop_after`` raises Crash before
    the write that would exceed that many calls of ``stop_on`` (nothing of it is done)."""

    def __init__(self, reg: Registry, stop_on: str | None = None, stop_after: int | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.stop_on, self.stop_after = stop_on, stop_after
        for method in WRITES:
            original = getattr(reg, method, None)
            if original is not None:
                setattr(reg, method, self._wrap(method, original))

    def _wrap(self, method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(repository: Any = None, *args: Any, **kwargs: Any) -> Any:
            what = _what(method, args, kwargs)
            stop = self.stop_on == method and self.stop_after is not None
            if stop and sum(1 for c in self.calls if c[0] == method) >= self.stop_after:
                raise Crash(f"injected crash before {method} {repository} {what}")
            self.calls.append((method, str(repository), what))
            return original(repository, *args, **kwargs)

        return call

    def of(self, method: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] == method]


def _what(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if method == "put_manifest":
        manifest, tag = args[0], (args[1] if len(args) > 1 else kwargs.get("tag"))
        return f"{manifest.digest}:{tag or ''}"
    if method in ("put_blob",):
        return str(args[1] if len(args) > 1 else kwargs.get("digest"))
    if args:
        return str(args[0])
    return ""


def contents(reg: Registry, repos: list[str]) -> dict[str, dict[str, Any]]:
    """repo -> {"manifests": {digest: raw}, "tags": {tag: digest}, "blobs": {digest: size}}
    (manifests: those the tags reach, their children, and on kinds listing untagged ones all)."""
    out: dict[str, dict[str, Any]] = {}
    for name in repos:
        state, _ = reg.tag_map(name)
        manifests: dict[str, bytes] = {}
        blobs: dict[str, int | None] = {}
        todo = sorted(state)
        while todo:
            digest = todo.pop()
            if digest in manifests:
                continue
            m = reg.get_manifest(name, digest)
            manifests[digest] = m.raw
            e = _entry(m)
            todo.extend(e.children)
            for b in e.blobs():
                blobs[b] = reg.head_blob(name, b)
        out[name] = {
            "manifests": manifests,
            "tags": {t: d for d, tags in state.items() for t in tags},
            "blobs": blobs,
        }
    return out
