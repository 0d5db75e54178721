"""One executing retention run per registry at a time: a lease object in S3.

Two ``--execute`` runs at once used to both succeed and archive every image twice. A lease is a
small JSON object ``<runs_prefix>leases/<registry>.json`` naming its holder, the run, the host and
process, and when it expires. It is taken with S3's conditional writes, so no extra service (no
DynamoDB table, no database) is needed:

- **acquire**: ``PutObject If-None-Match: *``; when the object exists it is read (body and ETag):
  a live lease of another holder refuses with :class:`LeaseHeld` naming the holder and its age; our
  own lease, an expired one, or one left by a dead process on this host is replaced with
  ``PutObject If-Match: <etag>``, so of two runs racing for an expired lease exactly one wins.
- **renew**: ``PutObject If-Match: <our etag>`` every ``ttl / 3`` seconds from a background thread
  (:class:`LeaseKeeper`) while the run works; a failed renewal (someone took the lease after it
  expired) marks it lost, and :meth:`Lease.check` raises :class:`LeaseLost` before the next delete.
- **release**: ``DeleteObject If-Match: <our etag>``; a lease we no longer hold is left alone.

The holder is what may share a lease: every mapped task of one Airflow DAG run uses the run id, so
they all act under the lease the ``plan`` task took; each command-line invocation is a holder of its
own. Dry runs take no lease: they change nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from ..store.objects import is_missing, is_precondition_failed

log = logging.getLogger(__name__)

DEFAULT_TTL = 300.0


class LeaseHeld(RuntimeError):
    """Another run holds the registry's lease; the message names it, its age and its expiry."""


class LeaseLost(RuntimeError):
    """Our lease was taken over (it expired while we worked); stop before deleting anything more."""


def lease_key(runs_prefix: str, registry: str) -> str:
    return f"{runs_prefix}leases/{registry}.json"


