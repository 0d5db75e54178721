"""Runs: the folders every capability writes its results to, their manifest, the ``latest``
pointer, and the one run-id cleaner.

Under a capability's root ``R`` (``storage.prefixes.inventory``, ``<reports>scan/``,
``retention.runs_prefix``; backups, audits and reports next)::

    R [runs/]dt=YYYY-MM-DD/HHMMSSZ/   one run, named by when it ran (UTC, to the second)
    R .../manifest.json               what the run wrote and counted; carries ``kind`` and
                                      ``schema_version`` (retention names it ``summary.json``)
    R latest.json                     the last published run: its manifest and main objects
    R _parts/<run id>/                a run's intermediate objects (mapped tasks), dropped on publish
    R <run id>/                       runs keyed by their id instead of their time (retention:
                                      a rerun with the same id must find its journal)

Publishing writes the manifest after the run's objects and the pointer after the manifest, once
every object the pointer names is known to exist. A run that dies before its pointer leaves the
previous run ``latest``; the pointer never names an object that is not there.

Schema versions: a reader accepts every version up to the one it was written for; a manifest
without ``schema_version`` (written before there was one) is version 1. A newer version is
refused naming the object: this code would misread it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import objects

LATEST_NAME = "latest.json"
MANIFEST_NAME = "manifest.json"
PARTS = "_parts/"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WORD = re.compile(r"[A-Za-z0-9]")


class ManifestError(ValueError):
    """A manifest or pointer this code cannot use (the message names the object and why)."""


class RunMissing(ManifestError):
    """A manifest or pointer that should exist does not."""


class SchemaVersionError(ManifestError):
    """A manifest or pointer written by a newer registry-ops (or with a broken version field)."""


def clean_run_id(run_id: str) -> str:
    """A run id as one S3 key segment: every run of other characters than ``A-Za-z0-9_.-``
    (Airflow's ``:`` and ``+``, a ``/``) becomes ``_``. The one copy of this rule: a rerun must
    name the same keys as the run it finishes. An id with no letter or digit is refused (``..``
    or ``::`` would name no run, or the parent folder to tools that normalise paths)."""
    if not _WORD.search(run_id):
        raise ValueError(f"run id {run_id!r} has no letter or digit: it cannot name a run's S3 folder")
    return _UNSAFE.sub("_", run_id)


def dated(at: datetime) -> str:
    """``dt=YYYY-MM-DD/HHMMSSZ/`` of a time (UTC; a naive time is taken as UTC)."""
    at = at.astimezone(UTC) if at.tzinfo else at
    return f"dt={at:%Y-%m-%d}/{at:%H%M%SZ}/"


def schema_version(doc: Any, where: str, supported: int) -> int:
    """The document's schema version (1 when it has none); SchemaVersionError naming ``where``
    when it is newer than ``supported`` or not a positive integer."""
    if not isinstance(doc, dict):
        raise ManifestError(f"{where} is not a JSON object")
    value = doc.get("schema_version", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaVersionError(f"{where}: schema_version {value!r} is not a positive integer")
    if value > supported:
        raise SchemaVersionError(
            f"{where}: schema_version {value} is newer than this registry-ops reads (up to {supported}); "
            "upgrade registry-ops to read it"
        )
    return value


@dataclass(frozen=True)
class RunLayout:
    """The runs of one capability (``kind``) under ``root`` in ``bucket``; see the module docstring.

    ``version`` is the schema version written, and the newest one read."""

    bucket: str
    root: str
    kind: str
    version: int = 1
    runs: str = ""  # the folder of the dated runs under root ("runs/" for the scan)
    manifest_name: str = MANIFEST_NAME

    @property
    def latest_key(self) -> str:
        return self.root + LATEST_NAME

    def url(self, key: str) -> str:
        return objects.url(self.bucket, key)

    def run_prefix(self, at: datetime) -> str:
        """The folder of the run at ``at``."""
        return self.root + self.runs + dated(at)

    def new_run_prefix(self, s3: Any, at: datetime, tries: int = 60) -> str:
        """The folder of a new run at ``at``: ``run_prefix(at)``, or the first later second's
        whose folder holds no published run (manifest). Two runs in one second (the CLI run
        twice) would otherwise write the same keys, and the second would overwrite the first's
        published objects; a retry of a run not yet published still finds its own folder."""
        for step in range(tries):
            prefix = self.run_prefix(at + timedelta(seconds=step))
            if not objects.exists(s3, self.bucket, self.manifest_key(prefix)):
                return prefix
        first = self.url(self.run_prefix(at))
        raise ManifestError(f"{first}: {tries} seconds of runs are all published already")

    def id_prefix(self, run_id: str) -> str:
        """The folder of a run keyed by its id."""
        return f"{self.root}{clean_run_id(run_id)}/"

    def parts_prefix(self, run_id: str) -> str:
        """Where a run parks intermediate objects until it publishes."""
        return f"{self.root}{PARTS}{clean_run_id(run_id)}/"

    def manifest_key(self, run_prefix: str) -> str:
        return run_prefix + self.manifest_name

    def run_folders(self, s3: Any) -> list[str]:
        """The folders directly under the root, but the intermediate ``_parts/`` (one LIST per
        1,000): the runs of a layout keyed by run id (retention)."""
        return [f for f in objects.folders(s3, self.bucket, self.root) if f != self.root + PARTS]

    # -- writing -----------------------------------------------------------------------------
    def publish(
        self,
        s3: Any,
        run_prefix: str,
        manifest: dict[str, Any],
        named: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check that every ``named`` object (role -> key of an object the run wrote) exists
        (ManifestError, nothing written, when one does not), write the run's manifest (stamped
        with ``kind`` and ``schema_version``), then the ``latest`` pointer: the named keys,
        ``extra`` (small values) and ``manifest``. Returns the manifest as written."""
        named = dict(named or {})
        absent = sorted(k for k in set(named.values()) if not objects.exists(s3, self.bucket, k))
        if absent:
            raise ManifestError(
                f"{self.url(self.latest_key)} not moved: the run's objects "
                f"{', '.join(map(self.url, absent))} do not exist"
            )
        stamped = {**manifest, "kind": self.kind, "schema_version": self.version}
        key = self.manifest_key(run_prefix)
        objects.put_json(s3, self.bucket, key, stamped)
        pointer = {
            **(extra or {}),
            **named,
            "manifest": key,
            "kind": self.kind,
            "schema_version": self.version,
        }
        objects.put_json(s3, self.bucket, self.latest_key, pointer)
        return stamped

    # -- reading -----------------------------------------------------------------------------
    def check(self, doc: Any, key: str) -> dict[str, Any]:
        """``doc`` (read from ``key``) if it is this layout's, of a version this code reads."""
        where = self.url(key)
        schema_version(doc, where, self.version)
        if doc.get("kind", self.kind) != self.kind:
            raise ManifestError(f"{where}: kind is {doc['kind']!r}, not {self.kind!r}")
        return doc

    def _read(self, s3: Any, key: str) -> dict[str, Any] | None:
        try:
            doc = objects.get_json_or_none(s3, self.bucket, key)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ManifestError(f"{self.url(key)} is not JSON ({exc})") from None
        return None if doc is None else self.check(doc, key)

    def read_pointer(self, s3: Any) -> dict[str, Any] | None:
        """The ``latest`` pointer, None before the first run is published."""
        return self._read(s3, self.latest_key)

    def read_manifest(self, s3: Any, key: str) -> dict[str, Any]:
        """A run's manifest; RunMissing naming it when it does not exist."""
        doc = self._read(s3, key)
        if doc is None:
            raise RunMissing(f"{self.url(key)} does not exist")
        return doc

    def latest(self, s3: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(pointer, manifest) of the last published run; None before the first."""
        pointer = self.read_pointer(s3)
        if pointer is None:
            return None
        if not isinstance(pointer.get("manifest"), str):
            raise ManifestError(f"{self.url(self.latest_key)} names no manifest: {pointer}")
        return pointer, self.read_manifest(s3, pointer["manifest"])
