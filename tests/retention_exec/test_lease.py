"""One executing retention run per registry: the S3 lease, on moto's S3.

Reproduction from the hardening issue: two ``--execute`` runs at once both succeeded, both reported
the same removals, and every image was archived twice.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from include.registry_ops.retention.lease import Lease, LeaseHeld, LeaseKeeper, LeaseLost, acquire_all
from tests.retention_exec.helpers import BUCKET


def _lease(s3, registry: str, holder: str, ttl: float = 60.0) -> Lease:
    return Lease(s3, BUCKET, "leases-test/", registry, holder, run_id=f"run-{holder}", ttl=ttl)


@pytest.fixture
def registry_name() -> str:
    return f"reg-{uuid.uuid4().hex[:8]}"


def test_a_second_holder_is_refused_naming_the_first_and_its_age(ret_s3, registry_name):
    first = _lease(ret_s3, registry_name, "cli:host-a:1:aaaa").acquire()
    with pytest.raises(LeaseHeld) as err:
        _lease(ret_s3, registry_name, "cli:host-b:2:bbbb").acquire()
    text = str(err.value)
    assert registry_name in text and "cli:host-a:1:aaaa" in text and "run-cli:host-a:1:aaaa" in text
    assert "taken" in text and " s ago" in text and "expires in" in text
    first.release()
    assert _lease(ret_s3, registry_name, "cli:host-b:2:bbbb").acquire().etag  # free again


def test_the_same_holder_shares_it(ret_s3, registry_name):
    """Every mapped task of one DAG run acts under the lease its plan task took."""
    a = _lease(ret_s3, registry_name, "manual__2026-11-28T08:00:00+00:00").acquire()
    b = _lease(ret_s3, registry_name, "manual__2026-11-28T08:00:00+00:00").acquire()
    assert a.etag != b.etag  # b renewed it
    with pytest.raises(LeaseHeld):
        _lease(ret_s3, registry_name, "scheduled__other").acquire()


def test_an_expired_lease_is_taken_over_once(ret_s3, registry_name):
    """A crashed run's lease expires; of two runs racing for it exactly one wins."""
    stale = {
        "registry": registry_name,
        "holder": "cli:gone-host:999:dead",
        "run_id": "plan-crashed",
        "host": "gone-host",
        "pid": 999,
        "acquired_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        "renewed_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "expires_at": (datetime.now(UTC) - timedelta(minutes=55)).isoformat(),
    }
    key = _lease(ret_s3, registry_name, "x").key
    ret_s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(stale).encode())
    first, second = _lease(ret_s3, registry_name, "cli:h:1:1"), _lease(ret_s3, registry_name, "cli:h:2:2")
    seen_by_second = second.read()  # both saw the expired lease ...
    first.acquire()  # ... the first replaced it (If-Match on the stale ETag) ...
    calls: list[int] = []
    real_read = second.read

    def stale_then_real():
        calls.append(1)
        return seen_by_second if len(calls) == 1 else real_read()

    second.read = stale_then_real  # type: ignore[method-assign]
    with pytest.raises(LeaseHeld, match="cli:h:1:1"):  # ... so the second's If-Match fails
        second.acquire()
    assert len(calls) == 2
    doc = json.loads(ret_s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert doc["holder"] == "cli:h:1:1"


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over(ret_s3, registry_name):
    import socket
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(proc.stdout)
    doc = {
        "holder": "cli:this-host:dead",
        "run_id": "plan-x",
        "host": socket.gethostname(),
        "pid": dead,
        "acquired_at": datetime.now(UTC).isoformat(),
        "renewed_at": datetime.now(UTC).isoformat(),
        "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
    }
    key = _lease(ret_s3, registry_name, "x").key
    ret_s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(doc).encode())
    assert _lease(ret_s3, registry_name, "cli:me").acquire().etag


def test_renewal_keeps_it_and_a_takeover_is_noticed_before_the_next_delete(ret_s3, registry_name):
    mine = _lease(ret_s3, registry_name, "cli:me", ttl=6).acquire()
    with LeaseKeeper([mine], interval=0.05) as keeper:
        threading.Event().wait(0.3)
        keeper.check()  # still ours
        doc = json.loads(ret_s3.get_object(Bucket=BUCKET, Key=mine.key)["Body"].read())
        assert doc["holder"] == "cli:me" and doc["renewed_at"] > doc["acquired_at"]
        # someone takes it over (as after an expiry): our next renewal fails, the run must stop
        other = dict(doc, holder="cli:other", run_id="plan-other")
        ret_s3.put_object(Bucket=BUCKET, Key=mine.key, Body=json.dumps(other).encode())
        threading.Event().wait(0.3)
        with pytest.raises(LeaseLost, match="cli:other"):
            keeper.check()
    mine.release()  # a lease we lost is not deleted
    assert json.loads(ret_s3.get_object(Bucket=BUCKET, Key=mine.key)["Body"].read())["holder"] == "cli:other"


def test_all_or_none(ret_s3, registry_name):
    held = _lease(ret_s3, registry_name + "-b", "cli:other").acquire()
    with pytest.raises(LeaseHeld):
        acquire_all(
            ret_s3, BUCKET, "leases-test/", [registry_name + "-a", registry_name + "-b"], "cli:me", "r", 60
        )
    # the lease on -a taken on the way was given back
    assert _lease(ret_s3, registry_name + "-a", "cli:third").acquire().etag
    held.release()