def cli_holder() -> str:
    """A holder id unique to this process invocation (command line runs)."""
    return f"cli:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease of one registry for one holder (see the module docstring)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        runs_prefix: str,
        registry: str,
        holder: str,
        run_id: str,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self.s3, self.bucket, self.registry = s3, bucket, registry
        self.key = lease_key(runs_prefix, registry)
        self.holder, self.run_id, self.ttl = holder, run_id, ttl
        self.etag: str | None = None
        self.acquired_at: datetime | None = None
        self.lost: str | None = None

    # -- the object --------------------------------------------------------------------------
    def _body(self, now: datetime) -> bytes:
        doc = {
            "registry": self.registry,
            "holder": self.holder,
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": (self.acquired_at or now).isoformat(),
            "renewed_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=self.ttl)).isoformat(),
        }
        return json.dumps(doc, sort_keys=True).encode()

    def _put(self, **condition: str) -> None:
        now = datetime.now(UTC)
        resp = self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=self._body(now),
            ContentType="application/json",
            **condition,
        )
        self.etag = resp["ETag"]
        self.acquired_at = self.acquired_at or now

    def read(self) -> tuple[dict[str, Any], str] | None:
        """The current lease document and its ETag, or None when there is none."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        raw = obj["Body"].read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {
                "holder": "?",
                "expires_at": "1970-01-01T00:00:00+00:00",
                "unreadable": raw[:80].decode("latin-1"),
            }
        return doc, obj["ETag"]

    # -- acquire / renew / release -------------------------------------------------------------
    def _replaceable(self, doc: dict[str, Any], now: datetime) -> str | None:
        """Why an existing lease may be taken (ours, expired, dead process here), else None."""
        if doc.get("holder") == self.holder:
            return "ours"
        try:
            expires = datetime.fromisoformat(str(doc.get("expires_at")))
        except ValueError:
            return "unreadable"
        if expires <= now:
            return "expired"
        pid = doc.get("pid")
        if doc.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            return f"its process {pid} on this host is gone"
        return None

    def describe(self, doc: dict[str, Any], now: datetime) -> str:
        def age(field: str) -> str:
            try:
                return f"{(now - datetime.fromisoformat(str(doc[field]))).total_seconds():.0f} s"
            except (KeyError, ValueError):
                return "?"

        try:
            left = f"{(datetime.fromisoformat(str(doc['expires_at'])) - now).total_seconds():.0f} s"
        except (KeyError, ValueError):
            left = "?"
        return (
            f"held by {doc.get('holder')} (run {doc.get('run_id')}, pid {doc.get('pid')} on "
            f"{doc.get('host')}), taken {age('acquired_at')} ago, renewed {age('renewed_at')} ago, "
            f"expires in {left}"
        )

    def acquire(self, attempts: int = 5) -> Lease:
        """Take the lease (or renew our own); :class:`LeaseHeld` when another live run has it."""
        for _ in range(attempts):
            try:
                self._put(IfNoneMatch="*")
                log.info("retention: lease on %s taken (s3://%s/%s)", self.registry, self.bucket, self.key)
                return self
            except ClientError as exc:
                if not is_precondition_failed(exc):
                    raise
            current = self.read()
            if current is None:
                continue  # released meanwhile: try again
            doc, etag = current
            now = datetime.now(UTC)
            why = self._replaceable(doc, now)
            if why is None:
                raise LeaseHeld(
                    f"registry {self.registry}: another retention run is acting on it: "
                    f"{self.describe(doc, now)}; nothing was done (lease s3://{self.bucket}/{self.key})"
                )
            try:
                self._put(IfMatch=etag)
            except ClientError as exc:
                if is_precondition_failed(exc) or is_missing(exc):
                    continue  # someone else changed it first: look again
                raise
            if why != "ours":
                log.warning(
                    "retention: lease on %s taken over (%s): %s", self.registry, why, self.describe(doc, now)
                )
            return self
        raise LeaseHeld(f"registry {self.registry}: the lease kept changing under us; try again")

    def renew(self) -> None:
        if self.lost or self.etag is None:
            return
        try:
            self._put(IfMatch=self.etag)
        except ClientError as exc:
            if is_precondition_failed(exc) or is_missing(exc):
                current = self.read()
                who = self.describe(current[0], datetime.now(UTC)) if current else "released by someone else"
                self.lost = f"registry {self.registry}: our lease was taken over: {who}"
                log.error("retention: %s", self.lost)
                return
            raise

    def check(self) -> None:
        """Raise :class:`LeaseLost` when the lease is no longer ours (called before each delete)."""
        if self.lost:
            raise LeaseLost(self.lost)

    def release(self) -> None:
        if self.etag is None or self.lost:
            return
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
            log.info("retention: lease on %s released", self.registry)
        except ClientError as exc:
            if not (is_precondition_failed(exc) or is_missing(exc)):
                raise
        self.etag = None


class LeaseKeeper:
    """Renews leases from a daemon thread while the run works (``with LeaseKeeper(leases):``)."""

    def __init__(self, leases: Iterable[Lease], interval: float | None = None) -> None:
        self.leases = list(leases)
        ttl = min((lease.ttl for lease in self.leases), default=DEFAULT_TTL)
        self.interval = interval if interval is not None else max(0.05, ttl / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention-lease-keeper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for lease in self.leases:
                try:
                    lease.renew()
                except Exception as exc:  # S3 trouble: keep trying until the lease expires
                    log.warning("retention: renewing the lease on %s failed: %s", lease.registry, exc)

    def check(self) -> None:
        for lease in self.leases:
            lease.check()

    def __enter__(self) -> LeaseKeeper:
        if self.leases:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def acquire_all(
    s3: Any, bucket: str, runs_prefix: str, registries: Iterable[str], holder: str, run_id: str, ttl: float
) -> list[Lease]:
    """Leases for several registries, all or none: a refusal releases those already taken."""
    taken: list[Lease] = []
    try:
        for name in sorted(set(registries)):
            taken.append(Lease(s3, bucket, runs_prefix, name, holder, run_id, ttl).acquire())
    except BaseException:
        for lease in taken:
            lease.release()
        raise
    return taken
