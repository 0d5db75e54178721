"""htpasswd password rotation against a distribution registry this test starts (its own, not
the session's): the new password proven by an authenticated request before it becomes
AWSCURRENT, the old line kept until then, a crash after each step, drift, a dry run."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import pytest

from include.registry_ops.config import ConfigError
from include.registry_ops.rotation import htpasswd, run

from .conftest import OTHER_LINE, Aws, Reg, make_config


def password(aws: Aws, reg: Reg, label: str = "AWSCURRENT") -> str | None:
    doc = aws.labelled(reg.secret_id, label)
    return None if doc is None else doc["password"]


def rotate(aws: Aws, reg: Reg, now: datetime | None = None, entry: dict | None = None, **kw: Any) -> dict:
    config = make_config(htpasswd=[entry or reg.entry()], **kw.pop("rotation", {}))
    result = run.rotate_htpasswd(config, now or datetime.now(UTC) + timedelta(days=30), sm=aws.sm, **kw)
    (record,) = result["accounts"]
    return record


def test_rotation_end_to_end(aws, reg):
    assert reg.status(reg.first) == 200
    record = rotate(aws, reg)

    assert record["status"] == "rotated", record
    assert [s["step"] for s in record["steps"]] == [
        "store-pending",
        "write-new-line",
        "promote",
        "clear-pending-label",
        "remove-previous",
    ]
    new = password(aws, reg)
    assert new != reg.first and len(new) >= 40
    assert reg.status(new) == 200 and reg.status(reg.first) == 401
    assert reg.status("other-pass", "other") == 200  # the other user's line is untouched
    lines = reg.path.read_text().splitlines()
    assert lines[0] == OTHER_LINE and len(lines) == 2 and lines[1].startswith(f"{reg.user}:$2b$05$")
    assert os.stat(reg.path).st_mode & 0o777 == 0o640
    doc = aws.labelled(reg.secret_id, "AWSCURRENT")  # the connection's other fields are kept
    assert doc["login"] == reg.user and doc["host"] == "127.0.0.1" and doc["port"] == reg.server.port
    assert password(aws, reg, "AWSPREVIOUS") == reg.first
    assert password(aws, reg, "AWSPENDING") is None
    # a rerun with the password young does nothing
    assert rotate(aws, reg, datetime.now(UTC))["steps"] == []


def test_new_password_refused_by_the_registry_puts_the_old_line_back(aws, reg, tmp_path):
    """The file rotated is not the one the registry reads: the new password is never accepted,
    so the old line comes back, AWSPENDING is dropped and AWSCURRENT stays."""
    copy = tmp_path / "htpasswd"
    copy.write_text(reg.path.read_text())
    before = copy.read_text()
    record = rotate(aws, reg, entry=reg.entry(path=str(copy)), rotation={"verify_timeout_seconds": 1})
    assert record["status"] == "error" and "refuses the new password" in record["error"]
    assert "the old line is back" in record["error"]
    assert copy.read_text() == before
    assert password(aws, reg) == reg.first and password(aws, reg, "AWSPENDING") is None
    assert reg.status(reg.first) == 200


def test_old_line_kept_while_the_current_password_does_not_work(aws, reg, tmp_path):
    """A kept old line is removed only once the current password is proven with the registry."""
    copy = tmp_path / "htpasswd"
    old_hash = bcrypt.hashpw(b"older", bcrypt.gensalt(4)).decode()
    current = "current-" + uuid.uuid4().hex
    new_hash = bcrypt.hashpw(current.encode(), bcrypt.gensalt(4)).decode()
    copy.write_text(f"{htpasswd.PREVIOUS}{reg.user}:{old_hash}\n{reg.user}:{new_hash}\n")
    doc = aws.labelled(reg.secret_id, "AWSCURRENT")
    aws.sm.put_secret_value(SecretId=reg.secret_id, SecretString=json.dumps({**doc, "password": current}))
    before = copy.read_text()
    record = rotate(aws, reg, entry=reg.entry(path=str(copy)), rotation={"verify_timeout_seconds": 1})
    assert record["status"] == "error" and "does not work" in record["error"]
    assert copy.read_text() == before


# -- a crash after each step -----------------------------------------------------------------------
class Crash(BaseException):
    pass


STEPS = [
    ("PutSecretValue", 1),  # AWSPENDING stored
    ("write", 1),  # new line written, old kept
    ("UpdateSecretVersionStage", 1),  # promoted
    ("UpdateSecretVersionStage", 2),  # AWSPENDING off
    ("write", 2),  # old line removed
]


@pytest.mark.parametrize(("call", "nth"), STEPS, ids=[f"{c}-{n}" for c, n in STEPS])
def test_crash_after_each_step_then_rerun_finishes(aws, reg, monkeypatch, call, nth):
    seen = {"n": 0}

    def hook(**_: Any) -> None:
        seen["n"] += 1
        if seen["n"] == nth:
            raise Crash(call)

    sm = aws.sm
    if call == "write":
        real = htpasswd.write_file

        def write_then_crash(path, lines):
            real(path, lines)
            hook()

        monkeypatch.setattr(htpasswd, "write_file", write_then_crash)
    else:
        sm.meta.events.register(f"after-call.secretsmanager.{call}", hook)
    config = make_config(htpasswd=[reg.entry()])
    with pytest.raises(Crash):
        run.rotate_htpasswd(config, datetime.now(UTC) + timedelta(days=30), sm=sm)
    monkeypatch.undo()
    # the registry accepts the current or the pending password: nothing was lost
    candidates = [p for p in (password(aws, reg), password(aws, reg, "AWSPENDING")) if p]
    assert any(reg.status(p) == 200 for p in candidates)

    record = rotate(aws, reg)
    assert record["status"] in ("rotated", "current"), record
    new = password(aws, reg)
    assert new != reg.first and reg.status(new) == 200 and reg.status(reg.first) == 401
    assert password(aws, reg, "AWSPENDING") is None
    assert htpasswd.PREVIOUS not in reg.path.read_text()


# -- drift, dry run, config ------------------------------------------------------------------------
def test_line_changed_by_hand_is_drift_and_nothing_is_touched(aws, reg):
    reg.path.write_text(f"{reg.user}:" + bcrypt.hashpw(b"by-hand", bcrypt.gensalt(4)).decode() + "\n")
    before, stages = reg.path.read_text(), aws.stages(reg.secret_id)
    record = rotate(aws, reg)
    assert record["status"] == "error" and "matches neither" in record["error"]
    assert reg.path.read_text() == before and aws.stages(reg.secret_id) == stages


def test_dry_run_changes_nothing_and_plans_what_the_run_does(aws, reg):
    before, stages = reg.path.read_bytes(), aws.stages(reg.secret_id)
    planned = rotate(aws, reg, dry_run=True)
    assert planned["status"] == "planned"
    assert reg.path.read_bytes() == before and aws.stages(reg.secret_id) == stages
    done = rotate(aws, reg)
    assert [s["step"] for s in planned["steps"]] == [s["step"] for s in done["steps"]]


def test_registry_named_from_the_config_proves_through_its_connection(aws, reg):
    os.environ["AIRFLOW_CONN_OCI_ROT"] = reg.server.conn_json()
    registries = [{"name": "oci-rot", "kind": "oci", "conn_id": "oci_rot"}]
    entry = reg.entry(registry="oci-rot")
    del entry["url"]
    config = make_config(registries=registries, htpasswd=[entry])
    result = run.rotate_htpasswd(config, datetime.now(UTC) + timedelta(days=30), sm=aws.sm)
    assert result["accounts"][0]["status"] == "rotated"
    assert reg.status(password(aws, reg)) == 200

    bad = make_config(registries=registries, htpasswd=[{**entry, "registry": "layout"}])
    with pytest.raises(ConfigError, match="registry 'layout' is of kind 'ocilayout'"):
        run.rotate_htpasswd(bad, datetime.now(UTC), sm=aws.sm)


def test_missing_file_is_named(aws, reg, tmp_path):
    record = rotate(aws, reg, entry=reg.entry(path=str(tmp_path / "nope")))
    assert record["status"] == "error" and str(tmp_path / "nope") in record["error"]
