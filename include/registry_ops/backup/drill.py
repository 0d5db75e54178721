"""The disaster-recovery drill: restore a backup snapshot into a scratch target, prove every
restored image bit-exact and pullable, measure RTO and RPO, report, and clean up.

Steps (``dags/registry_dr_drill.py`` runs them as tasks, ``registry-ops drill run`` in one
process; both through the functions here):

1. :func:`prepare`: resolve the snapshot, choose the repositories (all, or a sample that is
   deterministic given its seed, the snapshot id: a rerun checks the same ones), name their
   scratch copies ``<dr.scratch_prefix><source registry>/<repo>``, and refuse a target that
   already holds anything under the scratch prefix.
2. :func:`execute`: the backup restore (``restore.restore_catalog``) under those names, timed
   (its wall time is the RTO); then :func:`verify`: every manifest fetched back from the target
   by digest and hashed, every blob fetched back and hashed, every tag resolved, all compared
   with the catalog. RPO is ``now`` minus the snapshot's ``taken_at``. ``drill_report`` writes
   the report (JSON and HTML to S3) and emails it.
3. :func:`cleanup`: whatever happened, the scratch repositories are removed.

Safety, by construction: the drill removes only repositories of its own plan, each named under
the scratch prefix and holding nothing when the drill began. A target that already holds
something under the prefix (a drill that died before its cleanup, or someone's data) is refused
before anything is written, naming the repositories; ``registry-ops drill clean`` removes them
when a person decides to. Nothing outside the prefix is read for removal, let alone removed.

How each kind is cleaned: ECR deletes the repository (``force``: with its images); an OCI image
layout directory is removed from disk; the distribution API cannot delete a repository, so its
manifests are deleted by digest (their tags go with them) and its blob links after them: the
empty name stays in the catalog until the registry's garbage collection, and counts as free.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..config import Config, ConfigError
from ..registries.base import DIGEST, NotFound, Registry, RegistryError, digest_of
from .catalog import Catalog, RepositoryEntry

log = logging.getLogger(__name__)
READ_CHUNK = 1 << 20
ALL = "all"


class DrillError(ValueError):
    """Bad drill input (snapshot, sample, target) or an occupied scratch prefix: nothing was
    written. A ``ValueError``, so the command line exits 2 naming it."""


# -- the plan --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """One repository of the snapshot and the scratch repository it is restored into."""

    registry: str
    repository: str
    target_repository: str


@dataclass(frozen=True)
class DrillPlan:
    """What a drill restores where; JSON-ready (the DAG passes it between tasks)."""

    snapshot: str
    taken_at: str
    mode: str
    target: str
    target_kind: str
    scratch_prefix: str
    sample: int | None  # None: every repository
    seed: str
    repositories_in_snapshot: int
    selections: tuple[Selection, ...]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["selections"] = [asdict(s) for s in self.selections]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrillPlan:
        return cls(**{**data, "selections": tuple(Selection(**s) for s in data["selections"])})

    def by_registry(self) -> dict[str, list[Selection]]:
        out: dict[str, list[Selection]] = {}
        for sel in self.selections:
            out.setdefault(sel.registry, []).append(sel)
        return out


def scratch_name(prefix: str, registry: str, repository: str) -> str:
    """``<prefix><source registry>/<repo>``: where the drill restores one repository."""
    return f"{prefix}{registry}/{repository}"


def parse_sample(value: Any, default: int | None = None) -> int | None:
    """The ``sample`` Param or ``--sample``: ``"all"`` (None: every repository), a whole number
    of repositories of at least 1, or None/empty for ``default`` (``dr.sample``)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lower() == ALL:
        return None
    if isinstance(value, bool):
        raise DrillError(f"sample {value!r}: give 'all' or a number of repositories (at least 1)")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise DrillError(f"sample {value!r}: give 'all' or a number of repositories (at least 1)") from None
    if n < 1 or (isinstance(value, float) and n != value):
        raise DrillError(f"sample {value!r}: give 'all' or a number of repositories (at least 1)")
    return n


