"""Fixtures of the store tests: a fresh bucket on the session's moto S3, and a recorder of the
S3 calls the session's client sends (which can also drop one PUT, as a crash would)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


class Calls:
    """(operation, key) of every S3 call, in order; a PutObject whose key ends with
    ``fail_put_on`` fails (the process "dies" before that object is written)."""

    def __init__(self, s3: Any) -> None:
        self.s3, self.ops, self.fail_put_on = s3, [], None
        s3.meta.events.register("before-parameter-build.s3.*", self)

    def __call__(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        op, key = event_name.rsplit(".", 1)[-1], params.get("Key")
        self.ops.append((op, key))
        if op == "PutObject" and self.fail_put_on and key.endswith(self.fail_put_on):
            raise ConnectionError(f"injected: S3 dropped the PUT of {key}")

    def keys(self, op: str) -> list[str]:
        return [k for o, k in self.ops if o == op]

    def close(self) -> None:
        self.s3.meta.events.unregister("before-parameter-build.s3.*", self)


@pytest.fixture
def calls(s3) -> Iterator[Calls]:
    recorder = Calls(s3)
    yield recorder
    recorder.close()


@pytest.fixture
def bucket(s3) -> str:
    name = f"store-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name
