"""One interface for every registry kind; adapters live beside it (``ecr.py``, ``oci.py``,
``ocilayout.py``).

Modelled on regclient's scheme interface (``scheme/scheme.go``): blobs, manifests, tags,
referrers and repositories behind one :class:`Registry`, options as small values
(:class:`Page`, :class:`RepositorySettings`) rather than extra positional arguments, and the
differences between kinds asked through :attr:`Registry.capabilities`, never assumed from the
adapter's class. Everything above the adapters (inventory, retention, restore, backups, scans)
is written once against this module.

Failures raise :class:`RegistryError` subclasses chosen from the HTTP status, the distribution
error code or the botocore error code (:class:`NotFound`, :class:`Unauthorized`,
:class:`Denied`, :class:`Throttled`, :class:`Unavailable`, :class:`Invalid`,
:class:`Unsupported`), so callers catch a type instead of matching message text. The message
format (``registry <name>/<repo>: <problem>``) and ``.problem`` are unchanged.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import IO, Any

# Manifest media types (OCI image spec and Docker v2 schema 2).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_ALL = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

# cosign stores signatures/attestations/SBOMs under tags derived from the subject digest,
# and the OCI referrers "tag schema" fallback uses the bare form.
REFERRER_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.(sig|att|sbom))?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


# -- errors ----------------------------------------------------------------------------------------
class RegistryError(RuntimeError):
    """A registry call failed; the message names the registry, repository and problem.

    Subclasses say what kind of failure it was; a bare ``RegistryError`` is one no class fits.
    """

    def __init__(self, registry: str, problem: str, repository: str | None = None):
        self.registry, self.repository, self.problem = registry, repository, problem
        where = f"{registry}/{repository}" if repository else registry
        super().__init__(f"registry {where}: {problem}")


class NotFound(RegistryError):
    """The repository, manifest, tag or blob does not exist (HTTP 404, ``*NotFound*`` codes)."""


class Unauthorized(RegistryError):
    """No valid credentials: wrong password, expired or unknown keys (HTTP 401)."""


class Denied(RegistryError):
    """Valid credentials, but the registry refuses the operation (HTTP 403, access denied,
    an immutable tag)."""


class Throttled(RegistryError):
    """Rate limited, still so after the retries (HTTP 429, ``ThrottlingException``)."""


class Unavailable(RegistryError):
    """Unreachable or failing server side, still so after the retries (5xx, connection errors)."""


class Invalid(RegistryError):
    """The request or the content is wrong: a digest that does not match the bytes, a bad name,
    a manifest that references missing blobs, a corrupt file (HTTP 400, validation codes)."""


class Unsupported(RegistryError):
    """This registry (kind or configuration) cannot do the operation, e.g. deletes disabled
    (HTTP 405) or blob deletes on ECR; :attr:`Registry.capabilities` says so beforehand."""


# distribution / OCI distribution-spec error codes, then the HTTP status as a fallback
_CODE_CLASSES: dict[str, type[RegistryError]] = {
    "NAME_UNKNOWN": NotFound,
    "MANIFEST_UNKNOWN": NotFound,
    "BLOB_UNKNOWN": NotFound,
    "BLOB_UPLOAD_UNKNOWN": NotFound,
    "UNAUTHORIZED": Unauthorized,
    "DENIED": Denied,
    "TOOMANYREQUESTS": Throttled,
    "UNSUPPORTED": Unsupported,
    "DIGEST_INVALID": Invalid,
    "MANIFEST_INVALID": Invalid,
    "MANIFEST_BLOB_UNKNOWN": Invalid,
    "MANIFEST_UNVERIFIED": Invalid,
    "NAME_INVALID": Invalid,
    "SIZE_INVALID": Invalid,
    "TAG_INVALID": Invalid,
    "BLOB_UPLOAD_INVALID": Invalid,
    "PAGINATION_NUMBER_INVALID": Invalid,
    "RANGE_INVALID": Invalid,
}
_STATUS_CLASSES: dict[int, type[RegistryError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Denied,
    404: NotFound,
    405: Unsupported,
    413: Invalid,
    416: Invalid,
    429: Throttled,
}


def error_class(status: int | None, codes: Iterable[str] = ()) -> type[RegistryError]:
    """The error class for an HTTP answer: by distribution error code first, else by status."""
    for code in codes:
        if code in _CODE_CLASSES:
            return _CODE_CLASSES[code]
    if status is not None and status >= 500:
        return Unavailable
    return _STATUS_CLASSES.get(status or 0, RegistryError)


# -- values ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: ``raw`` bytes hash to ``digest``."""

    digest: str
    media_type: str
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)


