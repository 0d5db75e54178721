"""Notices to ops (``notifications.ops_recipients``) when one of our DAGs fails or misses its
deadline, sent through the SMTP provider's ``SmtpNotifier``.

* :class:`FailureNotice` is every task's ``on_failure_callback`` (``dag_support.dag_defaults``).
  Airflow calls it only after the last try (retries call ``on_retry_callback``, which stays
  unset), in the task's own process, with the exception. One notice per run: the first failing
  task writes a write-once marker (``If-None-Match: *``) keyed by DAG id, run id and the run's
  clear number; a task that finds the marker sends nothing. If the marker cannot be written (S3
  down, bucket missing) the notice is sent anyway: a duplicate beats silence. If sending fails,
  the marker is removed so a later failing task of the run may try again.
* :func:`deadline_missed` is the ``DeadlineAlert`` callback (``AsyncCallback``): the triggerer
  awaits it once per missed deadline with the run as Airflow's REST API shows it.
* :func:`send_notice` sends any such notice (``registry_watch`` uses it for paused DAGs).

The error text is masked before it leaves: Airflow's secrets masker (every connection password
and extra the task read is registered there), then the SMTP connection's own secrets, then the
patterns of ``redact.py`` (URL user-info, ``password=...``, ``token: ...``, ``Bearer ...``).
Nothing here raises into Airflow: a notice that cannot be sent is logged (masked), and the task
keeps its own failure. The subject and body are never Jinja-rendered (``notify`` is called, not
the notifier itself), so ``{{`` in an error message stays text.
"""

from __future__ import annotations

import html
import json
import logging
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from .. import redact
from .smtp import scrub

log = logging.getLogger(__name__)

MESSAGE_LINES = 5  # first lines of the exception's message
LINE_CHARS = 300  # each line trimmed to this
FRAMES = 3  # the innermost frames of the traceback
MARKER_DIR = "alerts/failed-runs/"  # under storage.prefixes.reports


