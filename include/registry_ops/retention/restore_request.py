"""What a ``registry_restore`` run was asked to do, read from its Params (trigger form or conf).

The form has a ``mode``: ``list recent archives`` (the default, so the form opens on a run
that is valid and harmless) or ``restore``. A restore changes a registry, so it is never
inferred: a digest, tag, target registry or repository, or ``move_tags`` given while the mode is
still ``list recent archives`` fails, naming them, instead of listing (or restoring) by surprise.
``to_registry`` names a configured registry of any kind (an OCI layout directory too); an
unknown name fails where the config is read (``jobs.restore``), naming the configured ones.
Which image to restore ("exactly one of a digest or a tag", a tag needs its repository) is
checked where the archive is searched (``restore.locate``), for the CLI and the DAG alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A Param the run cannot act on (this module imports nothing heavy: the DAG file uses it)."""


MODE_LIST = "list recent archives"
MODE_RESTORE = "restore"
MODES = (MODE_LIST, MODE_RESTORE)
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
RESTORE_ONLY = ("digest", "tag", "to_registry", "to_repository", "move_tags")


@dataclass(frozen=True)
class RestoreRequest:
    mode: str
    registry: str | None = None
    repository: str | None = None
    digest: str | None = None
    tag: str | None = None
    to_registry: str | None = None
    to_repository: str | None = None
    move_tags: bool = False

    def restore_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``retention.jobs.restore``."""
        return {
            "registry": self.registry,
            "repository": self.repository,
            "digest": self.digest,
            "tag": self.tag,
            "to_registry": self.to_registry,
            "to_repository": self.to_repository,
            "move_tags": self.move_tags,
        }


def _text(params: Mapping[str, Any], name: str) -> str | None:
    """A text Param: null, missing and blank all mean "not given" (API callers may send "")."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParamError(f"Param {name!r}: expected text or null, got {value!r}")
    return value.strip() or None


def from_params(params: Mapping[str, Any]) -> RestoreRequest:
    """The request, or a ``RestoreError`` naming the Param and what is wrong with it."""
    mode = params.get("mode") or MODE_LIST
    if mode not in MODES:
        raise ParamError(f"Param 'mode': {mode!r} is not one of {', '.join(repr(m) for m in MODES)}")
    move_tags = params.get("move_tags")
    if move_tags not in (None, True, False):
        raise ParamError(f"Param 'move_tags': expected true or false, got {move_tags!r}")
    req = RestoreRequest(
        mode=mode,
        registry=_text(params, "registry"),
        repository=_text(params, "repository"),
        digest=_text(params, "digest"),
        tag=_text(params, "tag"),
        to_registry=_text(params, "to_registry"),
        to_repository=_text(params, "to_repository"),
        move_tags=bool(move_tags),
    )
    if req.digest and not re.match(DIGEST_PATTERN, req.digest):
        raise ParamError(f"Param 'digest': {req.digest!r} is not sha256: followed by 64 lowercase hex digits")
    if mode == MODE_LIST:
        given = [f"{n}={getattr(req, n)!r}" for n in RESTORE_ONLY if getattr(req, n)]
        if given:
            raise ParamError(
                f"mode is {MODE_LIST!r} but {', '.join(given)} given: set mode to {MODE_RESTORE!r} to "
                "restore, or clear them to list"
            )
    return req


def listing_text(recent: list[dict[str, Any]]) -> str:
    """The newest archived images as a table for the task log (what a restore can bring back)."""
    if not recent:
        return "(the archive is empty)"
    rows = [("archived at", "image", "tags", "restorable")]
    for e in recent:
        rows.append(
            (
                str(e["archived_at"]),
                f"{e['registry']}/{e['repository']}@{e['digest']}",
                ",".join(e.get("tags") or []) or "-",
                str(e.get("restorable") or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)