def sample_repositories(pairs: list[tuple[str, str]], n: int | None, seed: str) -> list[tuple[str, str]]:
    """``n`` of the (registry, repository) pairs, or all when ``n`` is None. Each pair is ranked by
    sha256(seed, registry, repository): the same seed gives the same sample on any machine and
    Python, and a repository added to the fleet does not reshuffle the others."""
    ordered = sorted(set(pairs))
    if n is None or n >= len(ordered):
        return ordered

    def rank(pair: tuple[str, str]) -> str:
        return hashlib.sha256("\0".join((seed, *pair)).encode()).hexdigest()

    return sorted(sorted(ordered, key=rank)[:n])


def target_name(config: Config, target: str | None) -> str:
    """The target registry's config name: the one asked for, else ``dr.target``."""
    name = target or config.dr.target
    if not name:
        raise DrillError(
            f"no drill target: set dr.target in {config.source} or give one (--target, the 'target' Param)"
        )
    try:
        config.registry(name)
    except ConfigError as exc:
        raise DrillError(f"drill target: {exc}") from None
    return name


def occupied(target: Registry, prefix: str) -> list[str]:
    """Repositories under ``prefix`` in the target that hold anything (a tag; on kinds that list
    untagged manifests, any manifest). An empty name the distribution API cannot delete is free."""
    found = []
    for repo in target.list_repositories():
        if not repo.startswith(prefix):
            continue
        held = bool(target.list_tags(repo))
        if not held and target.capabilities.lists_untagged_manifests:
            held = bool(target.list_images(repo))
        if held:
            found.append(repo)
    return found


def _store(config: Config, s3: Any) -> Any:
    from .store import SnapshotStore

    return SnapshotStore.from_config(config, s3)


def _registry(config: Config, name: str) -> Registry:
    from ..clients import build_registry

    return build_registry(config.registry(name))


def prepare(
    config: Config,
    s3: Any,
    snapshot: str = "latest",
    sample: Any = None,
    target: str | None = None,
    *,
    store: Any = None,
    target_registry: Registry | None = None,
) -> DrillPlan:
    """The drill's plan; DrillError (nothing written) for an unknown snapshot or target, a bad
    sample, or a target holding repositories under the scratch prefix."""
    from .store import SnapshotNotFound

    name = target_name(config, target)
    n = parse_sample(sample, config.dr.sample)
    store = store or _store(config, s3)
    try:
        manifest = store.resolve(snapshot or "latest")
    except SnapshotNotFound as exc:
        raise DrillError(f"snapshot {snapshot!r}: {exc}") from None
    prefix = config.dr.scratch_prefix
    pairs = []
    for registry in sorted(manifest["registries"]):
        catalog = store.read_catalog(manifest, registry)
        # a source repository under the prefix is an earlier drill's scratch copy, not data
        pairs += [(registry, r.name) for r in catalog.repositories if not r.name.startswith(prefix)]
    seed = str(manifest["snapshot"])
    chosen = sample_repositories(pairs, n, seed)
    if not chosen:
        raise DrillError(f"snapshot {manifest['snapshot']}: no repositories to drill")
    reg = target_registry or _registry(config, name)
    held = occupied(reg, prefix)
    if held:
        raise DrillError(
            f"drill target {name} already holds {len(held)} repositories under the scratch prefix "
            f"{prefix!r} ({', '.join(held[:10])}{', ...' if len(held) > 10 else ''}); the drill removes "
            f"only what it created, so it will not restore there. Left by a drill that did not finish? "
            f"Remove them with: registry-ops drill clean --target {name}"
        )
    return DrillPlan(
        snapshot=str(manifest["snapshot"]),
        taken_at=str(manifest["taken_at"]),
        mode=str(manifest.get("mode", "")),
        target=name,
        target_kind=reg.kind,
        scratch_prefix=prefix,
        sample=n,
        seed=seed,
        repositories_in_snapshot=len(pairs),
        selections=tuple(Selection(r, repo, scratch_name(prefix, r, repo)) for r, repo in chosen),
    )


