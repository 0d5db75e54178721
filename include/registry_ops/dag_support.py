"""Small helpers every DAG file shares; Airflow is imported only when they run (in a task)."""

from __future__ import annotations

from typing import Any


def config_or_fail() -> Any:
    """The validated config; a bad file fails the task at once (retrying cannot fix it)."""
    from airflow.sdk.exceptions import AirflowFailException

    from .config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
