"""Access-key rotation end to end on moto (IAM, Secrets Manager, STS under IAM enforcement):
the full rotation and its grace, a crash after every API call that changes something followed
by a rerun that finishes, a user already at two keys, a new key that does not work, dry runs."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.registry_ops.rotation import keys, run
from include.registry_ops.rotation.common import RotationError

from .conftest import Aws, make_config, unique


def rotate(aws: Aws, account, now: datetime | None = None, clients=None, **kw: Any) -> dict[str, Any]:
    config = make_config([account], **kw.pop("rotation", {}))
    result = run.rotate_keys(config, now or datetime.now(UTC), clients=clients or aws.clients(), **kw)
    (record,) = result["accounts"]
    return record


def test_rotation_end_to_end_and_grace(aws):
    account = aws.service_account()
    old = aws.labelled(account.secret_id, "AWSCURRENT")
    t0 = datetime.now(UTC)

    record = rotate(aws, account, t0)

    assert record["status"] == "rotated", record
    new = aws.labelled(account.secret_id, "AWSCURRENT")
    assert new["AccessKeyId"] != old["AccessKeyId"] and new["UserName"] == account.user
    assert aws.labelled(account.secret_id, "AWSPREVIOUS") == old  # the old key stays readable
    assert aws.labelled(account.secret_id, "AWSPENDING") is None  # label taken off
    assert aws.keys(account.user) == {old["AccessKeyId"]: False, new["AccessKeyId"]: True}
    assert aws.works(account)
    assert [s["step"] for s in record["steps"]] == [
        "mark",
        "create",
        "unmark",
        "promote",
        "clear-pending-label",
        "deactivate",
    ]
    assert aws.tags(account.user) == {f"registry-ops:deactivated:{old['AccessKeyId']}": t0.isoformat()}
    (old_row,) = [k for k in record["keys"] if k["key"] == old["AccessKeyId"]]
    assert old_row["delete_after"] == (t0 + timedelta(days=7)).isoformat()

    # a rerun changes nothing: the new key is younger than min_age_days, the old one in its grace
    again = rotate(aws, account, t0 + timedelta(minutes=5))
    assert again["status"] == "current" and again["steps"] == []
    assert rotate(aws, account, t0 + timedelta(days=7) - timedelta(seconds=1))["steps"] == []
    assert old["AccessKeyId"] in aws.keys(account.user)

    after = rotate(aws, account, t0 + timedelta(days=7))
    assert [s["step"] for s in after["steps"]] == ["delete"] and after["status"] == "current"
    assert aws.keys(account.user) == {new["AccessKeyId"]: True}
    assert aws.tags(account.user) == {}
    assert aws.works(account)


def test_grace_days_configurable(aws):
    account = aws.service_account()
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    t0 = datetime.now(UTC)
    rotate(aws, account, t0, rotation={"grace_days": 2})
    assert rotate(aws, account, t0 + timedelta(days=1), rotation={"grace_days": 2})["steps"] == []
    assert old in aws.keys(account.user)
    rotate(aws, account, t0 + timedelta(days=2, seconds=1), rotation={"grace_days": 2})
    assert old not in aws.keys(account.user)


def test_young_key_not_rotated_unless_forced(aws):
    account = aws.service_account(age_days=3)
    before = aws.snapshot(account)
    assert rotate(aws, account)["status"] == "current"
    assert aws.snapshot(account) == before
    assert rotate(aws, account, force=True)["status"] == "rotated"
    assert aws.works(account)


# -- a crash after each step, then a rerun ---------------------------------------------------------
class Crash(BaseException):
    """The process dies right after AWS accepted the call (not an error the run could catch)."""


# every call that changes something, in the order a rotation (then its grace run) makes them
# (the grace run's calls are counted from its own start)
CALLS = [
    ("iam", "TagUser", 1, False),  # mark
    ("iam", "CreateAccessKey", 1, False),
    ("secretsmanager", "PutSecretValue", 1, False),  # AWSPENDING
    ("iam", "UntagUser", 1, False),  # unmark
    ("sts", "GetCallerIdentity", 2, False),  # the new key proven, not yet promoted
    ("secretsmanager", "UpdateSecretVersionStage", 1, False),  # promote
    ("secretsmanager", "UpdateSecretVersionStage", 2, False),  # AWSPENDING off
    ("iam", "TagUser", 2, False),  # deactivation time
    ("iam", "UpdateAccessKey", 1, False),  # deactivated
    ("iam", "DeleteAccessKey", 1, True),  # grace run: deleted
    ("iam", "UntagUser", 1, True),  # grace run: its tag
]


def crash_after(clients: keys.Clients, service: str, operation: str, nth: int) -> keys.Clients:
    seen = {"n": 0}

    def hook(**_: Any) -> None:
        seen["n"] += 1
        if seen["n"] == nth:
            raise Crash(f"crash after {operation} #{nth}")

    if service == "sts":  # the prover builds a client per call: count calls through it
        identity = clients.identity

        def proving(key_id, secret):
            arn = identity(key_id, secret)
            hook()
            return arn

        return keys.Clients(clients.iam, clients.sm, proving)
    client = clients.iam if service == "iam" else clients.sm
    client.meta.events.register(f"after-call.{service}.{operation}", hook)
    return clients


@pytest.mark.parametrize(
    ("service", "operation", "nth", "grace_run"),
    CALLS,
    ids=[f"{o}-{n}" + ("-grace" if g else "") for _, o, n, g in CALLS],
)
def test_crash_after_each_step_then_rerun_finishes(aws, service, operation, nth, grace_run):
    account = aws.service_account()
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    t0 = datetime.now(UTC)
    if grace_run:
        rotate(aws, account, t0)
    when = t0 + timedelta(days=8) if grace_run else t0

    with pytest.raises(Crash):
        rotate(aws, account, when, clients=crash_after(aws.clients(), service, operation, nth))
    assert aws.works(account), "the crash left the account without a working key"
    assert len(aws.keys(account.user)) <= 2

    record = rotate(aws, account, when)
    assert record["status"] in ("rotated", "current"), record
    new = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    assert new != old and aws.works(account)
    assert aws.labelled(account.secret_id, "AWSPENDING") is None
    assert "registry-ops:rotating" not in aws.tags(account.user)
    if grace_run:
        assert aws.keys(account.user) == {new: True} and aws.tags(account.user) == {}
    else:  # exactly the new key active and the old one inactive: the crashed key, if any, is gone
        assert aws.keys(account.user) == {old: False, new: True}
        rotate(aws, account, t0 + timedelta(days=8))
        assert aws.keys(account.user) == {new: True} and aws.tags(account.user) == {}
    assert aws.works(account)


def test_key_created_by_a_crashed_run_but_used_is_not_deleted(aws):
    """The crashed run's key is deleted only when IAM says nobody ever used it."""
    account = aws.service_account()
    with pytest.raises(Crash):
        rotate(aws, account, clients=crash_after(aws.clients(), "iam", "CreateAccessKey", 1))
    (orphan,) = [
        k for k in aws.keys(account.user) if k != aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    ]
    from moto.iam.models import AccessKeyLastUsed

    aws.backend_key(orphan).last_used = AccessKeyLastUsed(
        datetime.now(UTC).replace(tzinfo=None), "s3", "us-east-1"
    )
    record = rotate(aws, account)
    assert record["status"] == "error" and f"key {orphan} appeared" in record["error"]
    assert orphan in aws.keys(account.user) and aws.works(account)