class ManifestHead(str):
    """What a HEAD tells without the body: ``digest`` (also the string value), ``media_type`` and
    ``size`` (bytes of the manifest; None where the registry cannot say without a read).

    A ``str`` equal to the digest so code written for the former digest-only answer
    (``head_manifest(...) == digest``) keeps working until callers are migrated.
    """

    media_type: str
    size: int | None

    def __new__(cls, digest: str, media_type: str, size: int | None) -> ManifestHead:
        head = super().__new__(cls, digest)
        head.media_type, head.size = media_type, size
        return head

    @property
    def digest(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"ManifestHead({self.digest!r}, {self.media_type!r}, {self.size!r})"


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor (what a referrers list or an index entry holds)."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class Page:
    """Paging of a tag listing (regclient's ``WithTagLimit``/``WithTagLast``): at most ``limit``
    names sorting after ``last``. None for either means no bound."""

    limit: int | None = None
    last: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"page limit must be at least 1, got {self.limit}")

    def apply(self, names: Iterable[str]) -> list[str]:
        """The page out of a full (or larger) sorted answer: the contract whatever the server did."""
        out = sorted(n for n in set(names) if self.last is None or n > self.last)
        return out if self.limit is None else out[: self.limit]


TAG_MUTABILITY = ("MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION")


@dataclass(frozen=True)
class RepositorySettings:
    """A repository's own settings (ECR's; other kinds hold none or few).

    None means "not set / unknown" when read and "leave as it is" when applied. To remove a
    lifecycle or repository policy, apply an empty string. ``created_at`` is read-only.
    """

    scan_on_push: bool | None = None
    tag_mutability: str | None = None  # one of TAG_MUTABILITY
    tag_mutability_exclusions: tuple[str, ...] | None = None  # WILDCARD filters
    encryption_type: str | None = None  # AES256 | KMS | KMS_DSSE, fixed at creation
    kms_key: str | None = None
    lifecycle_policy: str | None = None  # JSON text
    repository_policy: str | None = None  # JSON text
    resource_tags: dict[str, str] | None = field(default=None, hash=False)
    created_at: datetime | None = None

    def given(self) -> dict[str, Any]:
        """The settings to apply: every field but ``created_at`` that is not None."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "created_at" and getattr(self, f.name) is not None
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (backups): ``created_at`` as ISO 8601, exclusions as a list."""
        out = asdict(self)
        if self.created_at is not None:
            out["created_at"] = self.created_at.isoformat()
        if self.tag_mutability_exclusions is not None:
            out["tag_mutability_exclusions"] = list(self.tag_mutability_exclusions)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepositorySettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown repository setting(s): {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("created_at"), str):
            values["created_at"] = datetime.fromisoformat(values["created_at"])
        if values.get("tag_mutability_exclusions") is not None:
            values["tag_mutability_exclusions"] = tuple(values["tag_mutability_exclusions"])
        return cls(**values)


