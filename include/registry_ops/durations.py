"""Durations in the config file: ``"5m"``, ``"90m"``, ``"2h"``, ``"1h30m"``, ``"30d"`` (days,
hours, minutes, in that order). One parser for every key that takes one (deadlines, SLO windows),
so they all accept and refuse the same text."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")


def parse(value: object, most: timedelta | None = None, what: str = "a duration") -> timedelta:
    """``value`` (text as above, or a timedelta) as a timedelta more than 0 and, with ``most``, at
    most that; ValueError naming the value otherwise (``what`` names the kind in the message)."""
    if isinstance(value, timedelta):
        out = value
    else:
        match = _DURATION.match(value.strip()) if isinstance(value, str) else None
        if not match or not any(match.groups()):
            raise ValueError(f"{value!r} is not a duration: write e.g. '5m', '90m', '2h', '1h30m' or '30d'")
        days, hours, minutes = (int(g or 0) for g in match.groups())
        out = timedelta(days=days, hours=hours, minutes=minutes)
    if out <= timedelta(0) or (most is not None and out > most):
        bound = f" and at most {most.days} days" if most is not None else ""
        raise ValueError(f"{value!r}: {what} must be more than 0{bound}")
    return out
