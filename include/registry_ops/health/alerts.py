"""The SLOs evaluated, their burn-rate alerts emailed once per episode, the result kept for the page.

* :func:`evaluate` reads the probe rows (``health.dataset.read``) and the reports' pull events
  (``reports.ingest.read_events``) unless given, and computes with ``slo``: per SLO, per
  registry and fleet-wide, the SLI, the error budget left and every alert's condition.
* :func:`notify` turns conditions into *episodes*, one state object per (SLO, scope, alert)
  under ``<storage.prefixes.health>alerts/<slo>/<scope>/<alert>/open.json``:

  - the condition starts holding: the episode is *claimed* by writing ``open.json`` only if it
    does not exist (``If-None-Match: *``: two evaluations at once cannot both email), then the
    email goes out and ``open.json`` records it. A failed send deletes the claim, so the next
    evaluation opens it again and retries; a claim left by a crash between claim and send is
    taken over after ``CLAIM_TTL``. A condition *covered* by another (``slo.coverer``: a ticket
    by its page, a fleet alert by a registry's) opens without an email.
  - while it holds: nothing is sent.
  - it stops holding: the episode closes: its record (with ``closed_at``) is written once to
    ``.../closed/<opened>-<id>.json`` and ``open.json`` deleted. No "resolved" email (the page
    shows open episodes; a quiet close keeps a flapping alert from mailing twice per flap).
  - a later breach finds no ``open.json``: a new episode, a new email.
  - an open episode no condition names any more (its registry or alert left the config) closes.

* :func:`persist` writes the evaluation and the open episodes to ``<health>slo/latest.json``
  (what the Registry page shows); :func:`run` is evaluate + notify + persist (the DAG's task).

Recipients: ``slo.recipients``, else ``notifications.ops_recipients``, else ``recipients``.
"""

from __future__ import annotations

import html
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa

from ..notify.message import Message
from ..store import objects
from . import slo

log = logging.getLogger(__name__)

SLOS = ("availability", "pull_success")
TITLES = {"availability": "availability", "pull_success": "pull success"}
CLAIM_TTL = timedelta(minutes=10)  # a claim older than this without its email: the sender died
LATEST = "slo/latest.json"
VERSION = 1


