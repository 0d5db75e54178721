"""Read one registry into a backup catalog, through the ``Registry`` interface only.

Per repository: its settings (where ``capabilities.repository_settings``), every tag and the
digest it names (``tag_map``), and every manifest reachable from them: index children (nested
too) and referrers. Where listings reach untagged manifests (ECR, layouts: ``tag_map`` is
complete) referrers are among them; elsewhere tag-schema and cosign referrers are tags, and
untagged ones are asked of the referrers API where the registry has one (``referrers_api``).

Incremental: a manifest's content never changes under its digest, so a digest the previous
snapshot already holds (``known``: its catalog entry, with a stored location for its bytes) is
not read again. Besides saving the reads, this matters on ECR, where ``BatchGetImage`` counts as
a pull and moves ``lastRecordedPullTime``: each manifest is read once, when it is new, not on
every daily backup (which would make every image look pulled and defeat pull-based retention).

What comes back per repository: its catalog entry, the manifests and config blobs read this run
(to be packed by ``run.py``), and the images that could not be read (left out, named).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..registries.base import INDEX_TYPES, Manifest, Registry, RegistryError
from .catalog import ManifestEntry, RepositoryEntry

log = logging.getLogger(__name__)


@dataclass
class Small:
    """Bytes to pack: a manifest or a config blob read this run."""

    digest: str
    media_type: str
    data: bytes


@dataclass
class RepositoryRead:
    """What :func:`collect_repository` found."""

    entry: RepositoryEntry
    small: dict[str, Small] = field(default_factory=dict)  # digest -> bytes read this run
    blob_sizes: dict[str, int] = field(default_factory=dict)  # config and layer digest -> size
    problems: dict[str, str] = field(default_factory=dict)  # digest -> why it is left out
    read: int = 0  # manifests read from the registry (not known from the previous snapshot)


class ManifestProblem(ValueError):
    """A manifest whose JSON is not a manifest this code can follow."""


def entry_of(manifest: Manifest) -> tuple[ManifestEntry, dict[str, int]]:
    """The catalog entry of a manifest and the sizes of the blobs it names (config, layers)."""
    try:
        body = json.loads(manifest.raw)
    except ValueError as exc:
        raise ManifestProblem(f"manifest {manifest.digest} is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ManifestProblem(f"manifest {manifest.digest} is not a JSON object")
    sizes: dict[str, int] = {}
    children: list[str] = []
    config: str | None = None
    layers: list[str] = []
    try:
        if manifest.media_type in INDEX_TYPES:
            children = [e["digest"] for e in body.get("manifests") or []]
        else:
            cfg = body.get("config")
            if cfg:
                config = cfg["digest"]
                sizes[config] = int(cfg.get("size", 0))
            for layer in body.get("layers") or []:
                layers.append(layer["digest"])
                sizes[layer["digest"]] = int(layer.get("size", 0))
        subject = (body.get("subject") or {}).get("digest")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestProblem(f"manifest {manifest.digest}: malformed descriptor ({exc!r})") from None
    entry = ManifestEntry(
        digest=manifest.digest,
        media_type=manifest.media_type,
        size=len(manifest.raw),
        children=children,
        subject=subject,
        config=config,
        layers=layers,
    )
    return entry, sizes


def _referrer_probe_needed(registry: Registry, complete: bool) -> bool:
    """Whether untagged referrers must be asked for: the listing missed untagged manifests and
    the registry may have a referrers API (None: not probed yet)."""
    return not complete and registry.capabilities.referrers_api is not False


def collect_repository(
    registry: Registry,
    repository: str,
    known: dict[str, ManifestEntry],
    known_sizes: dict[str, int],
    have: Callable[[str], bool],
    fetched: dict[str, bytes] | None = None,
) -> RepositoryRead:
    """One repository's catalog entry (see the module docstring).

    ``known``: manifest entries of earlier snapshots by digest; one is reused only where ``have``
    says its bytes are stored. ``have(digest)`` also decides which config blobs are read: those
    not stored yet. A manifest or config that cannot be read leaves its image (and the tags and
    indexes naming it) out, named in ``problems``; only a failure of the whole listing raises.
    ``fetched``: config blobs already read this run (shared between repositories: a config two
    repositories use is downloaded once)."""
    settings = (
        registry.describe_repository(repository).as_dict()
        if registry.capabilities.repository_settings
        else {}
    )
    tag_map, complete = registry.tag_map(repository)
    out = RepositoryRead(RepositoryEntry(repository, settings))
    entries: dict[str, ManifestEntry] = {}
    gone: set[str] = set()
    pending = sorted(tag_map)
    asked_referrers: set[str] = set()
    while pending:
        _take(registry, repository, pending, known, known_sizes, have, entries, gone, out)
        pending = sorted(
            {c for e in entries.values() for c in e.children} - set(entries) - gone - set(out.problems)
        )
        if not pending and _referrer_probe_needed(registry, complete):
            subjects = sorted(set(entries) - asked_referrers)
            asked_referrers |= set(subjects)
            pending = sorted(_referrers(registry, repository, subjects) - set(entries) - gone)
    for digest in sorted(gone & set(tag_map)):
        log.warning("backup: %s/%s: %s: deleted while read; left out", registry.name, repository, digest)
    _fetch_configs(registry, repository, entries, have, out, {} if fetched is None else fetched)
    _drop_broken_indexes(entries, gone, out)
    out.entry.manifests = sorted(entries.values(), key=lambda e: e.digest)
    out.entry.tags = {t: d for d, ts in tag_map.items() if d in entries for t in sorted(ts)}
    kept = set(entries) | {e.config for e in entries.values() if e.config}
    out.small = {d: s for d, s in out.small.items() if d in kept}  # read, then left out with its image
    return out


def _drop_broken_indexes(entries: dict[str, ManifestEntry], gone: set[str], out: RepositoryRead) -> None:
    """An index with a child that could not be read is not whole: it is left out too (and an
    index above it), named in ``problems``."""
    changed = True
    while changed:
        changed = False
        for e in list(entries.values()):
            bad = next((c for c in e.children if c in out.problems or c in gone), None)
            if bad is not None:
                why = out.problems.get(bad, "not in the registry any more")
                out.problems[e.digest] = f"child manifest {bad}: {why}"
                del entries[e.digest]
                changed = True


def _take(
    registry: Registry,
    repository: str,
    digests: list[str],
    known: dict[str, ManifestEntry],
    known_sizes: dict[str, int],
    have: Callable[[str], bool],
    entries: dict[str, ManifestEntry],
    gone: set[str],
    out: RepositoryRead,
) -> None:
    """Entries of ``digests``: known ones reused, the others read (``read_images``)."""
    to_read = []
    for digest in digests:
        prev = known.get(digest)
        if prev is not None and have(digest):
            entries[digest] = prev
            for blob in prev.blobs():
                if blob in known_sizes:
                    out.blob_sizes[blob] = known_sizes[blob]
        else:
            to_read.append(digest)
    if not to_read:
        return
    read = registry.read_images(repository, to_read)
    out.read += len(read.found)
    gone |= read.gone
    out.problems.update({d: f"manifest unreadable: {why}" for d, why in read.failures.items()})
    for digest, manifest in read.found.items():
        try:
            entry, sizes = entry_of(manifest)
        except ManifestProblem as exc:
            out.problems[digest] = str(exc)
            continue
        entries[digest] = entry
        out.blob_sizes.update(sizes)
        out.small[digest] = Small(digest, manifest.media_type, manifest.raw)


def _referrers(registry: Registry, repository: str, subjects: list[str]) -> set[str]:
    """Digests of the referrers of ``subjects`` (the referrers API, where there is one)."""
    if not subjects:
        return set()
    found = {d.digest for d in registry.list_referrers(repository, subjects[0])}
    if registry.capabilities.referrers_api is False:  # probed: no API, the tags were all there is
        return found
    with ThreadPoolExecutor(max(1, registry.concurrency)) as pool:
        for descriptors in pool.map(lambda d: registry.list_referrers(repository, d), subjects[1:]):
            found |= {d.digest for d in descriptors}
    return found


def _fetch_configs(
    registry: Registry,
    repository: str,
    entries: dict[str, ManifestEntry],
    have: Callable[[str], bool],
    out: RepositoryRead,
    fetched: dict[str, bytes],
) -> None:
    """Read the config blobs not stored yet (nor read by another repository this run); a config
    that cannot be read leaves out its image."""
    wanted = sorted({e.config for e in entries.values() if e.config and not have(e.config)})
    for digest in [d for d in wanted if d in fetched]:
        out.small[digest] = Small(digest, "application/octet-stream", fetched[digest])
    wanted = [d for d in wanted if d not in fetched]

    def one(digest: str) -> tuple[str, bytes | str]:
        try:
            return digest, registry.get_blob(repository, digest)
        except RegistryError as exc:
            return digest, exc.problem
        except Exception as exc:  # a transport error (requests) of one blob: that image fails
            return digest, f"{type(exc).__name__}: {exc}"

    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, min(registry.concurrency, len(wanted) or 1))) as pool:
        for digest, got in pool.map(one, wanted):
            if isinstance(got, bytes):
                out.small[digest] = Small(digest, "application/octet-stream", got)
                fetched[digest] = got
            else:
                failed[digest] = got
    for e in list(entries.values()):
        if e.config in failed:
            out.problems[e.digest] = f"config blob {e.config}: {failed[e.config]}"
            del entries[e.digest]
