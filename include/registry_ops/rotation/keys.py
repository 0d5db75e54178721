"""Rotating a CI service account's IAM access key kept in a Secrets Manager secret.

The steps, as Secrets Manager's own rotation names them: create a key and store it as a new
version labelled AWSPENDING; prove it (``GetCallerIdentity`` with it); promote it to
AWSCURRENT (the old version becomes AWSPREVIOUS); deactivate the old key; delete it once it has
been inactive ``grace_days``.

Nothing is remembered between steps: before each one the state is read back from IAM (the
user's keys and the ``registry-ops:`` tags on the user) and Secrets Manager (the labels and the
key id each labelled version holds), and :func:`plan` picks the next step from it alone. A run
that crashed anywhere is therefore finished by running again. Safety rules, each enforced by
:func:`plan` or the step itself:

- the key in AWSCURRENT is never deactivated or deleted, and AWSCURRENT only moves to a key
  proven to work for the user: the account always has a working key handed out;
- another key is deactivated only once the AWSCURRENT key has been proven to work, and
  deleted only after it has been inactive ``grace_days`` (the time it was deactivated is the
  user tag ``registry-ops:deactivated:<key id>``; a key found inactive without one starts its
  grace when found);
- a user at two keys (IAM's limit) gets no third: the key that is not in AWSCURRENT goes
  first, by the rules above (deactivated once the current key is proven, deleted after its
  grace), and the rotation waits until then;
- IAM hands a new key's secret out once. Before creating it the user is tagged
  ``registry-ops:rotating`` with the ids of the keys it has; a key absent from that list and
  from the secret, found while the tag is there, is one a crashed run created and never
  stored: nobody can hold its secret, so it is deleted (unless IAM says it was ever used).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from . import staging
from .common import OnSecret, RotationError, Secret, Step
from .settings import ServiceAccount
from .verify import Identity, key_works

log = logging.getLogger(__name__)

TAG = "registry-ops:"
MARKER = TAG + "rotating"
DEACTIVATED = TAG + "deactivated:"
NEW_KEY = "<new key>"  # a dry run's stand-in for the id IAM would give


@dataclass(frozen=True)
class Key:
    id: str
    active: bool
    created: datetime


@dataclass(frozen=True)
class KeyState:
    """Everything a step is decided from, read back from IAM and Secrets Manager."""

    user: str
    arn: str
    secret_id: str
    keys: dict[str, Key]
    tags: dict[str, str]  # the user's registry-ops: tags
    versions: staging.Versions
    current: str | None  # the key id AWSCURRENT holds
    pending: str | None  # the key id AWSPENDING holds (a version other than the current one)
    current_works: bool  # GetCallerIdentity with the AWSCURRENT key answered as the user

    @property
    def marker(self) -> frozenset[str] | None:
        value = self.tags.get(MARKER)
        return None if value is None else frozenset(v for v in value.split() if v != "-")

    def deactivated_at(self, key_id: str) -> datetime | None:
        value = self.tags.get(DEACTIVATED + key_id)
        try:
            return datetime.fromisoformat(value) if value else None
        except ValueError:
            return None

    def current_ok(self) -> bool:
        key = self.keys.get(self.current or "")
        return bool(key and key.active and self.current_works)


@dataclass(frozen=True)
class Action:
    step: str
    key: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Settled:
    """No step left for now: ``waiting`` (rotation deferred) or ``current``."""

    status: str
    detail: str = ""


def _grace_end(state: KeyState, key_id: str, grace: timedelta) -> datetime | None:
    when = state.deactivated_at(key_id)
    return None if when is None else when + grace


def plan(state: KeyState, now: datetime, grace: timedelta, want: bool) -> Action | Settled:
    """The next step, from the state alone (see the module docstring for the rules)."""
    if state.versions.pending_on_current:
        return Action("clear-pending-label", state.current, "AWSPENDING still on the current version")
    keep = {k for k in (state.current, state.pending) if k}
    marker = state.marker
    if marker is not None:
        orphans = sorted(k for k in state.keys if k not in marker and k not in keep)
        if orphans:
            return Action("delete-orphan", orphans[0], "created by a run that crashed before storing it")
        if state.pending:
            return Action("unmark", None, "the new key is stored")
    if state.pending:
        key = state.keys.get(state.pending)
        if key is None or not key.active:
            why = "deleted" if key is None else "inactive"
            return Action("drop-pending", state.pending, f"the pending key is {why} in IAM")
        return Action("promote", state.pending, "prove the pending key, then make it AWSCURRENT")
    others = sorted(k for k in state.keys if k != state.current)
    if state.current_ok():
        for k in others:
            if state.keys[k].active:
                return Action("deactivate", k, f"not the secret's current key ({state.current})")
    for k in others:
        if not state.keys[k].active and state.deactivated_at(k) is None:
            return Action("mark-deactivated", k, "found inactive: its grace starts now")
    for k in others:
        end = _grace_end(state, k, grace)
        if not state.keys[k].active and end is not None and end <= now:
            return Action("delete", k, f"inactive since {state.deactivated_at(k):%Y-%m-%dT%H:%M:%SZ}")
    for tag in sorted(state.tags):
        if tag.startswith(DEACTIVATED) and tag[len(DEACTIVATED) :] not in state.keys:
            return Action("untag", tag[len(DEACTIVATED) :], "the key no longer exists")
    if not state.current_ok():
        want = True  # the secret does not hand out a working key: a new one repairs it
    if want:
        if len(state.keys) >= 2:
            if not state.current_ok():
                raise RotationError(
                    f"user {state.user}: secret {state.secret_id!r} holds key {state.current}, which "
                    f"{_why_not(state)}, and the user is at two keys ({', '.join(sorted(state.keys))}): "
                    "no key is touched; see docs/runbooks/revoke-leaked-key.md"
                )
            ends = [e for k in others if (e := _grace_end(state, k, grace))]
            until = f" until {min(ends):%Y-%m-%dT%H:%M:%SZ}" if ends else ""
            return Settled("waiting", f"at two keys: {', '.join(others)} inactive, in its grace{until}")
        if marker is None:
            return Action("mark", None, "record the keys the user has before creating one")
        return Action("create", None, "create a key and store it as AWSPENDING")
    if marker is not None:
        return Action("unmark", None, "nothing to create")
    return Settled("current", "")


def _why_not(state: KeyState) -> str:
    key = state.keys.get(state.current or "")
    if key is None:
        return "does not exist in IAM"
    if not key.active:
        return "is inactive"
    return "does not work"


def simulate(state: KeyState, action: Action, now: datetime) -> KeyState:
    """The state ``action`` would leave (a dry run plans every step without taking any)."""
    keys, tags = dict(state.keys), dict(state.tags)
    stages = {v: tuple(labels) for v, labels in state.versions.stages.items()}
    change: dict[str, Any] = {}
    k = action.key or ""
    if action.step == "clear-pending-label":
        stages = {v: tuple(x for x in labels if x != staging.PENDING) for v, labels in stages.items()}
    elif action.step in ("delete-orphan", "delete"):
        keys.pop(k, None)
    elif action.step in ("unmark", "mark"):
        tags.pop(MARKER, None)
        if action.step == "mark":
            tags[MARKER] = " ".join(sorted(keys)) or "-"
    elif action.step == "drop-pending":
        stages = {v: tuple(x for x in labels if x != staging.PENDING) for v, labels in stages.items()}
        change["pending"] = None
    elif action.step == "promote":
        pend = state.versions.pending or ""
        stages = {v: tuple(x for x in labels if x != staging.CURRENT) for v, labels in stages.items()}
        stages[pend] = (*stages.get(pend, ()), staging.CURRENT)
        change.update(current=state.pending, pending=None, current_works=True)
    elif action.step in ("deactivate", "mark-deactivated"):
        keys[k] = dataclasses.replace(keys[k], active=False)
        tags[DEACTIVATED + k] = now.isoformat()
    elif action.step == "untag":
        tags.pop(DEACTIVATED + k, None)
    elif action.step == "create":
        keys[NEW_KEY] = Key(NEW_KEY, True, now)
        stages["<new version>"] = (staging.PENDING,)
        change["pending"] = NEW_KEY
    versions = staging.Versions(state.versions.secret_id, stages)
    return dataclasses.replace(state, keys=keys, tags=tags, versions=versions, **change)


# -- reading the state ---------------------------------------------------------------------------
def _iam(call: Callable[..., Any], what: str, **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") == "NoSuchEntity" and "UserName" in kwargs:
            raise RotationError(f"IAM user {kwargs['UserName']!r} does not exist") from None
        raise RotationError(f"{what} failed ({err.get('Code')}: {err.get('Message')})") from None


def _tags(iam: Any, user: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    kwargs: dict[str, Any] = {"UserName": user}
    while True:
        page = _iam(iam.list_user_tags, "iam:ListUserTags", **kwargs)
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", []) if t["Key"].startswith(TAG)})
        if not page.get("IsTruncated"):
            return tags
        kwargs["Marker"] = page["Marker"]


@dataclass
class Clients:
    iam: Any
    sm: Any
    identity: Identity  # GetCallerIdentity with a given key (verify.sts_identity)


def _key_in(clients: Clients, secret_id: str, version_id: str, on_secret: OnSecret) -> tuple[str, Secret]:
    doc = staging.read_document(clients.sm, secret_id, version_id)
    key_id = staging.field(doc, "AccessKeyId", secret_id, version_id)
    return key_id, staging.secret_field(doc, "SecretAccessKey", secret_id, version_id, on_secret)


def read_state(clients: Clients, account: ServiceAccount, on_secret: OnSecret) -> KeyState:
    user = account.user
    arn = _iam(clients.iam.get_user, "iam:GetUser", UserName=user)["User"]["Arn"]
    listed = _iam(clients.iam.list_access_keys, "iam:ListAccessKeys", UserName=user)["AccessKeyMetadata"]
    keys = {k["AccessKeyId"]: Key(k["AccessKeyId"], k["Status"] == "Active", k["CreateDate"]) for k in listed}
    versions = staging.read_versions(clients.sm, account.secret_id)
    assert versions.current is not None  # read_versions refuses a secret without one
    current, secret = _key_in(clients, account.secret_id, versions.current, on_secret)
    pending = None
    if versions.pending:
        pending, _ = _key_in(clients, account.secret_id, versions.pending, on_secret)
    works = False
    if current in keys and keys[current].active:
        works, why = key_works(clients.identity, current, secret, arn, timeout=0)
        if not works:
            log.warning("rotate %s: the secret's current key %s does not work: %s", user, current, why)
    return KeyState(
        user=user,
        arn=arn,
        secret_id=account.secret_id,
        keys=keys,
        tags=_tags(clients.iam, user),
        versions=versions,
        current=current,
        pending=pending,
        current_works=works,
    )


# -- taking a step -------------------------------------------------------------------------------
@dataclass
class Context:
    clients: Clients
    account: ServiceAccount
    now: datetime
    verify_timeout: float
    on_secret: OnSecret
    sleep: Callable[[float], None] = time.sleep


def execute(ctx: Context, state: KeyState, action: Action) -> str:
    """Take one step; returns what was done, for the record (key ids, never a secret)."""
    iam, sm, user, secret_id = ctx.clients.iam, ctx.clients.sm, state.user, state.secret_id
    k = action.key or ""
    step = action.step
    if step == "clear-pending-label":
        staging.clear_pending(sm, secret_id, state.versions.current or "")
        return "AWSPENDING taken off the current version"
    if step == "delete-orphan":
        used = iam.get_access_key_last_used(AccessKeyId=k).get("AccessKeyLastUsed", {}).get("LastUsedDate")
        if used:
            raise RotationError(
                f"user {user}: key {k} appeared while a rotation was creating one but IAM says it was "
                f"used ({used:%Y-%m-%d}): not deleted; delete it or untag {MARKER} by hand"
            )
        iam.delete_access_key(UserName=user, AccessKeyId=k)
        return f"deleted {k} (its secret was never stored)"
    if step == "mark":
        value = " ".join(sorted(state.keys)) or "-"
        iam.tag_user(UserName=user, Tags=[{"Key": MARKER, "Value": value}])
        return "tagged"
    if step == "unmark":
        iam.untag_user(UserName=user, TagKeys=[MARKER])
        return "untagged"
    if step == "create":
        return _create(ctx, state)
    if step == "drop-pending":
        staging.clear_pending(sm, secret_id, state.versions.pending or "")
        return f"AWSPENDING taken off the version holding {k}"
    if step == "promote":
        return _promote(ctx, state, k)
    if step == "deactivate":
        if k == state.current or not state.current_ok():  # plan's rule, held here too
            raise RotationError(f"user {user}: refusing to deactivate {k}: the current key is not proven")
        iam.tag_user(UserName=user, Tags=[{"Key": DEACTIVATED + k, "Value": ctx.now.isoformat()}])
        iam.update_access_key(UserName=user, AccessKeyId=k, Status="Inactive")
        return f"deactivated {k}"
    if step == "mark-deactivated":
        iam.tag_user(UserName=user, Tags=[{"Key": DEACTIVATED + k, "Value": ctx.now.isoformat()}])
        return f"grace of {k} starts now"
    if step == "delete":
        if k in (state.current, state.pending) or state.keys[k].active:
            raise RotationError(f"user {user}: refusing to delete {k}: current, pending or active")
        iam.delete_access_key(UserName=user, AccessKeyId=k)
        iam.untag_user(UserName=user, TagKeys=[DEACTIVATED + k])
        return f"deleted {k}"
    if step == "untag":
        iam.untag_user(UserName=user, TagKeys=[DEACTIVATED + k])
        return "untagged"
    raise AssertionError(step)


def _create(ctx: Context, state: KeyState) -> str:
    try:
        created = ctx.clients.iam.create_access_key(UserName=state.user)["AccessKey"]
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise RotationError(
            f"user {state.user}: CreateAccessKey failed ({err.get('Code')}: {err.get('Message')})"
        ) from None
    key_id, secret = created["AccessKeyId"], created["SecretAccessKey"]
    ctx.on_secret(secret)
    del created
    document = {"UserName": state.user, "AccessKeyId": key_id, "SecretAccessKey": secret}
    version = staging.put_pending(ctx.clients.sm, state.secret_id, document)
    return f"created {key_id}, stored as AWSPENDING version {version}"


def _promote(ctx: Context, state: KeyState, key_id: str) -> str:
    pending_version = state.versions.pending or ""
    stored, secret = _key_in(ctx.clients, state.secret_id, pending_version, ctx.on_secret)
    if stored != key_id:  # the secret changed under us: decide again from a fresh read
        raise RotationError(f"user {state.user}: AWSPENDING changed from {key_id} to {stored} meanwhile")
    works, why = key_works(ctx.clients.identity, key_id, secret, state.arn, ctx.verify_timeout, ctx.sleep)
    if not works:
        raise RotationError(
            f"user {state.user}: the new key {key_id} does not work after {ctx.verify_timeout:.0f}s ({why}): "
            f"it stays AWSPENDING and AWSCURRENT keeps {state.current}; the next run proves it again "
            "(delete the key to have a fresh one made)"
        )
    staging.promote(ctx.clients.sm, state.versions, pending_version)
    return f"proven and promoted {key_id} to AWSCURRENT ({state.current} is AWSPREVIOUS)"


# -- one account ---------------------------------------------------------------------------------
MAX_STEPS = 25


def rotate_account(
    ctx: Context, grace: timedelta, min_age: timedelta, force: bool, dry_run: bool
) -> dict[str, Any]:
    """Steps until settled; the record of the account (ids, labels, steps, status)."""
    steps: list[Step] = []
    state = read_state(ctx.clients, ctx.account, ctx.on_secret)
    rotated = False
    for _ in range(MAX_STEPS):
        key = state.keys.get(state.current or "")
        old_enough = key is None or ctx.now - key.created >= min_age
        want = not rotated and (force or old_enough)  # one new key per run
        outcome = plan(state, ctx.now, grace, want)
        if isinstance(outcome, Settled):
            status = "planned" if dry_run and steps else ("rotated" if rotated else outcome.status)
            return _record(state, steps, status, outcome.detail, grace)
        rotated = rotated or outcome.step == "promote"
        if dry_run:
            steps.append(Step(outcome.step, outcome.key, outcome.detail + " (dry run: not taken)"))
            state = simulate(state, outcome, ctx.now)
            continue
        done = execute(ctx, state, outcome)
        log.info("rotate %s: %s: %s", state.user, outcome.step, done)
        steps.append(Step(outcome.step, outcome.key, done))
        state = read_state(ctx.clients, ctx.account, ctx.on_secret)
    taken = [s.step for s in steps]
    raise RotationError(f"user {state.user}: no settled state after {MAX_STEPS} steps: {taken}")


def _record(state: KeyState, steps: list[Step], status: str, detail: str, grace: timedelta) -> dict[str, Any]:
    keys = []
    for k in sorted(state.keys):
        end = _grace_end(state, k, grace) if not state.keys[k].active else None
        keys.append(
            {
                "key": k,
                "active": state.keys[k].active,
                "created": state.keys[k].created.isoformat(),
                "role": "current" if k == state.current else ("pending" if k == state.pending else "old"),
                "delete_after": end.isoformat() if end else None,
            }
        )
    return {
        "user": state.user,
        "secret_id": state.secret_id,
        "status": status,
        "detail": detail,
        "current_key": state.current,
        "keys": keys,
        "steps": [s.as_dict() for s in steps],
        "error": None,
    }