@dataclass(frozen=True)
class Capabilities:
    """What a registry can do, for callers that must choose a path (never ``isinstance``).

    - ``lists_untagged_manifests``: listings (``list_images``) reach manifests no tag points at,
      so "untagged" retention and full backups see everything (ECR, a layout's index.json);
      the distribution API lists tags only (untagged manifests are reachable only as children
      of a tagged index or through referrers).
    - ``deletes_tags``: :meth:`Registry.delete_tag` removes one tag and nothing else.
    - ``untag_keeps_manifest``: after removing a manifest's last tag the manifest stays,
      untagged; ECR deletes an image together with its last tag.
    - ``referrers_api``: referrers that carry an OCI ``subject`` but no tag are found by the
      registry's own record (ECR's ``subjectManifestDigest``, the distribution referrers API, a
      layout read whole); False: only tag-schema and cosign-style tags find them. None: probed on
      first use (distribution).
    - ``records_push_time``: listings carry a push time (ECR ``imagePushedAt``).
    - ``records_pull_time``: listings carry a last pull time (ECR, lagging up to 24 h).
    - ``blob_reads_cheap``: reading a blob is one direct read with no per-call quota or transfer
      charge (distribution on the same network, a local layout); ECR needs a pre-signed URL per
      layer and bills transfer out of the region.
    - ``deletes_blobs``: :meth:`Registry.delete_blob` works (ECR has no blob delete).
    - ``mounts_blobs``: :meth:`Registry.mount_blob` can link a blob from another repository
      without moving its bytes through the caller.
    - ``repository_settings``: repositories carry settings that describe/apply read and write
      (ECR); others answer empty settings and report every given setting as not applied.
    - ``explicit_repositories``: a repository must be created before the first push (ECR); the
      others create it on first push.
    - ``reads_report_tags``: :meth:`Registry.read_images` also tells each image's tags now (ECR's
      ``BatchGetImage`` answer names them), so a look before acting needs no tag listing.
    """

    lists_untagged_manifests: bool
    deletes_tags: bool
    untag_keeps_manifest: bool
    referrers_api: bool | None
    records_push_time: bool
    records_pull_time: bool
    blob_reads_cheap: bool
    deletes_blobs: bool
    mounts_blobs: bool
    repository_settings: bool
    explicit_repositories: bool
    reads_report_tags: bool = False


@dataclass
class DeleteResult:
    """What a bulk delete did (of manifests by digest, or of tags).

    ``failures`` names every item not deleted, with the registry's reason. Two kinds of them are
    also typed, so callers never match the text: ``gone`` (not there: already deleted, the goal
    is met) and ``refused_by_index`` (a manifest an index in the repository still lists: ECR
    refuses it until the index is gone, so it is worth one more try after the indexes).
    """

    deleted: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # digest (or tag) -> reason
    gone: set[str] = field(default_factory=set)
    refused_by_index: set[str] = field(default_factory=set)


@dataclass
class ImageRead:
    """A read of some manifests by digest (:meth:`Registry.read_images`): those ``found`` (bytes
    checked against their digests), those ``gone`` from the repository, those that could not be
    read (``failures``: digest -> reason) and, where the registry's answer names them
    (``capabilities.reads_report_tags``), each found image's tags now; else ``tags`` is None."""

    found: dict[str, Manifest] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    failures: dict[str, str] = field(default_factory=dict)
    tags: dict[str, set[str]] | None = None


