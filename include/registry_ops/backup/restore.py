"""Restore a registry (or some of its repositories) from a backup snapshot into a target registry
of any kind: ECR, a distribution registry, an OCI image layout directory.

Why the order: a pull must never meet a half-restored image, and registries refuse dangling
references. So, per repository: the repository with its settings (ECR creates it explicitly),
then every blob the manifests need, then the manifests in :meth:`RepositoryEntry.manifest_order`
(children before indexes, subjects before referrers) in waves, each wave read back and compared
byte for byte before the next starts, then the tags, each checked by a HEAD after its write.

Why it is safe to rerun: every write is preceded by a check (the target's state read up front,
``head_blob``, ``head_manifest``), so a rerun after a crash writes only what is missing, and a
rerun of a finished restore writes nothing. Settings are compared before they are applied.

Why bad input writes nothing: :func:`prepare` reads only, and refuses (:class:`RestoreRefused`,
a ValueError, exit 2 on the command line) a target repository that holds content the snapshot
does not (a manifest or a tag pointing elsewhere) unless ``force``; with ``force`` the
snapshot's tags are moved back to its digests and nothing is ever deleted.

Why one image's damage does not stop the rest: a blob or manifest the source cannot give
(missing or corrupt in the store: :class:`RestoreSource` raises) is a named failure, naming the
object and the images that need it; those images (and indexes and referrers built on them) are
not written, everything else is. Bytes reach the target only through ``put_blob``, which refuses
content that does not hash to its digest, so damage is never copied.

``dry_run``: the same reads, no write; the summary counts what would be written.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any, Protocol

from ..registries.base import Manifest, NotFound, Registry, RegistryError, RepositorySettings, digest_of
from .catalog import Catalog, ManifestEntry, RepositoryEntry

log = logging.getLogger(__name__)

# What a failing source object or registry call raises: RegistryError, the store's BlobError and
# BackupError are RuntimeErrors; a file or a malformed answer is OSError or ValueError. A crash
# (KeyboardInterrupt, a killed worker) is none of these and stops the restore.
ITEM_ERRORS = (RuntimeError, OSError, ValueError)
POLICIES = ("lifecycle_policy", "repository_policy")
NAMED = 3  # images named in a failure before "+N more"


class RestoreRefused(ValueError):
    """Bad input found before anything was written: an empty selection, a name clash, a target
    repository holding other content without ``force``."""


class RestoreSource(Protocol):
    """Where the snapshot's bytes come from (the backup store; tests may use another)."""

    def manifest_bytes(self, digest: str) -> bytes:
        """A manifest's or a config's bytes, checked against the digest."""

    def open_layer(self, digest: str) -> IO[bytes]:
        """A layer as a stream, hashed while read (corruption raises at the end)."""

    def holds(self, digest: str) -> bool:
        """Whether the snapshot stored this object at all (a metadata backup stores no layers)."""

    def where(self, digest: str) -> str:
        """The object's name in the store, for error messages."""


class StoreSource:
    """The backup store (``backup/store.py``'s :class:`SnapshotStore`) for one catalog.

    :meth:`prefetch` reads a pack whole when several of its members are wanted (one GET instead
    of one ranged GET per manifest and config); each member is checked against its digest before
    it is kept, and anything not kept is read (and its damage reported) by the store itself."""

    PACK_READ_MIN = 4  # members of one pack wanted at once before the whole pack is read

    def __init__(self, store: Any, catalog: Catalog) -> None:
        self.store, self.catalog = store, catalog
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}

    def manifest_bytes(self, digest: str) -> bytes:
        with self._lock:
            data = self._cache.pop(digest, None)
        return data if data is not None else self.store.manifest_bytes(self.catalog, digest)

    def open_layer(self, digest: str) -> IO[bytes]:
        return self.store.open_layer(self.catalog, digest)

    def holds(self, digest: str) -> bool:
        return digest in self.catalog.objects

    def where(self, digest: str) -> str:
        loc = self.catalog.objects.get(digest)
        if not loc:
            return f"{digest} (not in the backup)"
        key = loc.get("key") or loc.get("pack")
        name = self.store.url(key) if key else "?"
        return f"{digest} ({name}{'@' + str(loc['offset']) if 'offset' in loc else ''})"

    def prefetch(self, digests: Iterable[str]) -> None:
        by_pack: dict[str, list[str]] = defaultdict(list)
        for d in digests:
            loc = self.catalog.objects.get(d)
            if loc and "pack" in loc and d not in self._cache:
                by_pack[loc["pack"]].append(d)
        for pack, members in sorted(by_pack.items()):
            if len(members) < self.PACK_READ_MIN:
                continue
            try:
                data = self.store.blobs.read_object(pack)
            except ITEM_ERRORS:
                data = None  # the store's own reads name the damage, member by member
            if data is None:
                continue
            for d in members:
                loc = self.catalog.objects[d]
                member = data[int(loc["offset"]) : int(loc["offset"]) + int(loc["size"])]
                if digest_of(member) == d:
                    with self._lock:
                        self._cache[d] = member


