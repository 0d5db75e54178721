"""Every DAG parses quickly, with no connection or variable defined, and follows the rules."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[1] / "dags"
HEAVY = {"pandas", "great_expectations", "boto3", "matplotlib", "pyarrow"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    start = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS))
    bag.elapsed = time.perf_counter() - start
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "registry_inventory" in dagbag.dags


def test_all_dag_files_parse_in_under_two_seconds(dagbag):
    assert dagbag.elapsed < 2.0, f"parsing dags/ took {dagbag.elapsed:.2f}s"


def test_each_dag_follows_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id}: no doc_md"
        assert dag.start_date.tzinfo is not None, dag_id
        assert dag.max_active_runs >= 1
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id}: no owner"
            assert t.retries >= 2, f"{dag_id}.{t.task_id}: retries {t.retries} < 2"


def test_dag_id_is_file_name(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_no_heavy_imports_at_module_top(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only; imports inside tasks are fine
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in HEAVY, f"{path.name} imports {name} at module top"
