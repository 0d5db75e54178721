"""Fixtures shared by this package's modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def serialized_dags(airflow_db) -> None:
    """This repository's DAGs serialized into the worker's metadata DB (the REST API serves a DAG
    and its assets only then), once for the package's modules: ``airflow dags reserialize`` is a
    process paying Airflow's start-up and a parse of every DAG (seconds), and the DAGs do not
    change during a session. Nothing here deletes serialized DAGs."""
    from devstack.api_server import reserialize_dags

    reserialize_dags()
