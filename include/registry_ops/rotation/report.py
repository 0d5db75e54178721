"""The rotation's summary for people: subject, text and HTML of one email to the security
recipients. Built from the run records only (key ids, version ids, steps, statuses): no
secret ever reaches it."""

from __future__ import annotations

import html
from typing import Any

from ..config import Config
from ..notify.message import Message


def _lines(record: dict[str, Any], kind: str) -> list[str]:
    who = record["user"] + (f" ({record['path']})" if record.get("path") else "")
    out = [f"[{kind}] {who}: {record['status']}" + (f": {record['error']}" if record.get("error") else "")]
    if record.get("detail"):
        out.append(f"    {record['detail']}")
    if record.get("current_key"):
        out.append(f"    current key {record['current_key']}")
    for key in record.get("keys", []):
        if key["role"] != "current":
            state = "active" if key["active"] else f"inactive, deleted after {key['delete_after']}"
            out.append(f"    {key['role']} key {key['key']} ({state})")
    out += [f"    step {s['step']}: {s['detail']}" for s in record.get("steps", [])]
    return out


def subject(results: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        for status, n in result["summary"]["counts"].items():
            counts[status] = counts.get(status, 0) + n
    told = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no accounts"
    return f"registry-ops credential rotation: {told}"


def message(config: Config, results: list[dict[str, Any]]) -> Message:
    lines: list[str] = []
    for result in results:
        for record in result["accounts"]:
            lines += _lines(record, result["kind"])
    text = "\n".join(lines) or "No account is configured under rotation:."
    body = "<pre>" + html.escape(text) + "</pre>"
    settings = config.notifications
    recipients = tuple(settings.security_recipients or settings.recipients)
    return Message(subject=subject(results), text=text, html=body, recipients=recipients)
