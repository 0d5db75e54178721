"""Options several subcommands share, written once: ``--config``'s help and ``--now``'s parser."""

from __future__ import annotations

from datetime import UTC, datetime

CONFIG_HELP = "config file (default: $REGISTRY_OPS_CONFIG or config/registry-ops.yaml)"


def parse_now(text: str | None) -> datetime:
    """``--now``: ISO-8601 (``Z`` or an offset; naive means UTC); default: the current time."""
    if not text:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--now: not an ISO-8601 date/time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
