"""The receiver of the distribution registry's notifications (``POST /api/events/<registry>`` of
the Registry page app; no FastAPI here, the route only hands over the headers and the body stream).

A delivery is answered 2xx only once its envelope is in S3, so a registry (which retries every
delivery until it gets a 2xx or 3xx) never loses an event to us. In order:

1. the config (the route's 503 when it cannot be read: nothing can be checked without it);
2. ``Authorization: Bearer <token>``, compared in constant time with the password of the Airflow
   connection ``events.token_conn_id`` (cached :data:`TOKEN_TTL` seconds): else 401, and the
   body is not even read. No token configured (connection missing or without a password) is a
   503: an empty token never matches;
3. the registry name: a configured registry of kind ``oci``, else 404 naming it;
4. the size: ``Content-Length`` over ``events.max_body_bytes`` is 413 before reading, and the
   stream is counted while read, so a chunked body without a length cannot exceed it either;
5. the envelope: a JSON object with an ``events`` list of objects each with ``id``, ``action``
   and ``target``, else 400 naming the problem;
6. storage: the body bytes as posted at
   ``<storage.prefixes.events><registry>/dt=<UTC day of receipt>/<sha256 of the body>.json``,
   written once (``If-None-Match: *``; S3 checks the body against the request's signed SHA-256).
   A delivery retried the same day meets its own object (412, read back and compared): nothing
   is written twice; one retried across midnight is found under the previous day's folder
   first (a HEAD, only in the first ``MIDNIGHT_HORIZON`` after midnight: it halved the
   receiver's throughput when made on every delivery; a retry later than that stores a second
   copy, whose events the reports' ingestion still counts once, by event id). S3 failing is
   503, nothing claimed;
7. the ``on_stored(registry, envelope)`` hook (push forwarding); it raising is 503, the envelope
   staying stored: the registry delivers again, which stores nothing and calls the hook again.

201 answers a new envelope, 200 one already stored. The token is never logged or echoed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..store import objects

log = logging.getLogger(__name__)
MIDNIGHT_HORIZON = timedelta(hours=1)  # registries retry a failed delivery within minutes

WORKERS = 32  # threads for the blocking steps (S3, the hook) of concurrent deliveries
TOKEN_TTL = 30.0  # seconds a looked-up token is trusted (a rotated token takes effect this late)
CONTENT_TYPE = "application/json"
OnStored = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Answer:
    """What the route answers: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """A delivery answered with ``status`` and ``detail`` (nothing stored)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}

    def answer(self) -> Answer:
        return Answer(self.status, {"detail": self.detail}, self.headers)


# -- the token -------------------------------------------------------------------------------------
def connection_password(conn_id: str) -> str | None:
    """The password of an Airflow connection, read as every connection of ours is read."""
    from ..clients import get_connection

    return get_connection(conn_id).password or None


class TokenCache:
    """The expected bearer token per connection id, looked up at most once per ``ttl`` seconds
    (a miss is remembered too: a flood of deliveries does not flood the secrets backend)."""

    def __init__(
        self,
        lookup: Callable[[str], str | None] = connection_password,
        ttl: float = TOKEN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup, self._ttl, self._clock = lookup, ttl, clock
        self._seen: dict[str, tuple[float, str | None, str | None]] = {}  # id -> (at, token, problem)
        self._lock = threading.Lock()

    def get(self, conn_id: str) -> str:
        """The token; Refused(503) when none is configured (never an empty token)."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(conn_id)
        if seen is None or now - seen[0] >= self._ttl:
            token, problem = None, None
            try:
                token = self._lookup(conn_id)
            except Exception as exc:  # missing connection, secrets backend down
                problem = f"{type(exc).__name__}: {exc}"
            if not token and problem is None:
                problem = f"Airflow connection {conn_id!r} has no password"
            seen = (now, token or None, problem)
            with self._lock:
                self._seen[conn_id] = seen
        _, token, problem = seen
        if not token:
            log.error(
                "registry events: no token to check deliveries against (events.token_conn_id): %s", problem
            )
            raise Refused(503, f"the receiver has no token configured (Airflow connection {conn_id!r})")
        return token


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether ``Authorization`` is ``Bearer <token>``, compared in constant time."""
    if not token:
        return False
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


# -- the body --------------------------------------------------------------------------------------
def check_length(header: str | None, limit: int) -> None:
    """413 when the declared ``Content-Length`` is over ``limit`` (400 when it is not a number)."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise Refused(400, f"Content-Length {header[:40]!r} is not a number") from None
    if length > limit:
        raise Refused(413, f"the body is {length} bytes; at most {limit} (events.max_body_bytes)")


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The body, counted as it arrives: 413 as soon as it passes ``limit`` (whatever was declared)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over {limit} bytes (events.max_body_bytes)")
        parts.append(chunk)
    return b"".join(parts)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The envelope ``{"events": [{"id", "action", "target", ...}, ...]}``; 400 naming the problem."""
    if not body:
        raise Refused(400, 'the body is empty; a notification envelope {"events": [...]} was expected')
    try:
        envelope = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise Refused(400, f"the body is a JSON {type(envelope).__name__}; an envelope is an object")
    events = envelope.get("events")
    if not isinstance(events, list):
        raise Refused(400, "the body has no 'events' list; not a notification envelope")
    if not events:
        raise Refused(400, "'events' is empty: no event to store")
    for n, event in enumerate(events):
        if not isinstance(event, dict):
            raise Refused(400, f"events[{n}] is a JSON {type(event).__name__}; an event is an object")
        for key in ("id", "action"):
            if not isinstance(event.get(key), str) or not event[key]:
                raise Refused(400, f"events[{n}].{key}: a non-empty string is required")
        if not isinstance(event.get("target"), dict):
            raise Refused(400, f"events[{n}].target: an object is required")
    return envelope


# -- the registry ----------------------------------------------------------------------------------
def oci_registry(config: Any, name: str) -> str:
    """The configured ``oci`` registry of that name; 404 naming it otherwise."""
    found = next((r for r in config.registries if r.name == name), None)
    if found is None or found.kind != "oci":
        known = ", ".join(r.name for r in config.registries if r.kind == "oci") or "none"
        problem = "not in the config" if found is None else f"of kind {found.kind!r}, not 'oci'"
        raise Refused(404, f"registry {name[:100]!r} is {problem} (oci registries: {known})")
    return found.name


# -- storage ---------------------------------------------------------------------------------------
def envelope_key(prefix: str, registry: str, digest: str, day: date) -> str:
    """``<prefix><registry>/dt=YYYY-MM-DD/<sha256>.json``."""
    return f"{prefix}{registry}/dt={day.isoformat()}/{digest}.json"


@dataclass(frozen=True)
class Stored:
    """Where the envelope is, and whether this delivery wrote it."""

    key: str
    created: bool  # False: this very body was already stored (a retried delivery)


class StoreFailed(Exception):
    """S3 did not take the envelope (the message names the key and S3's answer)."""


def _same(s3: Any, bucket: str, key: str, body: bytes) -> bool:
    """Whether the stored object is this very body (a replay), not other bytes under its name."""
    return objects.get_bytes(s3, bucket, key) == body


def store_envelope(
    s3: Any, bucket: str, prefix: str, registry: str, body: bytes, received: datetime
) -> Stored:
    """Write the body once under the day of receipt, unless it is stored there or the day
    before (a retry across midnight). StoreFailed on any S3 problem: the caller claims nothing."""
    digest = hashlib.sha256(body).hexdigest()
    day = received.astimezone(UTC).date()
    key = envelope_key(prefix, registry, digest, day)
    try:
        earlier = envelope_key(prefix, registry, digest, day - timedelta(days=1))
        since_midnight = received.astimezone(UTC) - datetime.combine(day, datetime.min.time(), UTC)
        if since_midnight < MIDNIGHT_HORIZON and objects.exists(s3, bucket, earlier):
            if not _same(s3, bucket, earlier, body):
                raise StoreFailed(f"{objects.url(bucket, earlier)} holds other bytes than its name says")
            return Stored(earlier, created=False)
        # S3 checks the body it takes against the request's signed SHA-256 and CRC32 (boto3
        # sends both): a 200 is the stored object, no read-back needed (it cost a third of the
        # receiver's S3 requests, see bench/events.py)
        created = objects.put_once(s3, bucket, key, body, CONTENT_TYPE)
        if not created and not _same(s3, bucket, key, body):
            raise StoreFailed(f"{objects.url(bucket, key)} holds other bytes than its name says")
    except (ClientError, BotoCoreError) as exc:
        raise StoreFailed(f"{objects.url(bucket, key)}: {type(exc).__name__}: {exc}") from None
    return Stored(key, created)


# -- one delivery ----------------------------------------------------------------------------------
class Receiver:
    """Everything a delivery goes through (see the module docstring); one per app."""

    def __init__(
        self,
        config_of: Callable[[], Any],
        s3_factory: Callable[[Any], Any],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_stored: OnStored | None = None,
        tokens: TokenCache | None = None,
    ) -> None:
        self.config_of, self.s3_factory, self.clock = config_of, s3_factory, clock
        self.on_stored = on_stored
        self.tokens = tokens or TokenCache()
        # S3 calls block: a pool of their own, so 200 deliveries/s do not queue behind the
        # asyncio default executor's few threads (cpu + 4) that the page's sections use too
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="registry-events")

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _admit(self) -> tuple[Any, str]:
        """The config and the expected token (both may block: a file read, a connection lookup)."""
        try:
            config = self.config_of()
        except Exception as exc:
            log.error("registry events: the config cannot be read: %s", exc)
            raise Refused(503, "the receiver's config cannot be read (see the API server's log)") from None
        return config, self.tokens.get(config.events.token_conn_id)

    def _store(self, config: Any, name: str, body: bytes, received: datetime) -> Stored:
        try:
            s3 = self.s3_factory(config)
            return store_envelope(
                s3, config.storage.bucket, config.storage.prefixes.events, name, body, received
            )
        except StoreFailed as exc:
            log.error("registry events: %s: envelope not stored: %s", name, exc)
        except Exception as exc:  # building the client (its connection), anything else: not stored
            log.error("registry events: %s: envelope not stored: %s: %s", name, type(exc).__name__, exc)
        raise Refused(503, "the envelope could not be stored; deliver it again")

    async def receive(
        self, registry: str, headers: Mapping[str, str], chunks: AsyncIterator[bytes], client: str = "?"
    ) -> Answer:
        try:
            return await self._receive(registry, headers, chunks, client)
        except Refused as refused:
            if refused.status < 500:  # the 5xx causes were logged where they arose, with details
                log.warning(
                    "registry events: %r from %s refused: %s %s",
                    registry[:100],
                    client,
                    refused.status,
                    refused.detail,
                )
            return refused.answer()

    async def _receive(
        self, registry: str, headers: Mapping[str, str], chunks: AsyncIterator[bytes], client: str
    ) -> Answer:
        config, token = await self._call(self._admit)
        if not bearer_ok(headers.get("authorization"), token):
            given = "no" if not headers.get("authorization") else "a wrong"
            raise Refused(
                401, f"{given} bearer token", {"WWW-Authenticate": 'Bearer realm="registry-events"'}
            )
        name = oci_registry(config, registry)
        limit = config.events.max_body_bytes
        check_length(headers.get("content-length"), limit)
        body = await read_limited(chunks, limit)
        envelope = parse_envelope(body)
        stored = await self._call(self._store, config, name, body, self.clock())
        log.debug(
            "registry events: %s: %d event(s) at %s (%s)",
            name,
            len(envelope["events"]),
            stored.key,
            "new" if stored.created else "already stored",
        )
        if self.on_stored is not None:
            try:
                await self._call(self.on_stored, name, envelope)
            except Exception as exc:
                log.error(
                    "registry events: %s: stored at %s, but on_stored failed: %s: %s",
                    name,
                    stored.key,
                    type(exc).__name__,
                    exc,
                )
                raise Refused(
                    503, "the envelope is stored but its processing failed; deliver it again"
                ) from None
        status = 201 if stored.created else 200
        return Answer(
            status, {"key": stored.key, "created": stored.created, "events": len(envelope["events"])}
        )