# -- verification ----------------------------------------------------------------------------------
@dataclass
class Verification:
    """What came back from the target, compared with the catalog."""

    manifests_checked: int = 0
    manifests_equal: int = 0
    blobs_checked: int = 0
    blobs_equal: int = 0
    tags_checked: int = 0
    tags_equal: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    repositories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def digests_checked(self) -> int:
        return self.manifests_checked + self.blobs_checked

    @property
    def digests_equal(self) -> int:
        return self.manifests_equal + self.blobs_equal


def check_manifest(target: Registry, repository: str, digest: str, size: int) -> str | None:
    """None when the target gives back, by digest, bytes that hash to it and have the catalog's
    size; else the problem."""
    try:
        got = target.get_manifest(repository, digest)
    except NotFound:
        return "manifest not in the target"
    except RegistryError as exc:
        return f"manifest read failed: {exc.problem}"
    actual = digest_of(got.raw)
    if actual != digest:
        return f"manifest came back as {actual}"
    if len(got.raw) != size:
        return f"manifest came back with {len(got.raw)} bytes, the catalog says {size}"
    return None


def check_blob(target: Registry, repository: str, digest: str, size: int | None) -> tuple[str | None, int]:
    """(None, bytes read) when the blob read back from the target hashes to ``digest`` and has
    the catalog's size; else (the problem, bytes read)."""
    h, n = hashlib.sha256(), 0
    try:
        with target.open_blob(repository, digest) as stream:
            while chunk := stream.read(READ_CHUNK):
                h.update(chunk)
                n += len(chunk)
    except NotFound:
        return "blob not in the target", n
    except RegistryError as exc:
        return f"blob read failed: {exc.problem}", n
    actual = "sha256:" + h.hexdigest()
    if actual != digest:
        return f"blob came back as {actual}", n
    if size is not None and n != size:
        return f"blob came back with {n} bytes, the catalog says {size}", n
    return None, n


def check_tag(target: Registry, repository: str, tag: str, digest: str) -> str | None:
    try:
        head = target.head_manifest(repository, tag)
    except RegistryError as exc:
        return f"tag read failed: {exc.problem}"
    if head is None:
        return "tag not in the target"
    return None if str(head) == digest else f"tag points at {head}"


def verify(
    catalogs: dict[str, Catalog], selections: list[Selection], target: Registry, workers: int = 8
) -> Verification:
    """Fetch every manifest, blob and tag of the selected repositories back from the target (in
    their scratch repositories) and compare each with the catalog; failures name the digest."""
    jobs: list[tuple[str, Selection, str, Any]] = []  # (kind, selection, digest or tag, size or digest)
    for sel in selections:
        entry = catalogs[sel.registry].repository(sel.repository)
        if entry is None:
            raise DrillError(f"catalog of {sel.registry} has no repository {sel.repository!r}")
        sizes = catalogs[sel.registry].blob_sizes
        jobs += [("manifest", sel, m.digest, m.size) for m in entry.manifests]
        jobs += [("blob", sel, d, sizes.get(d)) for d in _blobs(entry)]
        jobs += [("tag", sel, t, d) for t, d in sorted(entry.tags.items())]

    def run(job: tuple[str, Selection, str, Any]) -> tuple[str | None, int]:
        kind, sel, what, extra = job
        if kind == "manifest":
            return check_manifest(target, sel.target_repository, what, extra), 0
        if kind == "blob":
            return check_blob(target, sel.target_repository, what, extra)
        return check_tag(target, sel.target_repository, what, extra), 0

    out = Verification()
    rows = {sel: {**asdict(sel), "manifests": 0, "blobs": 0, "tags": 0, "failures": 0} for sel in selections}
    started = time.monotonic()
    with ThreadPoolExecutor(max(1, min(workers, len(jobs) or 1))) as pool:
        for (kind, sel, what, extra), (problem, n) in zip(jobs, pool.map(run, jobs), strict=True):
            row = rows[sel]
            row[kind + "s"] += 1
            out.bytes_checked += n
            setattr(out, f"{kind}s_checked", getattr(out, f"{kind}s_checked") + 1)
            if problem is None:
                setattr(out, f"{kind}s_equal", getattr(out, f"{kind}s_equal") + 1)
                continue
            row["failures"] += 1
            digest, tag = (extra, what) if kind == "tag" else (what, None)
            out.failures.append(
                {**asdict(sel), "kind": kind, "digest": digest, "tag": tag, "problem": problem}
            )
    out.seconds = round(time.monotonic() - started, 3)
    out.repositories = list(rows.values())
    out.failures.sort(key=lambda f: (f["registry"], f["repository"], f["kind"], f["digest"], f["tag"] or ""))
    return out