class AlertNotSent(RuntimeError):
    """Some alert emails failed (their episodes stay unopened: the next evaluation retries);
    ``sent`` lists those that went out."""

    def __init__(self, message: str, sent: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.sent = sent


# -- reading ---------------------------------------------------------------------------------------
def read_probes(config: Any, s3: Any, since: datetime, until: datetime) -> pa.Table:
    """The probe rows with ``since <= at < until`` (``health.dataset``, imported when needed)."""
    from . import dataset

    return dataset.read(s3, config, since, until)


def read_pulls(config: Any, s3: Any, since: datetime, until: datetime) -> pd.DataFrame:
    """The stored pull events with ``since <= event_time < until`` (only those days' partitions)."""
    from ..reports.ingest import read_events

    frame = read_events(config, s3, since.date(), until.date() + timedelta(days=1))
    times = pd.to_datetime(frame["event_time"], utc=True)
    return frame[(times >= since) & (times < until)].reset_index(drop=True)


def _span(objective: Any, alerts: Any) -> timedelta:
    return max([objective.window, *(a.long_window for a in alerts)])


def _registries(config: Any, which: str) -> list[str]:
    names = [r.name for r in config.registries]
    if which == "availability" and config.health.registries:
        return list(config.health.registries)
    return names


# -- evaluating ------------------------------------------------------------------------------------
def evaluate(config: Any, s3: Any, now: datetime, probes: Any = None, pulls: Any = None) -> dict[str, Any]:
    """Every SLO and alert condition at ``now``; ``probes`` (PROBE_SCHEMA rows) and ``pulls``
    (EVENTS_SCHEMA rows) are read from S3 when not given."""
    now = now.astimezone(UTC)
    settings = config.slo
    if probes is None:
        span = _span(settings.availability, settings.alerts)
        probes = read_probes(config, s3, now - span, now)
    if pulls is None:
        span = _span(settings.pull_success, settings.alerts)
        pulls = read_pulls(config, s3, now - span, now)
    samples = {"availability": slo.probe_samples(probes), "pull_success": slo.pull_samples(pulls)}
    slos = {
        name: slo.evaluate_slo(
            samples[name], getattr(settings, name), settings.alerts, now, _registries(config, name)
        )
        for name in SLOS
    }
    conditions = [
        {"slo": name, "scope": scope, "budget_left": s["budget_left"], **c}
        for name in SLOS
        for scope, s in slos[name]["scopes"].items()
        for c in s["alerts"]
    ]
    firing = [c for c in conditions if c["firing"]]
    for c in conditions:
        cover = slo.coverer(c, firing) if c["firing"] else None
        c["covered_by"] = None if cover is None else _name(cover)
    return {"version": VERSION, "evaluated_at": now.isoformat(), "slos": slos, "conditions": conditions}


def _name(c: dict[str, Any]) -> str:
    return f"{c['slo']}/{scope_label(c['scope'])}/{c['alert']}"


def scope_label(scope: str) -> str:
    return "fleet" if scope == slo.FLEET else scope


# -- episodes --------------------------------------------------------------------------------------
def _root(config: Any) -> str:
    return f"{config.storage.prefixes.health}alerts/"


def episode_prefix(config: Any, c: dict[str, Any]) -> str:
    return f"{_root(config)}{c['slo']}/{quote(c['scope'], safe='')}/{c['alert']}/"


def open_episodes(config: Any, s3: Any) -> dict[str, dict[str, Any]]:
    """Every ``open.json`` under the alerts prefix, by its key (one listing, a few GETs)."""
    bucket = config.storage.bucket
    out = {}
    for obj in objects.list_keys(s3, bucket, _root(config)):
        if obj["Key"].endswith("/open.json"):
            doc = objects.get_json_or_none(s3, bucket, obj["Key"])
            if isinstance(doc, dict):
                out[obj["Key"]] = doc
    return out


def recipients(config: Any) -> list[str]:
    n = config.notifications
    return list(config.slo.recipients or n.ops_recipients or n.recipients)


def _claim(config: Any, s3: Any, key: str, c: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    doc = {
        "episode_id": uuid.uuid4().hex,
        "state": "sending",
        "slo": c["slo"],
        "scope": c["scope"],
        "alert": c["alert"],
        "severity": c["severity"],
        "opened_at": now.isoformat(),
        "claimed_at": datetime.now(UTC).isoformat(),
        "notified": False,
    }
    body = json.dumps(doc, indent=2, sort_keys=True).encode()
    return doc if objects.put_once(s3, config.storage.bucket, key, body, "application/json") else None


def _stale(doc: dict[str, Any]) -> bool:
    if doc.get("state") != "sending":
        return False
    try:
        claimed = datetime.fromisoformat(str(doc.get("claimed_at")))
    except ValueError:  # a claim without a readable time cannot be waited for
        return True
    return datetime.now(UTC) - claimed > CLAIM_TTL


def subject(c: dict[str, Any], target: float) -> str:
    budget = "n/a" if c["budget_left"] is None else f"{c['budget_left']:.1%}"
    return (
        f"[{c['severity'].upper()}] {TITLES[c['slo']]} SLO ({target:.2%}) of {scope_label(c['scope'])}: "
        f"burn {c['long']['burn']:.1f}x over {span_text(c['long_window_s'])} and "
        f"{c['short']['burn']:.1f}x over {span_text(c['short_window_s'])} (alert at {c['burn_rate']:g}x), "
        f"error budget left {budget}"
    )


def span_text(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def _message(config: Any, c: dict[str, Any], result: dict[str, Any]) -> Message:
    target = result["slos"][c["slo"]]["target"]
    rows = [
        ("Severity", c["severity"]),
        ("SLO", f"{TITLES[c['slo']]}, target {target:.3%}"),
        ("Registry", scope_label(c["scope"])),
        (
            f"Long window ({span_text(c['long_window_s'])})",
            f"{c['long']['burn']:.2f}x burn: {c['long']['bad']} bad of {c['long']['total']}",
        ),
        (
            f"Short window ({span_text(c['short_window_s'])})",
            f"{c['short']['burn']:.2f}x burn: {c['short']['bad']} bad of {c['short']['total']}",
        ),
        ("Alert threshold", f"{c['burn_rate']:g}x over both windows"),
        ("Error budget left", "n/a" if c["budget_left"] is None else f"{c['budget_left']:.2%}"),
        ("Evaluated at", result["evaluated_at"]),
    ]
    text = "\n".join(f"{k}: {v}" for k, v in rows)
    note = "No other email is sent while this episode lasts; the Registry page shows it until it closes."
    cells = "".join(
        f'<tr><th align="left">{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>' for k, v in rows
    )
    return Message(
        subject=subject(c, target),
        text=f"{text}\n\n{note}\n",
        html=f"<table>{cells}</table><p>{html.escape(note)}</p>",
        recipients=tuple(recipients(config)),
    )


def _open(config: Any, s3: Any, key: str, c: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
    """Claim the episode and email it (or record its cover); the sent entry, None when another
    evaluation holds the claim. A failed send gives the claim back and raises."""
    from ..notify.send import notify as send

    now = datetime.fromisoformat(result["evaluated_at"])
    doc = _claim(config, s3, key, c, now)
    if doc is None:
        return None
    bucket = config.storage.bucket
    if c["covered_by"]:
        objects.put_json(s3, bucket, key, {**doc, "state": "open", "covered_by": c["covered_by"]})
        log.info("SLO alert %s opened without email: covered by %s", _name(c), c["covered_by"])
        return None
    message = _message(config, c, result)
    try:
        outcome = send(message, config)
    except Exception:
        s3.delete_object(Bucket=bucket, Key=key)  # give the claim back: the next evaluation retries
        raise
    email = outcome.get("email") or {}
    opened = {**doc, "state": "open", "notified": True, "subject": message.subject}
    opened["sent_to"] = email.get("recipients")
    objects.put_json(s3, bucket, key, opened)
    return {
        "slo": c["slo"],
        "scope": c["scope"],
        "alert": c["alert"],
        "severity": c["severity"],
        "episode_id": doc["episode_id"],
        "subject": message.subject,
        "recipients": email.get("recipients") or [],
    }


def _close(config: Any, s3: Any, key: str, doc: dict[str, Any], now: datetime) -> None:
    """The episode's record written once under ``closed/``, then ``open.json`` removed."""
    bucket = config.storage.bucket
    record = {**doc, "state": "closed", "closed_at": now.isoformat()}
    stamp = datetime.fromisoformat(doc["opened_at"]).strftime("%Y%m%dT%H%M%SZ")
    closed_key = f"{key.rsplit('/', 1)[0]}/closed/{stamp}-{doc['episode_id']}.json"
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    objects.put_once(s3, bucket, closed_key, body, "application/json")
    s3.delete_object(Bucket=bucket, Key=key)
    log.info("SLO alert episode %s closed at %s", closed_key, now.isoformat())


def notify(config: Any, s3: Any, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Open, keep or close every condition's episode; the emails sent. Raises ``AlertNotSent``
    (after every other condition was handled) when an email failed."""
    now = datetime.fromisoformat(result["evaluated_at"])
    current = open_episodes(config, s3)
    sent: list[dict[str, Any]] = []
    failed: list[str] = []
    for c in result["conditions"]:
        key = episode_prefix(config, c) + "open.json"
        doc = current.get(key)
        if doc is not None and _stale(doc):
            log.warning("SLO alert %s: claim %s never sent its email; taking it over", _name(c), key)
            s3.delete_object(Bucket=config.storage.bucket, Key=key)
            doc = None
        if c["firing"] and doc is None:
            try:
                out = _open(config, s3, key, c, result)
            except Exception as exc:  # the claim was given back: the next evaluation retries
                log.error("SLO alert %s not sent (retried next evaluation): %s", _name(c), exc)
                failed.append(f"{_name(c)}: {exc}")
                continue
            if out:
                sent.append(out)
        elif not c["firing"] and doc is not None and doc.get("state") == "open":
            _close(config, s3, key, doc, now)
    handled = {episode_prefix(config, c) + "open.json" for c in result["conditions"]}
    for key, doc in current.items():  # a registry or alert no longer configured: nothing holds
        if key not in handled and doc.get("state") == "open":
            _close(config, s3, key, {**doc, "close_reason": "no longer evaluated"}, now)
    if failed:
        raise AlertNotSent(f"{len(failed)} SLO alert(s) not sent: " + "; ".join(failed), sent)
    return sent


# -- the page's copy -------------------------------------------------------------------------------
def latest_key(config: Any) -> str:
    return f"{config.storage.prefixes.health}{LATEST}"


def persist(config: Any, s3: Any, result: dict[str, Any]) -> str:
    """``result`` with the open episodes, as ``<health>slo/latest.json``; its key."""
    episodes = sorted(
        open_episodes(config, s3).values(),
        key=lambda d: (d.get("slo", ""), d.get("scope", ""), d.get("alert", "")),
    )
    key = latest_key(config)
    objects.put_json(s3, config.storage.bucket, key, {**result, "open_episodes": episodes})
    return key


def run(config: Any, s3: Any, now: datetime) -> dict[str, Any]:
    """Evaluate, notify, persist (even when an email failed: then re-raise ``AlertNotSent``)."""
    result = evaluate(config, s3, now)
    problem: AlertNotSent | None = None
    try:
        sent = notify(config, s3, result)
    except AlertNotSent as exc:
        sent, problem = exc.sent, exc
    persist(config, s3, result)
    if problem is not None:
        raise problem
    firing = [_name(c) for c in result["conditions"] if c["firing"]]
    return {"evaluated_at": result["evaluated_at"], "firing": firing, "sent": sent}