class RequestCounter:
    """Thread-safe count of API requests by operation (benches and tests read it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, operation: str, n: int = 1) -> None:
        with self._lock:
            self.counts[operation] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


BlobData = bytes | IO[bytes] | Iterable[bytes]


# -- the interface ---------------------------------------------------------------------------------
class Registry(abc.ABC):
    """A registry of the fleet, named as in the config file.

    References: ``reference`` is a tag or a ``sha256:`` digest; ``digest`` must be a digest.
    """

    kind: str
    capabilities: Capabilities
    concurrency: int = 8  # parallel requests of the default bulk operations

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = RequestCounter()

    def error(
        self, problem: str, repository: str | None = None, cls: type[RegistryError] = RegistryError
    ) -> RegistryError:
        return cls(self.name, problem, repository)

    def check_digest(self, digest: str, repository: str | None = None) -> None:
        """Refuse a malformed digest before it reaches a path or a URL."""
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise self.error(f"{digest!r} is not a sha256 digest", repository, Invalid)

    # -- repositories --------------------------------------------------------------------------
    @abc.abstractmethod
    def list_repositories(self) -> list[str]:
        """Every repository name, sorted, all pages followed."""

    @abc.abstractmethod
    def create_repository(self, repository: str, settings: RepositorySettings | None = None) -> bool:
        """Create it with these settings if absent; True if created, False if it existed (its
        settings are then left alone: use :meth:`apply_repository_settings`). Kinds that create
        repositories on push answer False and ignore the settings."""

    @abc.abstractmethod
    def describe_repository(self, repository: str) -> RepositorySettings:
        """The repository's settings (empty where the kind keeps none); NotFound if it is absent."""

    @abc.abstractmethod
    def apply_repository_settings(self, repository: str, settings: RepositorySettings) -> list[str]:
        """Apply every given setting; returns the names of those this kind cannot hold (ignored)."""

    def delete_repository(
        self, repository: str, digests: Iterable[str] = (), blobs: Iterable[str] = ()
    ) -> None:
        """Remove a repository with everything in it; absent already is fine. Only for what the
        caller owns outright (the DR drill's scratch repositories): nothing is archived first.

        This default works through the interface: every manifest listed (plus ``digests`` the
        caller knows of: the distribution API lists tagged manifests only) is deleted, then
        every blob they name (plus ``blobs``). RegistryError when something stays behind. The
        distribution API has no repository delete: the empty name may stay in the catalog."""
        wanted, blob_set = set(digests), set(blobs)
        try:
            records = self.list_images(repository)
        except NotFound:
            records = []
        for record in records:
            wanted.add(record["digest"])
            blob_set.update(
                d for d in [record.get("config_digest"), *(record.get("layer_digests") or [])] if d
            )
        result = self.delete_images(repository, sorted(wanted))
        left = {d: why for d, why in result.failures.items() if d not in result.gone}
        if left:
            raise self.error(f"manifests not deleted: {left}", repository)
        if self.capabilities.deletes_blobs:
            for digest in sorted(blob_set):
                with contextlib.suppress(NotFound):
                    self.delete_blob(repository, digest)
        try:
            tags = self.list_tags(repository)
        except NotFound:
            tags = []
        if tags:
            raise self.error(f"tags left after removing the repository: {tags}", repository)

    # -- registry-level settings (backups) ------------------------------------------------------
    def describe_registry_settings(self) -> dict[str, Any]:
        """Settings of the registry as a whole, JSON-ready (ECR: registry policy, replication,
        registry scanning, pull-through cache rules); kinds that keep none answer {}."""
        return {}

    def apply_registry_settings(self, settings: dict[str, Any]) -> list[str]:
        """Apply settings read by :meth:`describe_registry_settings` (None values are left as
        they are); returns the names of those not applied. Kinds that keep none apply nothing."""
        return sorted(k for k, v in settings.items() if v is not None)

    # -- inventory (kept for the current callers) -----------------------------------------------
    @abc.abstractmethod
    def list_images(self, repository: str) -> list[dict[str, Any]]:
        """Inventory records (see ``schema``) for one repository, without registry/snapshot_at."""

    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        """Delete manifests by digest (all their tags go with them); failures are reported, not raised.

        The default deletes one at a time, in the order given (callers put indexes before their
        children, which some kinds refuse to delete while an index lists them)."""
        result = DeleteResult()
        for digest in digests:
            try:
                self.delete_manifest(repository, digest)
            except NotFound:
                result.failures[digest] = "not found (already deleted?)"
                result.gone.add(digest)
            except RegistryError as exc:
                result.failures[digest] = exc.problem
            else:
                result.deleted.append(digest)
        return result

    def read_images(self, repository: str, digests: list[str]) -> ImageRead:
        """Manifests by digest, sorted into found, gone and failed; only a failure of the whole
        read raises. The default reads them concurrently with :meth:`get_manifest` (``tags`` None);
        kinds with a bulk read override it."""
        read = ImageRead()
        wanted = list(dict.fromkeys(digests))

        def one(digest: str) -> tuple[str, Manifest | str | None]:
            try:
                return digest, self.get_manifest(repository, digest)
            except NotFound:
                return digest, None
            except RegistryError as exc:
                return digest, exc.problem

        with ThreadPoolExecutor(max(1, min(self.concurrency, len(wanted) or 1))) as pool:
            for digest, got in pool.map(one, wanted):
                if isinstance(got, Manifest):
                    read.found[digest] = got
                elif got is None:
                    read.gone.add(digest)
                else:
                    read.failures[digest] = got
        return read

    def tag_map(self, repository: str) -> tuple[dict[str, set[str]], bool]:
        """Every digest's tags now, and whether the map is complete (names untagged manifests too,
        so a digest missing from it is gone). The default: where listings reach untagged
        manifests, :meth:`list_images`; else the tags and a HEAD per tag, concurrently
        (complete False: an untagged manifest is not in the map)."""
        if self.capabilities.lists_untagged_manifests:
            records = self.list_images(repository)
            return {r["digest"]: set(r.get("tags") or []) for r in records}, True
        tags = self.list_tags(repository)
        found: dict[str, set[str]] = {}
        if not tags:
            return found, False
        with ThreadPoolExecutor(max(1, min(self.concurrency, len(tags)))) as pool:
            heads = list(pool.map(lambda t: self.head_manifest(repository, t), tags))
        for tag, head in zip(tags, heads, strict=True):
            if head is not None:
                found.setdefault(str(head), set()).add(tag)
        return found, False

    # -- tags ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def list_tags(self, repository: str, page: Page | None = None) -> list[str]:
        """Tags, sorted; with ``page`` at most ``page.limit`` of them after ``page.last``."""

    @abc.abstractmethod
    def delete_tag(self, repository: str, tag: str) -> None:
        """Remove one tag; NotFound if it does not exist. See ``capabilities.untag_keeps_manifest``."""

    def delete_tags(self, repository: str, tags: list[str]) -> DeleteResult:
        """Remove tags (only the tags: on kinds whose ``untag_keeps_manifest`` is False a
        manifest's last tag takes the manifest with it). Failures are reported, not raised; a tag
        that does not exist is ``gone``. The default calls :meth:`delete_tag` concurrently."""
        result = DeleteResult()
        wanted = list(dict.fromkeys(tags))

        def one(tag: str) -> tuple[str, RegistryError | None]:
            try:
                self.delete_tag(repository, tag)
            except RegistryError as exc:
                return tag, exc
            return tag, None

        with ThreadPoolExecutor(max(1, min(self.concurrency, len(wanted) or 1))) as pool:
            for tag, exc in pool.map(one, wanted):
                if exc is None:
                    result.deleted.append(tag)
                else:
                    result.failures[tag] = exc.problem
                    if isinstance(exc, NotFound):
                        result.gone.add(tag)
        return result

    # -- manifests -------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest for a tag or digest, bytes as stored (checked against the digest)."""

    @abc.abstractmethod
    def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """Digest, media type and size of a tag or digest without its body; None if absent."""

    @abc.abstractmethod
    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        """Store a manifest (by digest, or under ``tag``); returns the digest the registry reports."""

    @abc.abstractmethod
    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest, with every tag pointing at it; NotFound if absent."""

    # -- blobs -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def open_blob(self, repository: str, digest: str) -> IO[bytes]:
        """The blob as a stream (a :class:`~.streams.BlobStream`), hashed while read: reading it to
        the end raises Invalid if the bytes do not match ``digest``. Close it (``with``)."""

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (a config) whole, checked against its digest."""
        with self.open_blob(repository, digest) as stream:
            return stream.read()

    @abc.abstractmethod
    def head_blob(self, repository: str, digest: str) -> int | None:
        """The blob's size in bytes, or None when the repository does not hold it."""

    @abc.abstractmethod
    def put_blob(self, repository: str, data: BlobData, digest: str, size: int | None = None) -> str:
        """Store a blob from bytes, a file or an iterator of chunks; the content must hash to
        ``digest`` (and be ``size`` bytes when given), or Invalid is raised and nothing is stored."""

    @abc.abstractmethod
    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Link a blob another repository holds without moving bytes through the caller; False if
        the registry did not (then put it)."""

    @abc.abstractmethod
    def delete_blob(self, repository: str, digest: str) -> None:
        """Delete a blob; Unsupported where ``capabilities.deletes_blobs`` is False."""

    def blob_exists(self, repository: str, digest: str) -> bool:
        return self.head_blob(repository, digest) is not None

    def upload_blob(self, repository: str, data: bytes, mount_from: str | None = None) -> str:
        """Make a blob present: skipped if it exists, mounted from ``mount_from`` where possible,
        else put. Returns its digest."""
        digest = digest_of(data)
        if self.blob_exists(repository, digest):
            return digest
        if mount_from and mount_from != repository and self.mount_blob(repository, digest, mount_from):
            return digest
        return self.put_blob(repository, data, digest, len(data))

    # -- referrers -------------------------------------------------------------------------------
    @abc.abstractmethod
    def list_referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests that refer to ``digest`` (OCI ``subject`` or cosign-style tags), optionally
        only those of one artifact type; sorted by digest."""