def mask(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret Airflow's masker knows, every given one and every credential
    our patterns recognise replaced by ``***``."""
    try:
        from airflow.sdk._shared.secrets_masker import redact as airflow_masker

        text = str(airflow_masker(text))
    except Exception:  # outside Airflow, or a masker that cannot run: our own rules still apply
        log.debug("Airflow's secrets masker not available", exc_info=True)
    return redact.text(scrub(text, sorted((s for s in secrets if s), key=len, reverse=True)))


def _trim(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


def error_excerpt(error: BaseException | str | None, secrets: Iterable[str | None] = ()) -> str:
    """The first lines of the error (type and message) and its innermost frames, trimmed and
    masked: enough to see what broke without opening the log."""
    if error is None:
        return "(Airflow recorded no exception: see the task log)"
    if isinstance(error, BaseException):
        head = "".join(traceback.format_exception_only(type(error), error)).strip()
        frames = traceback.extract_tb(error.__traceback__)[-FRAMES:]
    else:
        head, frames = str(error).strip(), []
    lines = [_trim(ln) for ln in head.splitlines()[:MESSAGE_LINES]]
    if len(head.splitlines()) > MESSAGE_LINES:
        lines.append("[…]")
    if frames:
        lines.append("")
        lines.append("Last frames:")
        for frame in frames:
            path = "/".join(frame.filename.split("/")[-3:])
            lines.append(_trim(f'  File "{path}", line {frame.lineno}, in {frame.name}'))
            if frame.line:
                lines.append(_trim(f"    {frame.line.strip()}"))
    return mask("\n".join(lines), secrets)


def ops_recipients(config: Any) -> list[str]:
    n = config.notifications
    return list(n.ops_recipients if n.ops_recipients is not None else n.recipients)


def marker_key(config: Any, dag_id: str, run_id: str, clear_number: int = 0) -> str:
    """Where the "notice sent for this run" marker lives (one per clearing of the run)."""
    return (
        f"{config.storage.prefixes.reports}{MARKER_DIR}{dag_id}/{quote(run_id, safe='')}/{clear_number}.json"
    )


def dag_url(dag_id: str) -> str:
    """The DAG's page in the Airflow UI (``[api] base_url``, as ``ti.log_url`` uses it)."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/")
    return f"{base.rstrip('/')}/dags/{quote(dag_id)}"


def run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI."""
    return f"{dag_url(dag_id)}/runs/{quote(run_id)}"


def _smtp_secrets(notifier: Any) -> list[str | None]:
    conn = getattr(notifier.hook, "smtp_connection", None) if "hook" in notifier.__dict__ else None
    if conn is None:
        return []
    extra = conn.extra_dejson
    return [conn.password, extra.get("access_token"), extra.get("client_secret")]


def _notifier(config: Any, subject: str, body: str) -> Any:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    recipients = ops_recipients(config)
    if not recipients:
        raise ValueError("notifications.ops_recipients (and notifications.recipients) are empty")
    return SmtpNotifier(
        to=recipients,
        from_email=config.notifications.sender,
        subject=subject,
        html_content=body,
        smtp_conn_id=config.notifications.smtp_conn_id,
    )


def send_notice(config: Any, subject: str, body: str) -> list[str]:
    """Email ``subject`` and the HTML ``body`` to ops through ``SmtpNotifier``; the recipients.
    Errors are raised with every SMTP secret masked."""
    notifier = _notifier(config, subject, body)
    try:
        notifier.notify({})
    except Exception as exc:
        raise _not_sent(config, subject, notifier, exc) from None
    return _sent(subject, notifier)


async def asend_notice(config: Any, subject: str, body: str) -> list[str]:
    """:func:`send_notice` for the triggerer (the hook's async client and connection lookup)."""
    notifier = _notifier(config, subject, body)
    try:
        await notifier.async_notify({})
    except Exception as exc:
        raise _not_sent(config, subject, notifier, exc) from None
    return _sent(subject, notifier)


def _not_sent(config: Any, subject: str, notifier: Any, exc: Exception) -> RuntimeError:
    """The error a failed send raises, every SMTP secret masked (sync and async alike)."""
    problem = mask(f"{type(exc).__name__}: {exc}", _smtp_secrets(notifier))
    conn = config.notifications.smtp_conn_id
    return RuntimeError(f"notice {subject!r} not sent via SMTP connection {conn!r}: {problem}")


def _sent(subject: str, notifier: Any) -> list[str]:
    log.info("notice %r sent to %s", subject, ", ".join(notifier.to))
    return list(notifier.to)


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<tr><th align="left" valign="top">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    return f"<table>{cells}</table>"


def failure_body(facts: Mapping[str, Any], excerpt: str) -> str:
    rows = [
        ("DAG", facts["dag_id"]),
        ("Task", facts["task"]),
        ("Run", facts["run_id"]),
        ("Try", str(facts["try_number"])),
    ]
    link = html.escape(facts["log_url"], quote=True)
    return (
        f"<p>A task of <b>{html.escape(facts['dag_id'])}</b> failed after its last try.</p>"
        f"{_table(rows)}<h3>Error</h3><pre>{html.escape(excerpt)}</pre>"
        f'<p>Task log: <a href="{link}">{link}</a></p>'
        "<p>Other tasks of this run that fail are not notified again: see the run in Airflow.</p>"
    )


def _facts(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    task = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}[{map_index}]"
    dag_run = context.get("dag_run")
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "task": task,
        "run_id": ti.run_id,
        "try_number": getattr(ti, "try_number", "?"),
        "clear_number": int(getattr(dag_run, "clear_number", 0) or 0),
        "log_url": ti.log_url,
    }


def _claim(config: Any, key: str, facts: Mapping[str, Any]) -> bool | None:
    """True: this task sends the run's notice; False: another one did; None: unknown (S3
    failed), send anyway."""
    from ..clients import s3_client
    from ..store import objects

    body = json.dumps(
        {"task": facts["task"], "at": datetime.now(UTC).isoformat(), "try_number": facts["try_number"]}
    ).encode()
    try:
        return objects.put_once(s3_client(config), config.storage.bucket, key, body, "application/json")
    except Exception as exc:
        log.warning(
            "failure notice: cannot record it in s3://%s/%s (%s); sending it anyway",
            config.storage.bucket,
            key,
            mask(f"{type(exc).__name__}: {exc}"),
        )
        return None


def _release(config: Any, key: str) -> None:
    from ..clients import s3_client

    try:
        s3_client(config).delete_object(Bucket=config.storage.bucket, Key=key)
    except Exception as exc:
        log.warning("failure notice: marker %s not removed: %s", key, mask(f"{type(exc).__name__}: {exc}"))


def _is_verdict(error: object) -> bool:
    from airflow.sdk.exceptions import AirflowFailException

    return isinstance(error, AirflowFailException)


class FailureNotice:
    """A task's ``on_failure_callback``: one notice to ops per failed run (see the module
    docstring). ``quiet_tasks``: task ids whose ``AirflowFailException`` is a verdict the task
    has already reported itself (the scan and access-audit gates, a report that failed
    validation): no notice for that; any other error of theirs is notified as usual."""

    def __init__(self, quiet_tasks: Iterable[str] = ()) -> None:
        self.quiet_tasks = frozenset(quiet_tasks)

    def __repr__(self) -> str:
        return f"FailureNotice(quiet_tasks={sorted(self.quiet_tasks)})"

    def __call__(self, context: Mapping[str, Any]) -> None:
        try:
            self.notify(context)
        except Exception as exc:  # never into Airflow: the task's own failure is what counts
            log.error("failure notice not sent: %s", mask(f"{type(exc).__name__}: {exc}"))

    def notify(self, context: Mapping[str, Any]) -> bool:
        """Send the run's notice unless it went out already; True when this call sent it."""
        from ..config import load_config

        facts = _facts(context)
        if facts["task_id"] in self.quiet_tasks and _is_verdict(context.get("exception")):
            log.info("failure notice: %s reported its verdict itself; none sent", facts["task_id"])
            return False
        config = load_config()
        key = marker_key(config, facts["dag_id"], facts["run_id"], facts["clear_number"])
        if _claim(config, key, facts) is False:
            log.info(
                "failure notice for run %s already sent (s3://%s/%s)",
                facts["run_id"],
                config.storage.bucket,
                key,
            )
            return False
        excerpt = error_excerpt(context.get("exception"))
        subject = f"[registry-ops] FAILED {facts['dag_id']}: task {facts['task']}"
        try:
            send_notice(config, subject, failure_body(facts, excerpt))
        except Exception:
            _release(config, key)
            raise
        return True


def deadline_body(dag_id: str, interval: str, run: Mapping[str, Any], deadline: Mapping[str, Any]) -> str:
    run_id = str(run.get("dag_run_id") or run.get("run_id") or "?")
    rows = [
        ("DAG", dag_id),
        ("Run", run_id),
        ("Deadline", f"{interval} after the run was queued"),
        ("Queued at", str(run.get("queued_at") or "?")),
        ("Deadline was", str(deadline.get("deadline_time") or "?")),
        ("State then", str(run.get("state") or "?")),
    ]
    link = html.escape(run_url(dag_id, run_id), quote=True)
    return (
        f"<p><b>{html.escape(dag_id)}</b> has not finished in time: the run below was still not "
        f"done {html.escape(interval)} after it was queued.</p>{_table(rows)}"
        f'<p>Run: <a href="{link}">{link}</a></p>'
    )


async def deadline_missed(
    dag_id: str, interval: str, context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``DeadlineAlert`` callback: awaited by the triggerer with ``context`` = ``{"dag_run": the
    run as the REST API shows it, "deadline": {"id", "deadline_time"}}`` and our kwargs. Raises
    when the notice cannot be sent (Airflow then records the callback as failed, with the
    masked reason)."""
    import asyncio

    from ..config import load_config

    run = dict((context or {}).get("dag_run") or {})
    deadline = dict((context or {}).get("deadline") or {})
    config = await asyncio.to_thread(load_config)
    run_id = str(run.get("dag_run_id") or run.get("run_id") or "?")
    subject = f"[registry-ops] DEADLINE MISSED {dag_id}: run {run_id} not finished within {interval}"
    sent_to = await asend_notice(config, subject, deadline_body(dag_id, interval, run, deadline))
    return {"dag_id": dag_id, "run_id": run_id, "recipients": sent_to}
