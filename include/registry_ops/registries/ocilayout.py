"""A registry kept as OCI image layout directories on disk (image-spec ``image-layout.md``).

**Mapping.** One layout per repository under a root directory: repository ``team/api`` is
``<root>/team/api/`` holding ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``. Tags are
``org.opencontainers.image.ref.name`` annotations on ``index.json`` entries (the bare tag, as
skopeo's ``oci:DIR:TAG`` transport and umoci write and read them), so ``skopeo inspect
oci:<root>/team/api:v1`` and ``umoci ls --layout <root>/team/api`` read what this adapter
writes, and it reads theirs. Untagged manifests get an entry without the annotation, so they
stay reachable (a layout's garbage is what ``index.json`` does not reach); children of an index
need no entry of their own. Repository names follow the distribution grammar (lower case,
``/``-separated); the components ``blobs``, ``index.json`` and ``oci-layout`` are refused, so
one repository never lands inside another's files. The root must exist (a missing root is more
likely an unmounted disk than an empty registry); repositories are created on first write.

**Crash safety.** Every file is written to a temporary file under ``<root>/.registry-ops-tmp``,
flushed to disk, then renamed into place (the directory synced after), so a reader or a crash
sees the old file or the new one, never a part. Order: blobs first, ``index.json`` last, so a
crash at worst leaves a blob nothing references (garbage, never a dangling reference). Deletes
run the other way: ``index.json`` first, then the file. ``index.json`` updates are
read-modify-write under an exclusive ``flock`` on the repository directory, so concurrent
writers (threads or processes) never lose each other's entries.

**Safety by construction.** Content is checked against its digest before it is renamed into
place; a manifest is refused unless every blob (config, layers) or child manifest it names is
already in the layout; a manifest or blob that a remaining manifest still uses cannot be
deleted. Reads verify digests too (a damaged file raises Invalid, it is never served).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .base import (
    INDEX_TYPES,
    OCI_INDEX,
    BlobData,
    Capabilities,
    Denied,
    Descriptor,
    Invalid,
    Manifest,
    ManifestHead,
    NotFound,
    Page,
    Registry,
    RegistryError,
    RepositorySettings,
    Unavailable,
    add_tagged_referrers,
    descriptor_of,
    digest_of,
    index_size,
    link_graph,
    media_type_of,
    platform_of,
    referrer_tags,
    referrers_of_type,
)
from .records import config_digests, index_created, manifest_record, parse_configs
from .streams import BlobStream, chunks_of

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
TMP_DIR = ".registry-ops-tmp"
RESERVED = frozenset({"blobs", "index.json", LAYOUT_FILE})
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class OciLayoutRegistry(Registry):
    kind = "ocilayout"
    capabilities = Capabilities(
        lists_untagged_manifests=True,
        deletes_tags=True,
        untag_keeps_manifest=True,
        referrers_api=True,  # every manifest the layout holds is read to find subjects
        records_push_time=False,
        records_pull_time=False,
        blob_reads_cheap=True,
        deletes_blobs=True,
        mounts_blobs=True,  # a hard link between two repositories' layouts, else a copy
        repository_settings=False,
        explicit_repositories=False,
    )

    def __init__(self, name: str, root: str | os.PathLike[str], *, read_configs: bool = True) -> None:
        super().__init__(name)
        self.root = Path(root)
        self.read_configs = read_configs

    # -- paths, errors, files ----------------------------------------------------------------
    def _dir(self, repository: str) -> Path:
        if not isinstance(repository, str) or not REPOSITORY.match(repository):
            raise self.error(
                f"{repository!r} is not a valid repository name (lower-case components joined by '/')",
                None,
                Invalid,
            )
        if RESERVED & set(repository.split("/")):
            raise self.error(
                f"repository name {repository!r} uses a name reserved by the layout format "
                f"({', '.join(sorted(RESERVED))})",
                None,
                Invalid,
            )
        return self.root / repository

    def _blob_path(self, repository: str, digest: str) -> Path:
        self.check_digest(digest, repository)
        return self._dir(repository) / "blobs" / "sha256" / digest.split(":", 1)[1]

    @contextlib.contextmanager
    def _os(self, what: str, repository: str | None) -> Iterator[None]:
        """File-system failures as typed errors that name the operation and the path."""
        try:
            yield
        except RegistryError:
            raise
        except FileNotFoundError as exc:
            raise self.error(f"{what}: {exc.filename} does not exist", repository, NotFound) from None
        except PermissionError as exc:
            raise self.error(f"{what}: permission denied on {exc.filename}", repository, Denied) from None
        except OSError as exc:
            cls = (
                Unavailable
                if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT)
                else RegistryError
            )
            raise self.error(f"{what}: {exc.strerror or exc} ({exc.filename})", repository, cls) from None

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise self.error(
                f"layout root {self.root} does not exist or is not a directory (not mounted?)",
                None,
                Unavailable,
            )

    def _tmp(self) -> Path:
        self._check_root()
        tmp = self.root / TMP_DIR
        tmp.mkdir(exist_ok=True)
        return tmp

    def _write(self, chunks: Iterable[bytes]) -> tuple[Path, str, int]:
        """Chunks into a synced temporary file: (path, digest, size)."""
        fd, name = tempfile.mkstemp(dir=self._tmp(), prefix="w-")
        hasher, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name), "sha256:" + hasher.hexdigest(), size

    @staticmethod
    def _sync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _place(self, tmp: Path, target: Path) -> None:
        """Rename a finished temporary file into place, atomically and durably."""
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        self._sync_dir(target.parent)

    def _write_file(self, target: Path, data: bytes) -> None:
        tmp, _, _ = self._write([data])
        self._place(tmp, target)

    # -- layouts and index.json --------------------------------------------------------------
    def _ensure_layout(self, repository: str) -> bool:
        """Create the repository's layout if absent; True if it was created."""
        path = self._dir(repository)
        self._check_root()
        if (path / LAYOUT_FILE).is_file():
            return False
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        with self._locked(path):
            if (path / LAYOUT_FILE).is_file():
                return False
            if not (path / "index.json").exists():
                self._write_file(path / "index.json", _dump(_empty_index()))
            self._write_file(path / LAYOUT_FILE, _dump({"imageLayoutVersion": LAYOUT_VERSION}))
        return True

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read_index(self, repository: str) -> dict[str, Any]:
        path = self._dir(repository)
        self._check_root()
        layout = path / LAYOUT_FILE
        if not layout.is_file():
            raise self.error(f"repository not found (no {layout})", repository, NotFound)
        with self._os("read index.json", repository):
            try:
                version = json.loads(layout.read_bytes()).get("imageLayoutVersion")
                index = json.loads((path / "index.json").read_bytes())
            except (ValueError, AttributeError) as exc:
                raise self.error(
                    f"{path}: oci-layout or index.json is not valid JSON: {exc}", repository, Invalid
                ) from None
        if version != LAYOUT_VERSION:
            raise self.error(f"{layout}: unsupported imageLayoutVersion {version!r}", repository, Invalid)
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise self.error(f"{path / 'index.json'}: not an image index", repository, Invalid)
        index.setdefault("manifests", [])
        return index

    @contextlib.contextmanager
    def _update_index(self, repository: str) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write of index.json; written (atomically) only if it changed."""
        path = self._dir(repository)
        self._check_root()
        if not (path / LAYOUT_FILE).is_file():
            raise self.error(f"repository not found (no {path / LAYOUT_FILE})", repository, NotFound)
        with self._os("update index.json", repository), self._locked(path):
            index = self._read_index(repository)
            before = _dump(index)
            yield index
            after = _dump(index)
            if after != before:
                self._write_file(path / "index.json", after)

    def _entries(self, repository: str) -> list[dict[str, Any]]:
        return [e for e in self._read_index(repository)["manifests"] if isinstance(e, dict) and "digest" in e]

    # -- repositories ------------------------------------------------------------------------
    def list_repositories(self) -> list[str]:
        self._check_root()
        found: list[str] = []
        with self._os("list repositories", None):
            for dirpath, dirnames, filenames in os.walk(self.root):
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if LAYOUT_FILE in filenames and here != self.root:
                    found.append(here.relative_to(self.root).as_posix())
                    dirnames[:] = [d for d in dirnames if d != "blobs"]
        return sorted(found)

    def create_repository(self, repository: str, settings: RepositorySettings | None = None) -> bool:
        """An empty layout (``oci-layout`` and an empty ``index.json``); settings do not apply."""
        with self._os("create repository", repository):
            return self._ensure_layout(repository)

    def describe_repository(self, repository: str) -> RepositorySettings:
        """Only what the files tell: the layout's creation time (``oci-layout``'s mtime)."""
        self._read_index(repository)
        with self._os("describe repository", repository):
            mtime = (self._dir(repository) / LAYOUT_FILE).stat().st_mtime
        return RepositorySettings(created_at=datetime.fromtimestamp(mtime, UTC))

    def delete_repository(
        self, repository: str, digests: Iterable[str] = (), blobs: Iterable[str] = ()
    ) -> None:
        """The repository's layout directory removed, and the empty folders above it up to (never
        including) the root."""
        path = self._dir(repository).resolve()
        root = self.root.resolve()
        if root not in path.parents:
            raise self.error(f"{path} is not inside the layout root {root}", repository, Invalid)
        if path.exists():
            shutil.rmtree(path)
        for parent in path.parents:
            if parent == root:
                break
            if not parent.is_dir():  # absent already (a second cleanup)
                continue
            if any(parent.iterdir()):
                break
            parent.rmdir()

    def apply_repository_settings(self, repository: str, settings: RepositorySettings) -> list[str]:
        self._read_index(repository)
        return sorted(settings.given())

    # -- tags ----------------------------------------------------------------------------------
    def list_tags(self, repository: str, page: Page | None = None) -> list[str]:
        tags = {t for e in self._entries(repository) if (t := _tag_of(e))}
        return (page or Page()).apply(tags)

    def delete_tag(self, repository: str, tag: str) -> None:
        """Drop the tag's entry; the manifest keeps an untagged one (it stays, as in a registry)."""
        self._check_tag(tag, repository)
        with self._update_index(repository) as index:
            entries = index["manifests"]
            gone = [e for e in entries if _tag_of(e) == tag]
            if not gone:
                raise self.error(f"tag {tag!r} not found", repository, NotFound)
            entries[:] = [e for e in entries if _tag_of(e) != tag]
            for e in gone:
                if not any(x.get("digest") == e["digest"] for x in entries):
                    entries.append(_untagged(e))

    def _check_tag(self, tag: str, repository: str) -> None:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise self.error(f"{tag!r} is not a valid tag", repository, Invalid)

    # -- manifests -----------------------------------------------------------------------------
    def _resolve(self, repository: str, reference: str) -> tuple[str, str | None]:
        """(digest, media type from index.json if it says) of a tag or digest; NotFound if absent."""
        entries = self._entries(repository)
        if reference.startswith("sha256:"):
            self.check_digest(reference, repository)
            media = next((e.get("mediaType") for e in entries if e["digest"] == reference), None)
            if not self._blob_path(repository, reference).is_file():
                raise self.error(f"manifest {reference} not found", repository, NotFound)
            return reference, media
        for e in entries:
            if _tag_of(e) == reference:
                return e["digest"], e.get("mediaType")
        raise self.error(f"tag {reference!r} not found", repository, NotFound)

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        digest, media = self._resolve(repository, reference)
        with self._os(f"read manifest {digest}", repository):
            raw = self._blob_path(repository, digest).read_bytes()
        if digest_of(raw) != digest:
            raise self.error(
                f"manifest {digest}: the file hashes to {digest_of(raw)} (damaged)", repository, Invalid
            )
        try:
            declared = media_type_of(raw)
        except ValueError:
            raise self.error(f"manifest {reference} is not valid JSON", repository, Invalid) from None
        return Manifest(digest, media or declared, raw)

    def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        try:
            digest, media = self._resolve(repository, reference)
        except NotFound:
            return None
        path = self._blob_path(repository, digest)
        with self._os(f"stat manifest {digest}", repository):
            size = path.stat().st_size
            if not media:
                try:
                    media = media_type_of(path.read_bytes())
                except ValueError:
                    raise self.error(f"manifest {reference} is not valid JSON", repository, Invalid) from None
        return ManifestHead(digest, media, size)

    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        """Store the manifest (every blob or child it names must be here), then index it."""
        if tag is not None:
            self._check_tag(tag, repository)
        self.check_digest(manifest.digest, repository)
        if digest_of(manifest.raw) != manifest.digest:
            raise self.error(
                f"manifest {manifest.digest}: the bytes hash to {digest_of(manifest.raw)}",
                repository,
                Invalid,
            )
        try:
            body = json.loads(manifest.raw)
        except ValueError:
            raise self.error(f"manifest {manifest.digest} is not valid JSON", repository, Invalid) from None
        with self._os(f"put manifest {manifest.digest}", repository):
            self._ensure_layout(repository)
            missing = [d for d in _references(body) if not self._blob_path(repository, d).is_file()]
            if missing:
                raise self.error(
                    f"manifest {manifest.digest} references {len(missing)} blob(s) or manifest(s) not in "
                    f"the layout, e.g. {missing[0]}: put them first",
                    repository,
                    Invalid,
                )
            target = self._blob_path(repository, manifest.digest)
            if not target.is_file():
                tmp, _, _ = self._write([manifest.raw])
                self._place(tmp, target)
            entry: dict[str, Any] = {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.raw),
            }
            if body.get("artifactType"):
                entry["artifactType"] = body["artifactType"]
            with self._update_index(repository) as index:
                entries = index["manifests"]
                if tag is not None:
                    entries[:] = [
                        e
                        for e in entries
                        if _tag_of(e) != tag
                        and not (e.get("digest") == manifest.digest and _tag_of(e) is None)
                    ]
                    entries.append({**entry, "annotations": {REF_NAME: tag}})
                elif not any(e.get("digest") == manifest.digest for e in entries):
                    entries.append(entry)
        return manifest.digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Remove its entries (tags go with them), then its file; refused while another manifest
        in the layout lists it."""
        path = self._blob_path(repository, digest)
        with self._update_index(repository) as index:
            entries = index["manifests"]
            listed = any(e.get("digest") == digest for e in entries)
            if not listed and not path.is_file():
                raise self.error(f"manifest {digest} not found", repository, NotFound)
            rest = [e for e in entries if e.get("digest") != digest]
            users = self._users(repository, rest, {digest})
            if users:
                raise self.error(
                    f"manifest {digest} is still used by {users[digest]}: delete that first",
                    repository,
                    Invalid,
                )
            entries[:] = rest
        with self._os(f"delete manifest {digest}", repository):
            path.unlink(missing_ok=True)
            self._sync_dir(path.parent)

    def _walk(self, repository: str, entries: list[dict[str, Any]]) -> dict[str, Manifest]:
        """Every manifest reachable from these entries (indexes walked down), by digest."""
        seen: dict[str, Manifest] = {}
        pending = [e["digest"] for e in entries]
        while pending:
            digest = pending.pop()
            if digest in seen:
                continue
            try:
                m = self.get_manifest(repository, digest)
            except NotFound:
                continue  # a sparse layout: the child is not here
            seen[digest] = m
            if m.media_type in INDEX_TYPES:
                pending.extend(e["digest"] for e in m.body.get("manifests", []) if "digest" in e)
        return seen

    def _users(self, repository: str, entries: list[dict[str, Any]], wanted: set[str]) -> dict[str, str]:
        """For each wanted digest some manifest reachable from ``entries`` uses: that manifest."""
        users: dict[str, str] = {}
        for digest, m in self._walk(repository, entries).items():
            for ref in _references(m.body):
                if ref in wanted:
                    users.setdefault(ref, digest)
        return users

    # -- listing -------------------------------------------------------------------------------
    def list_images(self, repository: str) -> list[dict[str, Any]]:
        entries = self._entries(repository)
        tags_of: dict[str, list[str]] = {}
        for e in entries:
            tags_of.setdefault(e["digest"], [])
            if (t := _tag_of(e)) is not None:
                tags_of[e["digest"]].append(t)
        manifests = self._walk(repository, entries)
        children: dict[str, list[str]] = {}
        platforms: dict[str, str] = {}
        for m in manifests.values():
            if m.media_type in INDEX_TYPES:
                listed = m.body.get("manifests", [])
                children[m.digest] = [e["digest"] for e in listed if e["digest"] in manifests]
                for e in listed:
                    if p := platform_of(e.get("platform")):
                        platforms[e["digest"]] = p
        configs: dict[str, dict[str, Any]] = {}
        if self.read_configs:
            wanted = config_digests(manifests.values())
            configs = parse_configs(
                ((d, self.get_blob(repository, d)) for d in wanted),
                lambda p: self.error(p, repository, Invalid),
            )
        records = [
            manifest_record(self.kind, repository, m, sorted(tags_of.get(d, [])), platforms.get(d), configs)
            for d, m in manifests.items()
        ]
        link_graph(records, children)
        index_size(records)
        index_created(records)
        return sorted(records, key=lambda r: r["digest"])

    def list_referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest`` (the layout read whole), plus the tag schema's
        index and cosign-style tags."""
        self.check_digest(digest, repository)
        entries = self._entries(repository)
        found: dict[str, Descriptor] = {}
        for m in self._walk(repository, entries).values():
            if (m.body.get("subject") or {}).get("digest") == digest:
                found[m.digest] = descriptor_of(m)
        for tag in referrer_tags(digest):
            if not any(_tag_of(e) == tag for e in entries):
                continue
            add_tagged_referrers(found, self.get_manifest(repository, tag))
        return referrers_of_type(found, artifact_type)

    # -- blobs ---------------------------------------------------------------------------------
    def open_blob(self, repository: str, digest: str) -> IO[bytes]:
        path = self._blob_path(repository, digest)
        if not (self._dir(repository) / LAYOUT_FILE).is_file() or not path.is_file():
            raise self.error(f"blob {digest} not found", repository, NotFound)
        with self._os(f"open blob {digest}", repository):
            file = path.open("rb")
            size = os.fstat(file.fileno()).st_size
        return BlobStream(
            chunks_of(file), digest, size, lambda p, cls: self.error(p, repository, cls), file.close
        )

    def head_blob(self, repository: str, digest: str) -> int | None:
        path = self._blob_path(repository, digest)
        with self._os(f"stat blob {digest}", repository):
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return None

    def put_blob(self, repository: str, data: BlobData, digest: str, size: int | None = None) -> str:
        """Written to a temporary file while hashed, renamed into place only if it matches."""
        target = self._blob_path(repository, digest)
        with self._os(f"put blob {digest}", repository):
            self._ensure_layout(repository)
            tmp, got, n = self._write(chunks_of(data))
            if got != digest or (size is not None and n != size):
                tmp.unlink(missing_ok=True)
                why = f"hashes to {got}" if got != digest else f"is {n} bytes, {size} announced"
                raise self.error(f"blob {digest}: the content {why}; nothing was stored", repository, Invalid)
            if target.is_file():
                tmp.unlink()
            else:
                self._place(tmp, target)
        return digest

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """A hard link from the other repository's layout (same root), else a verified copy."""
        source = self._blob_path(from_repository, digest)
        target = self._blob_path(repository, digest)
        if not source.is_file():
            return False
        with self._os(f"mount blob {digest} from {from_repository}", repository):
            self._ensure_layout(repository)
            if target.is_file():
                return True
            try:
                os.link(source, target)
                self._sync_dir(target.parent)
            except FileExistsError:
                pass
            except OSError:  # no hard links here (another file system): copy, checked
                with self.open_blob(from_repository, digest) as stream:
                    self.put_blob(repository, stream, digest)
        return True

    def delete_blob(self, repository: str, digest: str) -> None:
        """Refused while a manifest the layout reaches uses it (the layout stays whole)."""
        path = self._blob_path(repository, digest)
        entries = self._entries(repository)
        if not path.is_file():
            raise self.error(f"blob {digest} not found", repository, NotFound)
        users = self._users(repository, entries, {digest})
        if users or any(e.get("digest") == digest for e in entries):
            raise self.error(
                f"blob {digest} is still used by {users.get(digest, 'index.json')}: delete that first",
                repository,
                Invalid,
            )
        with self._os(f"delete blob {digest}", repository):
            path.unlink()
            self._sync_dir(path.parent)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def _tag_of(entry: dict[str, Any]) -> str | None:
    """The tag of an index.json entry: the ref.name annotation, or its part after the last ':'
    when it holds a full reference (``registry/name:tag``)."""
    name = (entry.get("annotations") or {}).get(REF_NAME)
    if not isinstance(name, str) or not name:
        return None
    head, sep, tail = name.rpartition(":")
    return tail if sep and head and "/" not in tail else name


def _untagged(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k != "annotations"}
    rest = {k: v for k, v in (entry.get("annotations") or {}).items() if k != REF_NAME}
    if rest:
        out["annotations"] = rest
    return out


def _references(body: dict[str, Any]) -> list[str]:
    """Blobs and manifests a manifest needs present: config, layers (not foreign ones with
    ``urls``), an index's children. A ``subject`` may be absent (referrers can come first)."""
    refs: list[str] = []
    if isinstance(body.get("config"), dict) and "digest" in body["config"]:
        refs.append(body["config"]["digest"])
    for key in ("layers", "manifests"):
        for d in body.get(key) or []:
            if isinstance(d, dict) and "digest" in d and not d.get("urls"):
                refs.append(d["digest"])
    return refs