# -- helpers shared by the adapters ------------------------------------------------------------
def classify(media_type: str | None, subject: str | None, tags: list[str]) -> str:
    """Inventory ``kind``: index, referrer (subject or cosign-style tag) or image."""
    if media_type in INDEX_TYPES:
        return "index"
    if subject or (tags and all(REFERRER_TAG.match(t) for t in tags)):
        return "referrer"
    return "image"


def referrer_subject(tags: list[str]) -> str | None:
    """The subject digest encoded in cosign-style tags (``sha256-<hex>.sig``), if any."""
    for tag in tags:
        m = REFERRER_TAG.match(tag)
        if m:
            return f"sha256:{m.group(1)}"
    return None


def referrer_tags(digest: str) -> tuple[str, ...]:
    """The tags that can hold referrers of ``digest``: the OCI tag schema's index, then cosign's."""
    bare = "sha256-" + digest.split(":", 1)[1]
    return (bare, f"{bare}.sig", f"{bare}.att", f"{bare}.sbom")


def descriptor_of(manifest: Manifest) -> Descriptor:
    """A referrer's descriptor: artifact type from ``artifactType``, else the config media type."""
    body = manifest.body
    artifact = body.get("artifactType") or (body.get("config") or {}).get("mediaType")
    return Descriptor(
        manifest.media_type, manifest.digest, len(manifest.raw), artifact, dict(body.get("annotations") or {})
    )


