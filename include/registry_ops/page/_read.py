"""S3 reads the section loaders share: a pointer read that also says which version of it was read
(the memo key), and a loader of many small objects read once per process, within a time budget
and then behind the request (``objects.get_many`` reads them a pool at a time). Text copied from
errors is masked with ``model.redact`` (a registry error may quote a URL with credentials in it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from ..store import objects
from ..store.runs import ManifestError, RunLayout

log = logging.getLogger(__name__)


class ArtefactError(ValueError):
    """An S3 object a section cannot use (the message names it and the problem): it will not get
    better by asking again (objects of a run are written once), so a memo may keep it. Every
    section raises this one class (``_artefacts`` too)."""


def read_pointer(s3: Any, layout: RunLayout) -> tuple[dict[str, Any], tuple[str, str]] | None:
    """The layout's ``latest`` pointer and its version (ETag, LastModified), None before the
    first run. The version, not the content, keys the memo: a rerun with the same run id writes
    the same pointer text over a changed summary, but never with the same LastModified."""
    from botocore.exceptions import ClientError

    key = layout.latest_key
    try:
        resp = s3.get_object(Bucket=layout.bucket, Key=key)
    except ClientError as exc:
        if objects.is_missing(exc):
            return None
        raise
    body = resp["Body"].read()
    try:
        doc = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ManifestError(f"{layout.url(key)} is not JSON ({exc})") from None
    layout.check(doc, key)
    return doc, (str(resp.get("ETag", "")), str(resp.get("LastModified", "")))


def json_of(bucket: str, key: str, body: bytes) -> Any:
    """The object's JSON, or ArtefactError naming it."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ArtefactError(f"{objects.url(bucket, key)} is not JSON ({exc})") from None


class Loader:
    """Objects read once per process and parsed (``parse(key, body)``; a missing object is
    None), a request reading at most ``budget`` seconds' worth and a background thread the rest.

    A year of runs is hundreds of objects, one GET each: more than a request may wait for. The
    first request reads the keys it is given in order (newest first) until its budget is spent,
    shows those, and leaves the others to one background thread; later requests find them read.
    Thread-safe; only one background thread per loader at a time."""

    BATCH = objects.GET_WORKERS * 4

    def __init__(self, s3: Any, bucket: str, parse: Any) -> None:
        self.s3, self.bucket, self.parse = s3, bucket, parse
        self.done: dict[str, Any] = {}
        self.version: Any = None  # the caller's: which version of its source the values are of
        self.complete: Any = None  # the caller's result once every key was read
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def forget(self, key: str) -> None:
        """Read ``key`` again next time (an object that was rewritten)."""
        with self._lock:
            self.done.pop(key, None)

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _read(self, keys: list[str]) -> None:
        got = objects.get_many(self.s3, self.bucket, keys)
        parsed = {k: None if body is None else self.parse(k, body) for k, body in got.items()}
        with self._lock:
            self.done.update(parsed)

    def _background(self, keys: list[str]) -> None:
        def run() -> None:
            try:
                for i in range(0, len(keys), self.BATCH):
                    self._read([k for k in keys[i : i + self.BATCH] if k not in self.done])
            except Exception as exc:  # S3 trouble, or the interpreter shutting down: read again later
                log.warning("registry page: background read stopped: %s", exc)

        self._thread = threading.Thread(target=run, name="page-loader", daemon=True)
        self._thread.start()

    def get(self, keys: list[str], budget: float, wait: bool = False) -> tuple[dict[str, Any], int]:
        """(parsed value by key for the keys read so far, how many are still being read). While
        the background thread reads, a request returns what is there (``wait``: waits for it
        within the budget, then reads what is left itself)."""
        deadline = time.monotonic() + budget
        todo = [k for k in keys if k not in self.done]
        i = 0
        while i < len(todo) and time.monotonic() < deadline:
            thread = self._thread
            if thread is not None and thread.is_alive():  # reading already
                if not wait:
                    break
                thread.join(max(0.0, deadline - time.monotonic()))
                continue
            batch = [k for k in todo[i : i + self.BATCH] if k not in self.done]
            if batch:
                self._read(batch)
            i += self.BATCH
        with self._lock:
            rest = [k for k in todo[i:] if k not in self.done]
            if rest and not self.busy():
                self._background(rest)
            return {k: self.done[k] for k in keys if k in self.done}, len(rest)