# -- planning: reads only ------------------------------------------------------------------------
@dataclass
class RepoPlan:
    """One repository to restore and what the target holds of it now."""

    entry: RepositoryEntry
    name: str  # in the target
    exists: bool
    tags_now: dict[str, str] = field(default_factory=dict)  # tag -> digest in the target now
    present: set[str] = field(default_factory=set)  # manifests the target is known to hold
    complete: bool = False  # ``present`` is all it holds (the kind lists untagged manifests)
    conflicts: list[str] = field(default_factory=list)  # content the snapshot does not hold


def select(
    catalog: Catalog, repos: str | None, rename: Callable[[str], str] | None
) -> list[tuple[RepositoryEntry, str]]:
    """The repositories ``repos`` (a glob) picks, each with its name in the target."""
    chosen = [r for r in catalog.repositories if repos is None or fnmatch.fnmatchcase(r.name, repos)]
    return [(r, rename(r.name) if rename else r.name) for r in sorted(chosen, key=lambda r: r.name)]


def prepare(
    catalog: Catalog,
    target: Registry,
    *,
    repos: str | None = None,
    rename: Callable[[str], str] | None = None,
    existing: set[str] | None = None,
) -> list[RepoPlan]:
    """Read the target's state of every selected repository (no write). ``existing``: the
    target's repositories, when the caller listed them already. Only where repositories are
    created explicitly (ECR) is one missing from the listing surely empty; elsewhere (a catalog
    that lags or lists nothing) its tags are read all the same."""
    existing = set(target.list_repositories()) if existing is None else existing
    plans = []
    for entry, name in select(catalog, repos, rename):
        listed = name in existing
        plan = RepoPlan(entry, name, listed)
        if listed or not target.capabilities.explicit_repositories:
            try:
                state, complete = target.tag_map(name)
            except NotFound:
                state, complete = {}, False
            plan.exists = listed or bool(state)
            ours = {m.digest for m in entry.manifests}
            plan.tags_now = {t: d for d, tags in state.items() for t in tags}
            plan.present, plan.complete = set(state) & ours, complete
            foreign = sorted(d for d in state if d not in ours)
            moved = sorted(t for t, d in plan.tags_now.items() if entry.tags.get(t) != d)
            plan.conflicts = [f"tag {t!r} -> {plan.tags_now[t]}" for t in moved] + [
                f"manifest {d}" for d in foreign
            ]
        plans.append(plan)
    return plans


def refuse_conflicts(
    target: Registry, plans: Iterable[RepoPlan], force: bool, registry_conflicts: Iterable[str] = ()
) -> None:
    """RestoreRefused naming each target repository that holds other content, and each
    registry-level setting configured otherwise in the target (unless ``force``)."""
    if force:
        return
    busy = [p for p in plans if p.conflicts]
    lines = [
        f"{target.name}/{p.name}: {len(p.conflicts)} item(s) not in the snapshot, e.g. {p.conflicts[0]}"
        for p in busy
    ]
    settings = list(registry_conflicts)
    if settings:
        lines.insert(0, f"{target.name}: {', '.join(settings)} configured otherwise")
    if lines:
        raise RestoreRefused(
            f"target {target.name} is not empty: it holds content the snapshot does not "
            f"({'; '.join(lines[:5])}{'; ...' if len(lines) > 5 else ''}); nothing was written. Use "
            "--force to restore over it (the snapshot's tags and settings win, nothing is deleted), "
            "or restore elsewhere"
        )