def descriptor_of_entry(entry: dict[str, Any]) -> Descriptor:
    """A descriptor from an index or referrers-API entry (a missing media type is an OCI manifest)."""
    return Descriptor(
        entry.get("mediaType", OCI_MANIFEST),
        entry["digest"],
        int(entry.get("size", 0)),
        entry.get("artifactType"),
        dict(entry.get("annotations") or {}),
    )


def add_tagged_referrers(found: dict[str, Descriptor], manifest: Manifest) -> None:
    """What a referrer tag holds: the tag schema's index lists referrers, anything else (cosign's
    ``.sig``/``.att``/``.sbom``) is one. Entries found earlier are kept."""
    if manifest.media_type in INDEX_TYPES:
        for entry in manifest.body.get("manifests", []):
            found.setdefault(entry["digest"], descriptor_of_entry(entry))
    else:
        found.setdefault(manifest.digest, descriptor_of(manifest))


def referrers_of_type(found: dict[str, Descriptor], artifact_type: str | None) -> list[Descriptor]:
    """The referrers found, filtered by artifact type where one is asked for, by digest."""
    return sorted(
        (d for d in found.values() if artifact_type is None or d.artifact_type == artifact_type),
        key=lambda d: d.digest,
    )


def platform_of(entry: dict[str, Any] | None) -> str | None:
    """``os/arch[/variant]`` from an index entry's ``platform`` or an image config."""
    if not entry:
        return None
    os_, arch = entry.get("os"), entry.get("architecture")
    if not os_ or not arch:
        return None
    variant = entry.get("variant")
    return f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"


def link_graph(records: list[dict[str, Any]], children: dict[str, list[str]]) -> None:
    """Fill child_digests and parent_digests in place from index -> children lists."""
    by_digest = {r["digest"]: r for r in records}
    for r in records:
        r.setdefault("parent_digests", [])
        r.setdefault("child_digests", [])
    for parent, kids in children.items():
        if parent in by_digest:
            by_digest[parent]["child_digests"] = list(kids)
        for kid in kids:
            if kid in by_digest and parent not in by_digest[kid]["parent_digests"]:
                by_digest[kid]["parent_digests"].append(parent)


def index_size(records: list[dict[str, Any]]) -> None:
    """An index's size is its largest child's (ECR's rule), where the registry gave none."""
    by_digest = {r["digest"]: r for r in records}
    for r in records:
        if r.get("kind") == "index" and not r.get("size_bytes"):
            sizes = [by_digest[c].get("size_bytes") or 0 for c in r["child_digests"] if c in by_digest]
            r["size_bytes"] = max(sizes, default=0)


def digest_of(raw: bytes) -> str:
    """The content digest of manifest or blob bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def media_type_of(raw: bytes) -> str:
    """Media type declared in a manifest, else inferred (``manifests`` means an index)."""
    body = json.loads(raw)
    if body.get("mediaType"):
        return body["mediaType"]
    return OCI_INDEX if "manifests" in body else OCI_MANIFEST