# -- a user already at two keys --------------------------------------------------------------------
def test_two_keys_other_inactive_past_grace_is_deleted_first(aws):
    account = aws.service_account()
    other = aws.extra_key(account.user, active=False)["AccessKeyId"]
    long_ago = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    aws.iam.tag_user(
        UserName=account.user, Tags=[{"Key": f"registry-ops:deactivated:{other}", "Value": long_ago}]
    )
    record = rotate(aws, account)
    assert [s["step"] for s in record["steps"]][:2] == ["delete", "mark"] and record["status"] == "rotated"
    assert other not in aws.keys(account.user) and aws.works(account)


def test_two_keys_other_inactive_untagged_waits_its_grace(aws):
    account = aws.service_account()
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    other = aws.extra_key(account.user, active=False)["AccessKeyId"]
    t0 = datetime.now(UTC)
    record = rotate(aws, account, t0)
    assert record["status"] == "waiting" and [s["step"] for s in record["steps"]] == ["mark-deactivated"]
    assert (
        other in record["detail"] and (t0 + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M") in record["detail"]
    )
    assert aws.keys(account.user) == {old: True, other: False}
    assert rotate(aws, account, t0 + timedelta(days=3))["status"] == "waiting"
    done = rotate(aws, account, t0 + timedelta(days=7, seconds=1))
    assert done["status"] == "rotated" and other not in aws.keys(account.user) and aws.works(account)


def test_two_keys_other_active_deactivated_once_current_is_proven(aws):
    account = aws.service_account()
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    other = aws.extra_key(account.user, active=True)["AccessKeyId"]
    record = rotate(aws, account)
    assert record["status"] == "waiting" and [s["step"] for s in record["steps"]] == ["deactivate"]
    assert aws.keys(account.user) == {old: True, other: False}


def test_two_keys_current_broken_touches_nothing(aws):
    """The secret's current key does not work (wrong secret): the other active key may be what
    keeps CI alive, so nothing is deactivated, created or deleted."""
    account = aws.service_account()
    doc = aws.labelled(account.secret_id, "AWSCURRENT")
    aws.sm.put_secret_value(
        SecretId=account.secret_id, SecretString=json.dumps({**doc, "SecretAccessKey": "x" * 40})
    )
    aws.extra_key(account.user, active=True)
    before = aws.snapshot(account)
    record = rotate(aws, account)
    assert (
        record["status"] == "error" and "does not work" in record["error"] and "two keys" in record["error"]
    )
    assert aws.snapshot(account) == before


def test_current_broken_one_key_is_repaired(aws):
    """The secret's key was deleted from IAM: with room for a key, a new one is made and proven."""
    account = aws.service_account()
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    aws.iam.delete_access_key(UserName=account.user, AccessKeyId=old)
    record = rotate(aws, account)
    assert record["status"] == "rotated" and aws.works(account)


# -- a new key that does not work -------------------------------------------------------------------
def test_pending_key_that_does_not_work_is_not_promoted(aws):
    account = aws.service_account()
    current = aws.labelled(account.secret_id, "AWSCURRENT")
    bad = aws.iam.create_access_key(UserName=account.user)["AccessKey"]
    wrong = {"UserName": account.user, "AccessKeyId": bad["AccessKeyId"], "SecretAccessKey": "y" * 40}
    aws.sm.put_secret_value(
        SecretId=account.secret_id, SecretString=json.dumps(wrong), VersionStages=["AWSPENDING"]
    )

    record = rotate(aws, account, rotation={"verify_timeout_seconds": 1})

    assert record["status"] == "error"
    assert f"the new key {bad['AccessKeyId']} does not work" in record["error"]
    assert aws.labelled(account.secret_id, "AWSCURRENT") == current
    assert aws.labelled(account.secret_id, "AWSPENDING") == wrong
    assert aws.keys(account.user) == {current["AccessKeyId"]: True, bad["AccessKeyId"]: True}
    assert "y" * 40 not in json.dumps(record)
    # deleting the bad key lets the next run drop the pending version and rotate afresh
    aws.iam.delete_access_key(UserName=account.user, AccessKeyId=bad["AccessKeyId"])
    record = rotate(aws, account)
    assert record["steps"][0]["step"] == "drop-pending" and record["status"] == "rotated"
    assert aws.works(account)


# -- dry run and bad input -------------------------------------------------------------------------
def test_dry_run_changes_nothing_and_plans_what_the_run_does(aws):
    account = aws.service_account()
    before = aws.snapshot(account)
    planned = rotate(aws, account, dry_run=True)
    assert planned["status"] == "planned"
    assert aws.snapshot(account) == before
    done = rotate(aws, account)
    assert [s["step"] for s in planned["steps"]] == [s["step"] for s in done["steps"]]


def test_other_accounts_go_on_after_one_fails(aws):
    good = aws.service_account()
    missing = type(good)(user=unique("ghost"), secret_id="ci/nothing-here")
    result = run.rotate_keys(make_config([missing, good]), datetime.now(UTC), clients=aws.clients())
    statuses = {a["user"]: a["status"] for a in result["accounts"]}
    assert statuses == {missing.user: "error", good.user: "rotated"} and result["summary"]["errors"] == 1
    assert f"IAM user {missing.user!r} does not exist" in result["accounts"][0]["error"]


def test_unknown_user_filter_is_an_error(aws):
    account = aws.service_account()
    with pytest.raises(ValueError, match=r"--user: 'nobody' is not in rotation\.service_accounts"):
        run.rotate_keys(make_config([account]), datetime.now(UTC), users=["nobody"], clients=aws.clients())


def test_secret_that_is_not_json_is_named(aws):
    account = aws.service_account()
    aws.sm.put_secret_value(SecretId=account.secret_id, SecretString="AKIA... not json")
    record = rotate(aws, account)
    assert record["status"] == "error"
    assert (
        f"secret {account.secret_id!r} version" in record["error"] and "not a JSON object" in record["error"]
    )
    assert "not json" not in record["error"]


# -- the steps hold the rules themselves, whatever the plan says ---------------------------------
def _ctx(aws: Aws, account, now: datetime | None = None) -> keys.Context:
    return keys.Context(aws.clients(), account, now or datetime.now(UTC), 1, lambda _: None)


def test_a_step_refuses_to_break_a_rule_the_plan_would_never_ask_for(aws):
    account = aws.service_account()
    other = aws.extra_key(account.user, active=True)["AccessKeyId"]
    ctx = _ctx(aws, account)
    state = keys.read_state(ctx.clients, account, ctx.on_secret)
    current = state.current
    before = aws.snapshot(account)
    for action in (
        keys.Action("deactivate", current),  # the key the secret hands out
        keys.Action("delete", current),
        keys.Action("delete", other),  # active
    ):
        with pytest.raises(RotationError, match="refusing to"):
            keys.execute(ctx, state, action)
    broken = dataclasses.replace(state, current_works=False)  # the current key not proven
    with pytest.raises(RotationError, match="the current key is not proven"):
        keys.execute(ctx, broken, keys.Action("deactivate", other))
    assert aws.snapshot(account) == before


def test_a_key_answering_as_someone_else_does_not_prove_itself():
    from include.registry_ops.rotation.common import Secret
    from include.registry_ops.rotation.verify import key_works

    def identity(key_id, secret):
        return "arn:aws:iam::123456789012:user/someone-else"

    works, why = key_works(identity, "AKIAEXAMPLE", Secret("s" * 40), "arn:aws:iam::123456789012:user/ci", 0)
    assert not works and "someone-else" in why


def test_crash_while_repairing_keeps_the_key_that_was_there(aws):
    """The secret's key was deleted; the user's other key X is not in the secret. A crash right
    after the new key is created: the rerun deletes only the key the crashed run made (X was in
    the rotating tag's list), proves and promotes a new one, then deactivates X."""
    account = aws.service_account()
    current = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    other = aws.extra_key(account.user, active=True)["AccessKeyId"]
    aws.iam.delete_access_key(UserName=account.user, AccessKeyId=current)
    with pytest.raises(Crash):
        rotate(aws, account, clients=crash_after(aws.clients(), "iam", "CreateAccessKey", 1))
    assert len(aws.keys(account.user)) == 2 and other in aws.keys(account.user)
    record = rotate(aws, account)
    steps = [s["step"] for s in record["steps"]]
    assert steps[0] == "delete-orphan" and record["steps"][0]["target"] != other
    new = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    assert aws.keys(account.user) == {new: True, other: False} and aws.works(account)


def test_pending_key_made_inactive_is_dropped_never_promoted(aws):
    """Someone deactivated the pending key (a leak during the rotation): its version loses
    AWSPENDING, and AWSCURRENT never points at the inactive key (a new key is made once that
    key, now at two keys with the current one, is past its grace)."""
    account = aws.service_account()
    with pytest.raises(Crash):  # stop right after AWSPENDING is stored
        rotate(aws, account, clients=crash_after(aws.clients(), "secretsmanager", "PutSecretValue", 1))
    pending = aws.labelled(account.secret_id, "AWSPENDING")["AccessKeyId"]
    aws.iam.update_access_key(UserName=account.user, AccessKeyId=pending, Status="Inactive")
    record = rotate(aws, account)
    assert "drop-pending" in [s["step"] for s in record["steps"]]
    assert aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"] != pending
    assert aws.works(account)
