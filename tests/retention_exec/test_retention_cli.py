"""`registry-ops retention apply` and `registry-ops restore` as a user runs them (subprocesses
against the session's moto and registry servers), through the real planner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from include.registry_ops import storage
from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.inventory import run_inventory
from include.registry_ops.inventory_files import write_inventory
from tests.retention_exec.helpers import NOW, ecr_registry, oci_registry, present, seed, small_fleet, unique

CLI = [sys.executable, "-m", "include.registry_ops.cli"]
CLI_BUCKET = "ret-exec-cli"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def _policy(prefix: str) -> dict:
    return {
        "policies": [
            {
                "name": "keep-newest-3",
                "enabled": True,
                "repositories": [prefix + "*"],
                "protect_tags": [],
                "rules": [
                    {
                        "rulePriority": 1,
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": 3,
                        },
                        "action": {"type": "expire"},
                    }
                ],
            }
        ]
    }


@pytest.fixture(scope="module")
def cli_env(moto_server, registry_server, s3, tmp_path_factory):
    """Two fleets (one per test that deletes), config files, a policy file and inventory files."""
    work = tmp_path_factory.mktemp("retention-cli")
    storage.ensure_bucket(s3, CLI_BUCKET)  # as `registry-ops init` would: jobs never create it
    ecr, oci = ecr_registry(moto_server.endpoint), oci_registry(registry_server.url)
    env = {"dir": work, "ecr": ecr, "oci": oci}
    for name, fraction in (("capped", 0.5), ("free", 1.0)):
        prefix = unique()
        fleet = small_fleet(prefix, repositories=1, images=14, seed=41)
        seed(ecr, fleet)
        seed(oci, fleet)
        (work / f"{name}-policy.json").write_text(json.dumps(_policy(prefix)))
        config = work / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "registries": [
                        {
                            "name": "ecr-local",
                            "kind": "ecr",
                            "conn_id": "aws_default",
                            "include": [prefix + "*"],
                        },
                        {
                            "name": "oci-local",
                            "kind": "oci",
                            "conn_id": "oci_local",
                            "include": [prefix + "*"],
                        },
                    ],
                    "storage": {"conn_id": "aws_default", "bucket": CLI_BUCKET},
                    "retention": {"max_fraction_per_repository": fraction},
                }
            )
        )
        listing = run_inventory(load_config(config), build_registry, NOW)
        assert not listing.errors
        write_inventory(listing.table, work / f"{name}.parquet")
        env[name] = {"fleet": fleet, "config": str(config), "policy": str(work / f"{name}-policy.json")}
    return env


def _apply(env: dict, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    case = env[name]
    return run(
        "retention",
        "apply",
        "--policy",
        case["policy"],
        "--inventory",
        str(env["dir"] / f"{name}.parquet"),
        "--config",
        case["config"],
        "--now",
        NOW.isoformat(),
        *extra,
    )


def _images(env: dict, name: str) -> dict[tuple[str, str], bool]:
    repo = env[name]["fleet"][0]
    return {
        (reg.name, m.digest): present(reg, repo.name, m.digest)
        for reg in (env["ecr"], env["oci"])
        for m in repo.manifests
        if reg.kind == "ecr" or m.tags
    }


def test_dry_run_is_the_default_and_deletes_nothing(cli_env):
    before = _images(cli_env, "free")
    proc = _apply(cli_env, "free")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (
        summary["dry_run"] is True and summary["images_removed"] == 0 and summary["would_remove_images"] > 0
    )
    assert _images(cli_env, "free") == before


def test_caps_stop_the_repositories_and_the_exit_code_says_so(cli_env):
    before = _images(cli_env, "capped")
    proc = _apply(cli_env, "capped", "--execute")
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert len(summary["repositories_stopped"]) == 2 and summary["images_removed"] == 0
    assert "over the cap of 50% of a repository" in proc.stderr
    assert _images(cli_env, "capped") == before


def test_execute_then_rerun_then_restore(cli_env):
    proc = _apply(cli_env, "free", "--execute")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images_removed"] > 0 and summary["repositories_failed"] == []
    after = _images(cli_env, "free")
    assert sum(not v for v in after.values()) == summary["images_removed"]

    again = _apply(cli_env, "free", "--execute")  # same plan, same run id: the journal says done
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run_id"] == summary["run_id"]
    assert _images(cli_env, "free") == after

    repo = cli_env["free"]["fleet"][0]
    gone = next(m for m in repo.manifests if m.tags and not after[("oci-local", m.digest)])
    restored = run(
        "restore",
        "--registry",
        "oci-local",
        "--repository",
        repo.name,
        "--tag",
        gone.tags[0],
        "--config",
        cli_env["free"]["config"],
    )
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert result["digest"] == gone.digest and result["verified"] is True
    assert cli_env["oci"].get_manifest(repo.name, gone.digest).raw == gone.raw


def test_bad_input_exits_2_with_the_reason(cli_env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"rulePriority": 0}]}')
    proc = run(
        "retention",
        "apply",
        "--policy",
        str(bad),
        "--inventory",
        str(cli_env["dir"] / "free.parquet"),
        "--config",
        cli_env["free"]["config"],
    )
    assert proc.returncode == 2 and str(bad) in proc.stderr
    proc = run("restore", "--digest", "sha256:" + "0" * 64, "--config", cli_env["free"]["config"])
    assert proc.returncode == 2 and "not in the archive" in proc.stderr


def test_plan_subcommand_is_wired_in():
    proc = run("retention", "plan", "--help")
    assert proc.returncode == 0 and "--policy" in proc.stdout