def _blobs(entry: RepositoryEntry) -> list[str]:
    return sorted({d for m in entry.manifests for d in m.blobs()})


# -- restore and the whole drill -------------------------------------------------------------------
def _catalogs(store: Any, plan: DrillPlan) -> tuple[dict[str, Any], dict[str, Catalog]]:
    manifest = store.resolve(plan.snapshot)
    return manifest, {r: store.read_catalog(manifest, r) for r in plan.by_registry()}


def restore(
    config: Config, catalogs: dict[str, Catalog], plan: DrillPlan, store: Any, target: Registry
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """The backup restore (``restore.restore_catalog``) of the plan's repositories under their
    scratch names: (its summary per source registry, the failures it reported or raised, wall
    seconds: the RTO). Each catalog is cut down to the sampled repositories (the restore selects
    by one glob). No ``force``: the scratch names were free in :func:`prepare`, a retried task
    finds only the snapshot's own content there, and anything else is refused, not overwritten."""
    from .restore import StoreSource, restore_catalog

    summaries: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    started = time.monotonic()
    for registry, selections in plan.by_registry().items():
        full = catalogs[registry]
        names = {s.repository: s.target_repository for s in selections}
        part = replace(full, repositories=[r for r in full.repositories if r.name in names])
        try:
            summary = restore_catalog(
                part,
                StoreSource(store, full),
                target,
                rename=names.__getitem__,
                workers=config.backup.workers,
            )
        except Exception as exc:  # reported (the drill fails); verification names the digests
            log.exception("drill: restore of %s into %s failed", registry, target.name)
            failures.append(
                {"registry": registry, "kind": "restore", "problem": f"{type(exc).__name__}: {exc}"}
            )
            continue
        summaries.append({"registry": registry, **summary})
        failures += [
            {
                "registry": registry,
                "kind": "restore",
                "digest": key if DIGEST.match(key) else None,
                "problem": why,
            }
            for key, why in (summary.get("failures") or {}).items()
        ]
    return summaries, failures, round(time.monotonic() - started, 3)


def rpo_seconds(taken_at: str, now: datetime) -> float:
    """How old the snapshot is at ``now`` (the data a disaster at ``now`` would lose)."""
    taken = datetime.fromisoformat(taken_at.replace("Z", "+00:00"))
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=UTC)
    return round((now - taken).total_seconds(), 3)


def execute(
    config: Config,
    s3: Any,
    plan: DrillPlan,
    now: datetime | None = None,
    *,
    store: Any = None,
    target: Registry | None = None,
) -> dict[str, Any]:
    """Restore, verify, measure: the drill's report (``drill_report.build_report``), not yet
    written anywhere."""
    from . import drill_report

    now = now or datetime.now(UTC)
    started_at = datetime.now(UTC)
    store = store or _store(config, s3)
    target = target or _registry(config, plan.target)
    _, catalogs = _catalogs(store, plan)
    summaries, restore_failures, rto_s = restore(config, catalogs, plan, store, target)
    checked = verify(catalogs, list(plan.selections), target, config.backup.workers)
    return drill_report.build_report(
        config,
        plan,
        restores=summaries,
        restore_failures=restore_failures,
        verification=checked,
        rto_s=rto_s,
        rpo_s=rpo_seconds(plan.taken_at, now),
        now=now,
        started_at=started_at,
    )


# -- cleanup ---------------------------------------------------------------------------------------
def guard(target: str, prefix: str, name: str) -> None:
    """The one check before anything is removed: the repository is under the scratch prefix."""
    if not prefix or not name.startswith(prefix):
        raise DrillError(
            f"refusing to remove {target}/{name}: not a scratch repository (the drill removes only "
            f"repositories under its scratch prefix {prefix!r})"
        )


