"""``dag.test()`` on a DAG that carries a ``DeadlineAlert``.

Airflow 3.3.2's ``dag.test()`` round-trips the DAG through serialization in memory
(``DagSerialization.deserialize_dag(serialize_dag(self))``), so the run's DAG holds its
deadlines as serialized dicts where the scheduler's DAG holds the ids of the ``deadline_alert``
rows; when such a run succeeds, ``DagRun.update_state`` looks the dicts up as ids and fails
(``'dict' object has no attribute 'hex'``). Under the real scheduler the ids are there (the demo
runs both DAGs with their deadlines), and the deadlines themselves are tested in
``tests/notify/test_deadlines.py``; the end-to-end DAG tests run without them.
"""

from __future__ import annotations

from typing import Any


def without_deadline(dag: Any) -> Any:
    """The DAG with no deadline, for ``dag.test()`` (see the module docstring)."""
    assert dag.deadline, f"{dag.dag_id} has no deadline: this workaround is not needed"
    dag.deadline = None
    return dag