def refuse_clashes(pairs: Iterable[tuple[str, str]]) -> None:
    """Two source repositories restored to one target name would mix: refused."""
    seen: dict[str, str] = {}
    for source, name in pairs:
        if name in seen and seen[name] != source:
            raise RestoreRefused(
                f"{seen[name]} and {source} would both be restored to repository {name!r}; "
                "restore one source registry at a time (--registry) or rename"
            )
        seen[name] = source


# -- the run -----------------------------------------------------------------------------------
class _Run:
    """One restore of one catalog: counters, failures, and the steps (thread-safe)."""

    def __init__(
        self,
        catalog: Catalog,
        source: RestoreSource,
        target: Registry,
        pool: ThreadPoolExecutor,
        dry_run: bool,
        force: bool,
    ) -> None:
        self.catalog, self.source, self.target, self.pool = catalog, source, target, pool
        self.dry_run, self.force = dry_run, force
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.failures: dict[str, str] = {}
        self.failed_images: dict[str, set[str]] = defaultdict(set)
        self.per_repo: dict[str, Counter[str]] = defaultdict(Counter)
        self.settings: dict[str, dict[str, list[str]]] = {}
        self.holders: dict[str, str] = {}  # blob -> a target repository holding it (mounts)
        self.raw: dict[str, bytes] = {}
        self.tagged: set[tuple[str, str]] = set()  # (repository, tag) written with its manifest

    def count(self, repo: str, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n
            self.per_repo[repo][what] += n

    def fail(self, key: str, reason: str, repo: str, images: Iterable[str] = ()) -> None:
        with self.lock:
            self.failures[key] = f"{self.failures[key]}; {reason}" if key in self.failures else reason
            self.failed_images[repo].update(images)
        log.warning("restore %s: %s: %s", self.target.name, key, reason)

    # -- repository and settings ---------------------------------------------------------------
    def repository(self, plan: RepoPlan) -> bool:
        """The repository with its settings; False if it could not be created (its images fail).
        Settings that cannot be applied fail the repository's settings only: its images go on."""
        name, target = plan.name, self.target
        wanted = RepositorySettings.from_dict(plan.entry.settings)
        given = wanted.given()
        holds = target.capabilities.repository_settings
        if given and not holds:
            self.settings.setdefault(name, {})["not_held"] = sorted(given)
        if not plan.exists:
            self.count(name, "repositories_created")
            if holds and given:
                self.settings.setdefault(name, {})["applied"] = sorted(given)
            if self.dry_run:  # no repository created
                return True
            try:
                target.create_repository(name, wanted if holds else None)
            except ITEM_ERRORS as exc:
                self.fail(name, f"repository not created: {exc}", name)
                return False
        try:
            have = target.describe_repository(name) if holds and given else None
            change = settings_change(wanted, have) if have is not None else None
            if change is not None and plan.exists:
                self.settings.setdefault(name, {})["applied"] = sorted(change.given())
                if not self.dry_run:  # settings applied only for real
                    target.apply_repository_settings(name, change)
                    change = settings_change(wanted, target.describe_repository(name))
            if change is not None and not self.dry_run:
                self.fail(name, f"settings did not take: {', '.join(sorted(change.given()))}", name)
        except ITEM_ERRORS as exc:
            self.fail(name, f"repository settings: {exc}", name)
        return True

    # -- blobs ---------------------------------------------------------------------------------
    def _empty(self, plan: RepoPlan) -> bool:
        """The repository did not exist before this run and its kind keeps nothing outside an
        explicitly created repository (ECR): no HEAD can find anything in it."""
        return not plan.exists and self.target.capabilities.explicit_repositories

    def blobs(self, plan: RepoPlan) -> set[str]:
        """Make every blob the manifests need present; returns the digests that failed."""
        name, users = plan.name, defaultdict(list)
        configs = {m.config for m in plan.entry.manifests if m.config}
        for m in plan.entry.manifests:
            for d in m.blobs():
                users[d].append(m.digest)
        failed: set[str] = set()

        def has(digest: str) -> bool | None:
            try:
                return False if self._empty(plan) else self.target.head_blob(name, digest) is not None
            except ITEM_ERRORS as exc:
                self._blob_failed(plan, digest, exc, users[digest], failed)
                return None

        digests = sorted(users)
        absent = []
        for digest, held in zip(digests, self.pool.map(has, digests), strict=True):
            if held:
                self.count(name, "blobs_present")
                with self.lock:
                    self.holders.setdefault(digest, name)
            elif held is False:
                absent.append(digest)
        self._prefetch([d for d in absent if d in configs])
        list(self.pool.map(lambda d: self._place(plan, d, d in configs, users[d], failed), absent))
        return failed

    def _place(self, plan: RepoPlan, digest: str, config: bool, users: list[str], failed: set[str]) -> None:
        """Put one absent blob: mounted from a target repository that has it, else from the source."""
        name, target, source = plan.name, self.target, self.source
        try:
            if not source.holds(digest):
                kind = "config" if config else "layer (the snapshot stored no layers for it)"
                raise LookupError(f"{kind} is in neither the backup nor the target")
            size = self.catalog.blob_sizes.get(digest)
            self.count(name, "blobs")
            if self.dry_run:  # no blob placed
                self.count(name, "bytes", size or 0)
                return
            with self.lock:
                holder = self.holders.get(digest)
            if (
                holder
                and holder != name
                and target.capabilities.mounts_blobs
                and target.mount_blob(name, digest, holder)
            ):
                self.count(name, "blobs_mounted")
            elif config:
                data = source.manifest_bytes(digest)
                target.put_blob(name, data, digest, len(data))
                self.count(name, "bytes", len(data))
            else:
                with contextlib.closing(source.open_layer(digest)) as stream:
                    target.put_blob(name, stream, digest, size)
                self.count(name, "bytes", size or 0)
            with self.lock:
                self.holders.setdefault(digest, name)
        except (LookupError, *ITEM_ERRORS) as exc:
            self._blob_failed(plan, digest, exc, users, failed)

    def _blob_failed(
        self, plan: RepoPlan, digest: str, exc: BaseException, users: list[str], failed: set[str]
    ) -> None:
        with self.lock:
            failed.add(digest)
        self.fail(
            digest, _reason(f"blob {self.source.where(digest)}", exc, plan.name, users), plan.name, users
        )

    def _prefetch(self, digests: list[str]) -> None:
        """Let the source read many small objects at once where it can (the store: whole packs)."""
        prefetch = getattr(self.source, "prefetch", None)
        if prefetch is not None and digests and not self.dry_run:
            prefetch(digests)

    # -- manifests -----------------------------------------------------------------------------
    def manifests(self, plan: RepoPlan, failed_blobs: set[str]) -> set[str]:
        """Write the absent manifests wave by wave, each wave read back before the next; returns
        the digests not restored."""
        name = plan.name
        failed: set[str] = set()
        for wave in waves(plan.entry):
            todo = []
            for m in wave:
                deps = [d for d in m.blobs() if d in failed_blobs] + [
                    d for d in (*m.children, m.subject) if d in failed
                ]
                if deps:
                    failed.add(m.digest)
                    self.fail(
                        m.digest,
                        f"{name}@{m.digest} not restored: needs {deps[0]}, not restored",
                        name,
                        [m.digest],
                    )
                else:
                    todo.append(m)
            held = list(self.pool.map(partial(self._has_manifest, plan, failed=failed), todo))
            absent = [m for m, h in zip(todo, held, strict=True) if h is False]
            self.count(name, "manifests_present", sum(1 for h in held if h))
            self.count(name, "manifests", len(absent))
            if self.dry_run or not absent:
                continue
            self._prefetch([m.digest for m in absent if m.digest not in self.raw])
            written = [
                d for d in self.pool.map(partial(self._put_manifest, plan, failed=failed), absent) if d
            ]
            if written:
                failed.update(self._verify(name, written))
        return failed

    def _has_manifest(self, plan: RepoPlan, m: ManifestEntry, failed: set[str]) -> bool | None:
        """Whether the target holds it (None: could not tell, a failure). Known from the state
        read up front where that is complete, else one HEAD."""
        if m.digest in plan.present:
            return True
        if plan.complete or self._empty(plan):
            return False
        try:
            return self.target.head_manifest(plan.name, m.digest) is not None
        except ITEM_ERRORS as exc:
            self._manifest_failed(plan, m.digest, exc, failed)
            return None

    def _put_manifest(self, plan: RepoPlan, m: ManifestEntry, failed: set[str]) -> str | None:
        """Put one absent manifest, under its first free tag where it has one; its digest, or
        None when it failed."""
        name = plan.name
        try:
            raw = self._raw(m.digest)
            tag = self._first_tag(plan, m.digest)
            got = self.target.put_manifest(name, Manifest(m.digest, m.media_type, raw), tag)
            if tag is not None:
                with self.lock:
                    self.tagged.add((name, tag))
            if got != m.digest:
                raise RegistryError(self.target.name, f"stored {m.digest} as {got}", name)
            return m.digest
        except ITEM_ERRORS as exc:
            self._manifest_failed(plan, m.digest, exc, failed)
            return None

    def _manifest_failed(self, plan: RepoPlan, digest: str, exc: BaseException, failed: set[str]) -> None:
        with self.lock:
            failed.add(digest)
        self.fail(
            digest,
            _reason(f"manifest {self.source.where(digest)}", exc, plan.name, [digest]),
            plan.name,
            [digest],
        )

    def _first_tag(self, plan: RepoPlan, digest: str) -> str | None:
        """A tag to write the manifest under (one PutImage instead of two): its first tag that
        points at nothing in the target now. Moving a tag waits for the tag step."""
        tags = sorted(t for t, d in plan.entry.tags.items() if d == digest and t not in plan.tags_now)
        return tags[0] if tags else None

    def _raw(self, digest: str) -> bytes:
        with self.lock:
            raw = self.raw.get(digest)
        if raw is None:
            raw = self.source.manifest_bytes(digest)
            if digest_of(raw) != digest:  # the store checks; a source that does not is caught here
                raise ValueError(f"the stored bytes hash to {digest_of(raw)}")
            with self.lock:
                self.raw[digest] = raw
        return raw

    def _verify(self, name: str, written: list[str]) -> set[str]:
        """Read the written manifests back: bytes equal to the snapshot's or a failure."""
        try:
            read = self.target.read_images(name, written)
        except ITEM_ERRORS as exc:
            for d in written:
                self.fail(d, f"{name}@{d}: written but not read back: {exc}", name, [d])
            return set(written)
        bad = set()
        for d in written:
            back = read.found.get(d)
            if back is None or back.raw != self.raw[d]:
                why = read.failures.get(d) or ("absent" if back is None else "different bytes")
                self.fail(d, f"{name}@{d}: written but reads back {why}", name, [d])
                bad.add(d)
        self.count(name, "manifests_verified", len(written) - len(bad))
        return bad

    # -- tags ----------------------------------------------------------------------------------
    def tags(self, plan: RepoPlan, failed: set[str]) -> None:
        """Every tag onto its digest (those written with their manifest only checked), then all
        read back: one listing where the kind lists images, else a HEAD per tag."""
        name = plan.name
        media = {m.digest: m.media_type for m in plan.entry.manifests}
        todo: dict[str, str] = {}
        for tag, digest in sorted(plan.entry.tags.items()):
            now = plan.tags_now.get(tag)
            if digest not in media:
                self.fail(digest, f"{name}: tag {tag!r} names a manifest the snapshot lacks", name)
            elif digest in failed:
                self.fail(digest, f"{name}: tag {tag!r} not restored", name, [digest])
            elif now == digest:
                self.count(name, "tags_present")
            elif now is not None and not self.force:
                self.fail(
                    digest, f"{name}: tag {tag!r} points at {now}; left (--force moves it)", name, [digest]
                )
            else:
                todo[tag] = digest
        self.count(name, "tags", len(todo))
        if self.dry_run or not todo:
            return
        puts = [(t, d) for t, d in todo.items() if (name, t) not in self.tagged]
        self._prefetch(sorted({d for _, d in puts if d not in self.raw}))

        def put(tag: str, digest: str) -> str | None:
            try:
                self.target.put_manifest(name, Manifest(digest, media[digest], self._raw(digest)), tag)
            except ITEM_ERRORS as exc:
                self.fail(digest, f"{name}: tag {tag!r}: {exc}", name, [digest])
                return tag
            return None

        lost = {t for t in self.pool.map(lambda td: put(*td), puts) if t}
        self._verify_tags(plan, {t: d for t, d in todo.items() if t not in lost})

    def _verify_tags(self, plan: RepoPlan, written: dict[str, str]) -> None:
        name, target = plan.name, self.target
        try:
            if target.capabilities.lists_untagged_manifests:
                state, _ = target.tag_map(name)
                now = {t: d for d, tags in state.items() for t in tags}
                got = [now.get(t) for t in written]
            else:
                heads = self.pool.map(lambda t: target.head_manifest(name, t), list(written))
                got = [h.digest if h is not None else None for h in heads]
        except ITEM_ERRORS as exc:
            for tag, digest in written.items():
                self.fail(digest, f"{name}: tag {tag!r} written but not read back: {exc}", name, [digest])
            return
        for (tag, digest), back in zip(written.items(), got, strict=True):
            if back != digest:
                self.fail(digest, f"{name}: tag {tag!r} reads back {back}, not {digest}", name, [digest])

    # -- one repository ------------------------------------------------------------------------
    def restore(self, plan: RepoPlan) -> None:
        started = time.monotonic()
        if not self.repository(plan):
            everything = [m.digest for m in plan.entry.manifests]
            with self.lock:
                self.failed_images[plan.name].update(everything)
            return
        failed_blobs = self.blobs(plan)
        failed = self.manifests(plan, failed_blobs)
        self.tags(plan, failed)
        log.info(
            "restore %s/%s: %s in %.1fs%s",
            self.target.name,
            plan.name,
            dict(self.per_repo[plan.name]),
            time.monotonic() - started,
            " (dry run)" if self.dry_run else "",
        )


def waves(entry: RepositoryEntry) -> list[list[ManifestEntry]]:
    """:meth:`manifest_order` cut into waves: a manifest's children and subject (in this
    repository) are all in earlier waves, so each wave can be written in parallel."""
    level: dict[str, int] = {}
    out: list[list[ManifestEntry]] = []
    for m in entry.manifest_order():
        deps = [level[d] for d in (*m.children, m.subject) if d in level]
        n = level[m.digest] = 1 + max(deps, default=-1)
        if n == len(out):
            out.append([])
        out[n].append(m)
    return out


def settings_change(wanted: RepositorySettings, have: RepositorySettings) -> RepositorySettings | None:
    """The given settings that differ from what the repository has (policies compared as JSON,
    no policy equal to an empty one); None when nothing differs."""
    change: dict[str, Any] = {}
    for key, value in wanted.given().items():
        now = getattr(have, key)
        same = _json_or_none(value) == _json_or_none(now) if key in POLICIES else value == now
        if not same:
            change[key] = value
    return RepositorySettings(**change) if change else None


def _json_or_none(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _reason(what: str, exc: BaseException, repo: str, users: list[str]) -> str:
    """``<object>: <problem>; needed by <images>`` (the store's errors name the images already)."""
    text = str(exc)
    return f"{what}: {text}" if "needed by" in text else f"{what}: {text}; needed by {_images(repo, users)}"


def _images(repo: str, digests: list[str]) -> str:
    named = ", ".join(f"{repo}@{d}" for d in digests[:NAMED])
    return named + (f" (+{len(digests) - NAMED} more)" if len(digests) > NAMED else "")


# -- registry-level settings --------------------------------------------------------------------
# What a registry holds before anyone configured it (ECR's defaults): such a value is not "other
# content", a restore may replace it.
DEFAULT_REGISTRY_SETTINGS: dict[str, Any] = {
    "replication_configuration": {"rules": []},
    "scanning_configuration": {"scanType": "BASIC", "rules": []},
}


def _same_setting(key: str, wanted: Any, have: Any) -> bool:
    """Pull-through cache rules are only ever added (a rule the target has more is kept);
    policies compare as JSON."""
    if key == "pull_through_cache_rules":
        return all(rule in (have or []) for rule in wanted or [])
    if key.endswith("policy"):
        return _json_or_none(wanted) == _json_or_none(have)
    return wanted == have


def _unset(key: str, have: Any) -> bool:
    return have in (None, {}, [], "") or have == DEFAULT_REGISTRY_SETTINGS.get(key)


def registry_settings_plan(catalog: Catalog, target: Registry) -> tuple[dict[str, Any], list[str]]:
    """The snapshot's registry-level settings the target does not have, and the conflicts among
    them: settings the target holds with another, configured value (reads only)."""
    wanted = {k: v for k, v in catalog.registry_settings.items() if v is not None}
    if not wanted:
        return {}, []
    have = target.describe_registry_settings()
    change = {k: v for k, v in wanted.items() if not _same_setting(k, v, have.get(k))}
    conflicts = [
        f"registry setting {k}"
        for k in sorted(change)
        if k != "pull_through_cache_rules" and not _unset(k, have.get(k))
    ]
    return change, conflicts


def _apply_registry_settings(run: _Run, change: dict[str, Any]) -> dict[str, Any]:
    """Apply the planned registry-level settings and read them back."""
    if not change:
        return {}
    if run.dry_run:
        return {"would_apply": sorted(change)}
    target = run.target
    try:
        left = set(target.apply_registry_settings(change))
        after = target.describe_registry_settings() if set(change) - left else {}
    except ITEM_ERRORS as exc:
        run.fail(target.name, f"registry settings: {exc}", target.name)
        return {"failed": sorted(change)}
    missed = sorted(k for k in set(change) - left if not _same_setting(k, change[k], after.get(k)))
    if missed:
        run.fail(target.name, f"registry settings did not take: {', '.join(missed)}", target.name)
    return {"applied": sorted(set(change) - left - set(missed)), "not_held": sorted(left)}


# -- entry points --------------------------------------------------------------------------------
def restore_catalog(
    catalog: Catalog,
    source: RestoreSource,
    target: Registry,
    *,
    repos: str | None = None,
    rename: Callable[[str], str] | None = None,
    dry_run: bool = False,
    force: bool = False,
    workers: int = 8,
) -> dict[str, Any]:
    """Restore the catalog's repositories (those ``repos`` matches, named ``rename(name)`` in the
    target) into ``target``; the JSON-ready summary. RestoreRefused, with nothing written, for a
    clash or a target holding other content without ``force``. Registry-level settings are
    restored only with the whole registry (no ``repos``, no ``rename``): a partial or renamed
    restore (a drill) must not change the settings of the registry it lands in."""
    pairs = select(catalog, repos, rename)
    refuse_clashes((r.name, n) for r, n in pairs)
    plans = prepare(catalog, target, repos=repos, rename=rename)
    whole = repos is None and rename is None
    change, conflicts = registry_settings_plan(catalog, target) if whole else ({}, [])
    refuse_conflicts(target, plans, force, conflicts)
    return execute(
        catalog,
        source,
        target,
        plans,
        dry_run=dry_run,
        force=force,
        workers=workers,
        registry_settings=change if whole else None,
    )


def execute(
    catalog: Catalog,
    source: RestoreSource,
    target: Registry,
    plans: list[RepoPlan],
    *,
    dry_run: bool = False,
    force: bool = False,
    workers: int = 8,
    registry_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run prepared plans (:func:`prepare`, checked by :func:`refuse_conflicts`); ``registry_settings``:
    the registry-level settings to apply first (:func:`registry_settings_plan`), None: not restored."""
    started = time.monotonic()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        run = _Run(catalog, source, target, pool, dry_run, force)
        if registry_settings is None:
            held = sorted(k for k, v in catalog.registry_settings.items() if v is not None)
            settings_done: dict[str, Any] = {"skipped": held} if held else {}
        else:
            settings_done = _apply_registry_settings(run, registry_settings)
        for plan in plans:
            run.restore(plan)
    seconds = time.monotonic() - started
    c = run.counts
    return {
        "registry": catalog.registry,
        "target": target.name,
        "dry_run": dry_run,
        "force": force,
        "repositories": len(plans),
        "repositories_created": c["repositories_created"],
        "manifests": c["manifests"],
        "manifests_present": c["manifests_present"],
        "manifests_verified": c["manifests_verified"],
        "blobs": c["blobs"],
        "blobs_mounted": c["blobs_mounted"],
        "blobs_present": c["blobs_present"],
        "bytes": c["bytes"],
        "tags": c["tags"],
        "tags_present": c["tags_present"],
        "seconds": round(seconds, 3),
        "manifests_per_second": round(c["manifests"] / seconds, 1) if seconds and c["manifests"] else 0.0,
        "settings": run.settings,
        "registry_settings": settings_done,
        "renamed": {p.entry.name: p.name for p in plans if p.entry.name != p.name},
        "per_repository": {p.name: dict(sorted(run.per_repo[p.name].items())) for p in plans},
        "failures": dict(sorted(run.failures.items())),
        "failed_images": {r: sorted(d) for r, d in sorted(run.failed_images.items()) if d},
    }


def restore_registry(
    config: Any,
    s3: Any,
    snapshot: str,
    target_name: str,
    repos: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    rename: Callable[[str], str] | None = None,
    source_registry: str | None = None,
    *,
    target: Registry | None = None,
) -> dict[str, Any]:
    """Restore snapshot ``snapshot`` ("latest" or an id) of every registry it holds (or of
    ``source_registry``) into the configured registry ``target_name``. Every check that can
    refuse (unknown target or snapshot, a registry the snapshot lacks, nothing selected, a clash,
    a target holding other content without ``force``) runs before the first write: ConfigError
    or a ValueError, nothing written. ``target``: an adapter to use instead of building one
    (tests count its calls)."""
    from ..clients import build_registry
    from .store import SnapshotStore

    target_config = config.registry(target_name)  # ConfigError naming the configured ones
    store = SnapshotStore.from_config(config, s3)
    manifest = store.resolve(snapshot)  # SnapshotNotFound
    held = sorted(manifest.get("registries") or {})
    names = [source_registry] if source_registry else held
    catalogs = [store.read_catalog(manifest, n) for n in names]  # NotInSnapshot, BackupError
    chosen = [(c, select(c, repos, rename)) for c in catalogs]
    if not any(pairs for _, pairs in chosen):
        what = f"repository matches {repos!r}" if repos else "repository"
        raise RestoreRefused(
            f"snapshot {manifest.get('snapshot', snapshot)}: no {what} in {', '.join(names) or 'no registry'}"
        )
    refuse_clashes((f"{c.registry}/{r.name}", n) for c, pairs in chosen for r, n in pairs)
    target = target or build_registry(target_config)
    existing = set(target.list_repositories())
    plans = [(c, prepare(c, target, repos=repos, rename=rename, existing=existing)) for c in catalogs]
    # registry-level settings only with one whole registry: two would overwrite each other
    whole = len(catalogs) == 1 and repos is None and rename is None
    change, conflicts = registry_settings_plan(catalogs[0], target) if whole else ({}, [])
    refuse_conflicts(target, [p for _, ps in plans for p in ps], force, conflicts)

    started = time.monotonic()
    results = {
        c.registry: execute(
            c,
            StoreSource(store, c),
            target,
            ps,
            dry_run=dry_run,
            force=force,
            workers=config.backup.workers,
            registry_settings=change if whole else None,
        )
        for c, ps in plans
        if ps
    }
    return summarize(manifest, snapshot, target.name, results, time.monotonic() - started, dry_run)


TOTALS = (
    "repositories",
    "repositories_created",
    "manifests",
    "manifests_present",
    "manifests_verified",
    "blobs",
    "blobs_mounted",
    "blobs_present",
    "bytes",
    "tags",
    "tags_present",
)


def summarize(
    manifest: dict[str, Any],
    asked: str,
    target: str,
    results: dict[str, dict[str, Any]],
    seconds: float,
    dry_run: bool,
) -> dict[str, Any]:
    """One summary over the registries restored: totals, failures (a digest failing in two
    registries keeps both reasons), and each registry's own summary."""
    totals = {k: sum(r[k] for r in results.values()) for k in TOTALS}
    failures: dict[str, str] = {}
    for r in results.values():
        for key, reason in r["failures"].items():
            failures[key] = f"{failures[key]}; {reason}" if key in failures else reason
    return {
        "snapshot": manifest.get("snapshot", asked),
        "taken_at": manifest.get("taken_at"),
        "snapshot_complete": manifest.get("complete"),
        "target": target,
        "dry_run": dry_run,
        **totals,
        "seconds": round(seconds, 3),
        "manifests_per_second": round(totals["manifests"] / seconds, 1)
        if seconds and totals["manifests"]
        else 0.0,
        "failures": dict(sorted(failures.items())),
        "registries": results,
    }