def remove_repository(target: Registry, name: str, digests: set[str], blobs: set[str]) -> None:
    """Remove one scratch repository from the target through the interface
    (:meth:`Registry.delete_repository`); ``digests`` and ``blobs`` are the catalog's, for kinds
    whose listing does not reach untagged manifests (the distribution API)."""
    target.delete_repository(name, digests, blobs)


def cleanup(
    config: Config | None,
    s3: Any,
    plan: DrillPlan,
    *,
    store: Any = None,
    target: Registry | None = None,
    catalogs: dict[str, Catalog] | None = None,
) -> dict[str, Any]:
    """Remove every scratch repository of the plan (and nothing else); ``{"removed": [...],
    "failed": {name: problem}}``. Works without the snapshot (its digests then come from what
    the target lists) so a drill whose store read failed still cleans up. ``catalogs``, ``store``
    and ``target``: already at hand (else read and built from ``config``)."""
    target = target or _registry(config, plan.target)
    try:
        if catalogs is None:
            _, catalogs = _catalogs(store or _store(config, s3), plan)
    except Exception as exc:  # the cleanup must go on: the target lists the rest
        catalogs = {}
        log.warning(
            "drill cleanup: snapshot %s not readable (%s); removing what the target lists", plan.snapshot, exc
        )
    for sel in plan.selections:  # every name checked before the first removal
        guard(plan.target, plan.scratch_prefix, sel.target_repository)
    out: dict[str, Any] = {"removed": [], "failed": {}}
    for sel in plan.selections:
        entry = catalogs[sel.registry].repository(sel.repository) if sel.registry in catalogs else None
        digests = {m.digest for m in entry.manifests} if entry else set()
        blobs = set(_blobs(entry)) if entry else set()
        try:
            remove_repository(target, sel.target_repository, digests, blobs)
        except RegistryError as exc:
            log.error("drill cleanup: %s/%s not removed: %s", plan.target, sel.target_repository, exc)
            out["failed"][sel.target_repository] = str(exc)
            continue
        out["removed"].append(sel.target_repository)
    log.info(
        "drill cleanup: %d scratch repositories removed from %s, %d failed",
        len(out["removed"]),
        plan.target,
        len(out["failed"]),
    )
    return out


def clean_prefix(config: Config, target: str | None = None) -> dict[str, Any]:
    """``registry-ops drill clean``: remove every repository under the scratch prefix of the
    target (what a drill that died before its cleanup left), a person's decision, never the
    drill's own. ``{"removed": [...], "failed": {name: problem}}``."""
    name = target_name(config, target)
    reg = _registry(config, name)
    prefix = config.dr.scratch_prefix
    names = [r for r in reg.list_repositories() if r.startswith(prefix)]
    for repo in names:
        guard(name, prefix, repo)
    out: dict[str, Any] = {"target": name, "scratch_prefix": prefix, "removed": [], "failed": {}}
    for repo in names:
        try:
            remove_repository(reg, repo, set(), set())
        except RegistryError as exc:
            out["failed"][repo] = str(exc)
            continue
        out["removed"].append(repo)
    return out


def run_drill(
    config: Config,
    s3: Any,
    *,
    snapshot: str = "latest",
    sample: Any = None,
    target: str | None = None,
    now: datetime | None = None,
    notify: bool = True,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The whole drill in one process (the command line): prepare, then restore, verify, write
    and email the report, and remove the scratch repositories whatever happened. Returns the
    summary (``drill_report.summary``) with ``cleanup``."""
    from . import drill_report

    plan = prepare(config, s3, snapshot, sample, target)
    store, reg = _store(config, s3), _registry(config, plan.target)
    report: dict[str, Any] | None = None
    try:
        report = execute(config, s3, plan, now, store=store, target=reg)
        report["location"] = drill_report.write_report(config, s3, report)
        report["notification"] = drill_report.email_report(config, report) if notify else None
        if on_report:
            on_report(report)
    finally:
        cleaned = cleanup(config, s3, plan, store=store, target=reg)
    summary = drill_report.summary(report)
    summary["cleanup"] = cleaned
    return summary
