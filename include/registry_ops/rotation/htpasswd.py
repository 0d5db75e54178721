"""Rotating the password of a basic-auth user of an OCI registry that reads an htpasswd file
this deployment owns (the CNCF distribution registry: bcrypt lines only, reread when the
file's modification time changes, one password per user: the last line naming the user wins).

The password lives in a Secrets Manager secret (a JSON document with a ``password`` field;
every other field is kept, so the secret can be the registry's Airflow connection as the
Amazon provider's ``SecretsManagerBackend`` reads it: a new version is all Airflow needs).
The steps mirror the key rotation's labels:

1. ``store-pending``: a new random password (256 bits) as a new version labelled AWSPENDING;
2. ``write-new-line``: the file rewritten atomically (a temporary file in the same directory,
   fsync, rename) with the user's line hashing the new password, and the old line kept right
   above it as ``#registry-ops:previous <user>:<hash>`` (a comment: the registry ignores it);
3. ``promote``: an authenticated ``GET /v2/`` with the new password must answer 200; then
   AWSCURRENT moves to the new version. If the registry refuses it, the old line is put back,
   AWSPENDING taken off, and the run fails: the old password keeps working;
4. ``clear-pending-label``, then ``remove-previous``: once the current password is proven by a
   request again, the kept old line is removed.

Between steps 2 and 3 the registry accepts only the new password while AWSCURRENT still hands
out the old one (one user has one password): the run takes step 3 at once, and a consumer that
gets a 401 then rereads the secret. Each step is chosen from the file and the labels read back
under a lock, so a crashed run is finished by the next. A line that matches neither the current
nor the pending password is drift: nothing is touched and the run says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt

from . import staging
from .common import OnSecret, RotationError, Secret, Step
from .settings import HtpasswdAccount
from .verify import basic_auth_works

log = logging.getLogger(__name__)

PREVIOUS = "#registry-ops:previous "


# -- the file ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HtFile:
    path: Path
    lines: tuple[str, ...]

    def _user_of(self, line: str) -> str | None:
        text = line.strip()
        if not text or text.startswith("#") or ":" not in text:
            return None
        return text.split(":", 1)[0]

    def effective(self, user: str) -> int | None:
        """Index of the line the registry uses for ``user`` (the last one naming it)."""
        found = [i for i, line in enumerate(self.lines) if self._user_of(line) == user]
        return found[-1] if found else None

    def previous(self, user: str) -> int | None:
        found = [i for i, line in enumerate(self.lines) if line.startswith(f"{PREVIOUS}{user}:")]
        return found[-1] if found else None

    def hash_at(self, index: int) -> str:
        line = self.lines[index].strip()
        if line.startswith(PREVIOUS):
            line = line[len(PREVIOUS) :]
        return line.split(":", 1)[1]


def read_file(path: Path) -> HtFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RotationError(f"{path}: cannot read the htpasswd file ({exc.strerror or exc})") from None
    return HtFile(path, tuple(text.splitlines()))


def write_file(path: Path, lines: list[str]) -> None:
    """Replace ``path`` atomically, keeping its mode (and owner, where allowed)."""
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One rotation of a file at a time (a lock file next to it)."""
    lock = path.with_name(path.name + ".registry-ops.lock")
    with open(lock, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RotationError(f"{path}: another rotation holds {lock}") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _matches(password: Secret, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.reveal().encode(), hashed.encode())
    except ValueError:  # not a bcrypt hash
        return False


# -- the state -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HtState:
    """What a step is decided from (no secret in it)."""

    user: str
    path: str
    secret_id: str
    versions: staging.Versions
    effective: str | None  # which password the user's line hashes: "current", "pending", "other"
    previous: bool  # the old line is kept as a #registry-ops:previous comment
    current_created: datetime | None


@dataclass(frozen=True)
class Passwords:
    current: Secret
    pending: Secret | None
    document: dict[str, Any]  # the current version's document without its password


def _document(sm: Any, entry: HtpasswdAccount, version: str, on_secret: OnSecret) -> tuple[dict, Secret]:
    doc = staging.read_document(sm, entry.secret_id, version)
    password = staging.secret_field(doc, "password", entry.secret_id, version, on_secret)
    for name in ("login", "username", "user"):
        if name in doc and doc[name] != entry.user:
            raise RotationError(
                f"secret {entry.secret_id!r} version {version}: field {name!r} names another user "
                f"than {entry.user!r}"
            )
    return {k: v for k, v in doc.items() if k != "password"}, password


def read_state(sm: Any, entry: HtpasswdAccount, on_secret: OnSecret) -> tuple[HtState, Passwords, HtFile]:
    versions = staging.read_versions(sm, entry.secret_id)
    assert versions.current is not None
    document, current = _document(sm, entry, versions.current, on_secret)
    pending = _document(sm, entry, versions.pending, on_secret)[1] if versions.pending else None
    file = read_file(Path(entry.path))
    index = file.effective(entry.user)
    effective = None
    if index is not None:
        hashed = file.hash_at(index)
        effective = "current" if _matches(current, hashed) else None
        if effective is None and pending is not None and _matches(pending, hashed):
            effective = "pending"
        effective = effective or "other"
    state = HtState(
        user=entry.user,
        path=entry.path,
        secret_id=entry.secret_id,
        versions=versions,
        effective=effective,
        previous=file.previous(entry.user) is not None,
        current_created=staging.created(sm, entry.secret_id, versions.current),
    )
    return state, Passwords(current, pending, document), file


# -- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    step: str
    detail: str = ""


def plan(state: HtState, want: bool) -> Action | None:
    """The next step, or None when settled."""
    if state.versions.pending_on_current:
        return Action("clear-pending-label", "AWSPENDING still on the current version")
    if state.effective is None:
        raise RotationError(f"{state.path}: no line for user {state.user!r}")
    if state.versions.pending:
        if state.effective == "pending":
            return Action("promote", "prove the new password with the registry, then make it AWSCURRENT")
        if state.effective == "current":
            return Action("write-new-line", "hash the pending password in, keep the old line as a comment")
    if state.effective != "current":
        raise RotationError(
            f"{state.path}: the line of {state.user!r} matches neither the AWSCURRENT nor the AWSPENDING "
            f"password of secret {state.secret_id!r} (changed by hand?): nothing touched; see "
            "docs/runbooks/rotate-registry-credentials.md"
        )
    if state.previous:
        return Action("remove-previous", "the current password is proven: drop the kept old line")
    if want:
        return Action("store-pending", "a new random password as AWSPENDING")
    return None


def simulate(state: HtState, action: Action) -> HtState:
    stages = dict(state.versions.stages)
    change: dict[str, Any] = {}
    if action.step == "store-pending":
        stages["<new version>"] = (staging.PENDING,)
    elif action.step == "write-new-line":
        change.update(effective="pending", previous=True)
    elif action.step == "promote":
        pend = state.versions.pending or ""
        stages = {v: tuple(x for x in labels if x != staging.CURRENT) for v, labels in stages.items()}
        stages[pend] = (*stages[pend], staging.CURRENT)
        change["effective"] = "current"
    elif action.step == "clear-pending-label":
        stages = {v: tuple(x for x in labels if x != staging.PENDING) for v, labels in stages.items()}
    elif action.step == "remove-previous":
        change["previous"] = False
    versions = staging.Versions(state.versions.secret_id, stages)
    return dataclasses.replace(state, versions=versions, **change)


# -- the steps -----------------------------------------------------------------------------------
@dataclass
class Context:
    sm: Any
    entry: HtpasswdAccount
    url: str
    verify_tls: bool | str
    rounds: int
    verify_timeout: float
    on_secret: OnSecret
    sleep: Callable[[float], None] = time.sleep


def _edit(file: HtFile, changes: dict[int | None, list[str]]) -> list[str]:
    """The file's lines with line ``i`` replaced by ``changes[i]`` (``[]`` drops it)."""
    out: list[str] = []
    for i, line in enumerate(file.lines):
        out.extend(changes.get(i, [line]))
    return out


def execute(ctx: Context, state: HtState, passwords: Passwords, file: HtFile, action: Action) -> str:
    entry, user = ctx.entry, ctx.entry.user
    if action.step == "clear-pending-label":
        staging.clear_pending(ctx.sm, entry.secret_id, state.versions.current or "")
        return "AWSPENDING taken off the current version"
    if action.step == "store-pending":
        new = secrets.token_urlsafe(32)
        ctx.on_secret(new)
        version = staging.put_pending(ctx.sm, entry.secret_id, {**passwords.document, "password": new})
        return f"new password stored as AWSPENDING version {version}"
    if action.step == "write-new-line":
        assert passwords.pending is not None
        index = file.effective(user)
        assert index is not None
        hashed = bcrypt.hashpw(passwords.pending.reveal().encode(), bcrypt.gensalt(ctx.rounds)).decode()
        kept = [f"{PREVIOUS}{user}:{file.hash_at(index)}", f"{user}:{hashed}"]
        write_file(file.path, _edit(file, {index: kept, file.previous(user): []}))  # one old line kept
        return "new line written, old line kept as a comment"
    if action.step == "promote":
        return _promote(ctx, state, passwords, file)
    if action.step == "remove-previous":
        works, why = basic_auth_works(
            ctx.url, user, passwords.current, ctx.verify_timeout, ctx.verify_tls, ctx.sleep
        )
        if not works:
            raise RotationError(
                f"{file.path}: the current password of {user!r} does not work ({why}): the old line "
                f"stays as {PREVIOUS.strip()} (restore it by hand if it is the one to keep)"
            )
        write_file(file.path, _edit(file, {file.previous(user): []}))
        return "old line removed"
    raise AssertionError(action.step)


def _promote(ctx: Context, state: HtState, passwords: Passwords, file: HtFile) -> str:
    assert passwords.pending is not None
    user = ctx.entry.user
    works, why = basic_auth_works(
        ctx.url, user, passwords.pending, ctx.verify_timeout, ctx.verify_tls, ctx.sleep
    )
    if works:
        staging.promote(ctx.sm, state.versions, state.versions.pending or "")
        return "new password proven with the registry and promoted to AWSCURRENT"
    rolled = "no kept old line to put back"
    old = file.previous(user)
    index = file.effective(user)
    if old is not None and index is not None:
        write_file(file.path, _edit(file, {index: [f"{user}:{file.hash_at(old)}"], old: []}))
        rolled = "the old line is back"
    staging.clear_pending(ctx.sm, state.secret_id, state.versions.pending or "")
    raise RotationError(
        f"{file.path}: the registry at {ctx.url} refuses the new password of {user!r} ({why}): {rolled}, "
        "AWSPENDING taken off, AWSCURRENT unchanged"
    )


# -- one user ------------------------------------------------------------------------------------
MAX_STEPS = 12


def rotate_user(
    ctx: Context, now: datetime, min_age: timedelta, force: bool, dry_run: bool
) -> dict[str, Any]:
    steps: list[Step] = []
    rotated = False
    path = Path(ctx.entry.path)
    with locked(path):
        state, passwords, file = read_state(ctx.sm, ctx.entry, ctx.on_secret)
        for _ in range(MAX_STEPS):
            created = state.current_created
            old_enough = created is None or now - created >= min_age
            action = plan(state, not rotated and (force or old_enough))
            if action is None:
                status = "planned" if dry_run and steps else ("rotated" if rotated else "current")
                return _record(state, steps, status)
            rotated = rotated or action.step == "promote"
            if dry_run:
                steps.append(Step(action.step, state.user, action.detail + " (dry run: not taken)"))
                state = simulate(state, action)
                continue
            done = execute(ctx, state, passwords, file, action)
            log.info("rotate htpasswd %s in %s: %s: %s", state.user, path, action.step, done)
            steps.append(Step(action.step, state.user, done))
            state, passwords, file = read_state(ctx.sm, ctx.entry, ctx.on_secret)
    raise RotationError(f"{path}: user {ctx.entry.user!r}: no settled state after {MAX_STEPS} steps")


def _record(state: HtState, steps: list[Step], status: str) -> dict[str, Any]:
    return {
        "user": state.user,
        "path": state.path,
        "secret_id": state.secret_id,
        "status": status,
        "current_version": state.versions.current,
        "current_since": state.current_created.isoformat() if state.current_created else None,
        "steps": [s.as_dict() for s in steps],
        "error": None,
    }
