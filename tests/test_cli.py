"""`registry-ops inventory` outside Airflow, as a user runs it (a subprocess, real services)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from include.registry_ops.inventory_files import read_inventory
from tests.conftest import OCI_PASSWORD
from tests.fleet_expect import all_ecr, visible_oci

CLI = [sys.executable, "-m", "include.registry_ops.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


@pytest.fixture(scope="module")
def parquet_out(seeded, config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "inv.parquet"
    proc = run("-v", "inventory", "--config", str(config_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_inventory_to_parquet_matches_the_fleet(parquet_out, seeded):
    out, proc = parquet_out
    frame = read_inventory(out)
    summary = json.loads(proc.stdout)
    assert summary["images"] == len(frame) and summary["errors"] == []
    for registry, expect in (("ecr-local", all_ecr), ("oci-local", visible_oci)):
        got = frame[frame.registry == registry]
        want = {(r.name, d) for r in seeded for d in expect(r)}
        assert set(zip(got.repository, got.digest, strict=True)) == want


def test_secrets_never_reach_the_output(parquet_out):
    _, proc = parquet_out
    assert OCI_PASSWORD not in proc.stdout + proc.stderr
    assert "Authorization" not in proc.stderr


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_csv_and_json_round_trip_to_the_same_rows(parquet_out, config_file, tmp_path, ext):
    out = tmp_path / f"inv.{ext}"
    proc = run("inventory", "--config", str(config_file), "--out", str(out), "--registry", "oci-local")
    assert proc.returncode == 0, proc.stderr
    text_frame = read_inventory(out).drop(columns=["snapshot_at"])
    parquet = read_inventory(parquet_out[0])
    parquet = parquet[parquet.registry == "oci-local"].drop(columns=["snapshot_at"])
    key = ["registry", "repository", "digest"]
    a = text_frame.sort_values(key).reset_index(drop=True)
    b = parquet.sort_values(key).reset_index(drop=True)
    assert a["tags"].tolist() == b["tags"].tolist()
    assert a["child_digests"].tolist() == b["child_digests"].tolist()
    assert a["size_bytes"].tolist() == b["size_bytes"].tolist()
    assert a["created_at"].tolist() == b["created_at"].tolist()


def test_bad_inputs_exit_2_with_a_clear_message(config_file, tmp_path):
    proc = run("inventory", "--config", str(config_file), "--out", str(tmp_path / "x.xlsx"))
    assert proc.returncode == 2 and "unknown inventory format '.xlsx'" in proc.stderr
    proc = run(
        "inventory", "--config", str(config_file), "--out", str(tmp_path / "x.csv"), "--registry", "nope"
    )
    assert proc.returncode == 2 and "unknown registry 'nope'" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("registries: 3\nstorage: {bucket: ok-bucket}\n")
    proc = run("inventory", "--config", str(bad), "--out", str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and f"{bad}: registries:" in proc.stderr


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("registry-ops", path=os.path.dirname(sys.executable))
    assert exe, "registry-ops console script missing: run `make install`"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "inventory" in proc.stdout


def test_an_in_process_command_leaves_no_handler_on_its_stderr(monkeypatch):
    """``main`` runs in-process (tests, the demo): a handler ``basicConfig`` bound to the
    command's stderr must go with the command, or the next command's log lines are written to
    a closed stream ("--- Logging error ---", with the raw exception printed)."""
    import io
    import logging

    import airflow  # noqa: F401  (its import installs its own handler: that one may stay)

    from include.registry_ops.cli import configured_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with configured_logging(0):
        logging.getLogger("include.registry_ops.test").warning("inside")
        assert len(root.handlers) == 1
    assert root.handlers == []
    assert "inside" in sys.stderr.getvalue()
