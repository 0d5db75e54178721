"""`registry-ops retention apply` reproductions from the hardening issue, as a user runs them
(subprocesses, and ``jobs.apply_plan`` where two runs must overlap in one process):

- two ``--execute`` runs at once: one acts, the other is refused naming the holder (item 3);
- S3 failing mid-apply: the JSON summary still comes out, exit 1, deletions in the log (item 4);
- a policy cap cannot raise the config's cap; per-policy caps hold; strict booleans (item 5);
- a plain ECR lifecycle JSON file can be enabled, and an all-dry-run ``--execute`` says so (item 6);
- ECR requests at the archive floor: no ListImages for the fresh look (item 11);
- one log line per repository without ``-v``, per-repository INFO with ``-v`` (item 12).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from include.registry_ops.clients import build_registry
from include.registry_ops.config import load_config
from include.registry_ops.inventory import run_inventory
from include.registry_ops.inventory_files import read_inventory, write_inventory
from include.registry_ops.retention import jobs
from include.registry_ops.retention.lease import LeaseHeld
from tests.retention_exec.helpers import NOW, ecr_registry, oci_registry, present, seed, small_fleet, unique

CLI = [sys.executable, "-m", "include.registry_ops.cli"]
BUCKET = "ret-apply-hardening"
RULE = {
    "rulePriority": 1,
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3},
    "action": {"type": "expire"},
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


class Case:
    """One seeded repository (ECR and OCI), its config, inventory and a policy file."""

    def __init__(
        self, work: Path, name: str, policy: dict, retention: dict, registries=("ecr", "oci")
    ) -> None:
        self.dir = work
        self.prefix = unique("ret-hard")
        self.fleet = small_fleet(self.prefix, repositories=1, images=14, seed=43)
        self.regs = {}
        if "ecr" in registries:
            self.regs["ecr-local"] = ecr_registry(os.environ["_MOTO_ENDPOINT"])
        if "oci" in registries:
            self.regs["oci-local"] = oci_registry(os.environ["_REGISTRY_URL"])
        for reg in self.regs.values():
            seed(reg, self.fleet)
        self.policy = work / f"{name}-policy.json"
        self.policy.write_text(json.dumps(policy(self.prefix) if callable(policy) else policy))
        conf = {
            "registries": [
                {
                    "name": "ecr-local",
                    "kind": "ecr",
                    "conn_id": "aws_default",
                    "include": [self.prefix + "*"],
                },
                {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [self.prefix + "*"]},
            ],
            "storage": {"conn_id": "aws_default", "bucket": BUCKET},
            "retention": {"in_use_discovery": [], **retention},
        }
        conf["registries"] = [r for r in conf["registries"] if r["name"] in self.regs]
        self.config = work / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(conf))
        listing = run_inventory(load_config(self.config), build_registry, NOW)
        assert not listing.errors
        self.inventory = work / f"{name}.parquet"
        write_inventory(listing.table, self.inventory)

    def args(self, *extra: str) -> list[str]:
        return [
            "retention", "apply", "--policy", str(self.policy), "--inventory", str(self.inventory),
            "--config", str(self.config), "--now", NOW.isoformat(), *extra,
        ]  # fmt: skip

    def apply(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return run(*self.args(*extra))

    def state(self) -> dict[tuple[str, str], bool]:
        repo = self.fleet[0]
        return {
            (reg.name, m.digest): present(reg, repo.name, m.digest)
            for reg in self.regs.values()
            for m in repo.manifests
            if reg.kind == "ecr" or m.tags
        }


def _wrapper(prefix: str, **settings) -> dict:
    return {
        "policies": [
            {
                "name": "keep-3",
                "repositories": [prefix + "*"],
                "protect_tags": [],
                "rules": [RULE],
                **settings,
            }
        ]
    }


@pytest.fixture(scope="module")
def work(moto_server, registry_server, s3, tmp_path_factory):
    os.environ["_MOTO_ENDPOINT"], os.environ["_REGISTRY_URL"] = moto_server.endpoint, registry_server.url
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return tmp_path_factory.mktemp("apply-hardening")


# -- item 3: one run at a time ---------------------------------------------------------------------
def test_a_second_execute_while_one_runs_is_refused_and_nothing_is_archived_twice(work, s3, monkeypatch):
    case = Case(work, "concurrent", lambda p: _wrapper(p, enabled=True), {"max_fraction_per_repository": 1.0})
    inventory = read_inventory(case.inventory)
    config = load_config(case.config)
    from include.registry_ops.retention import executor

    inside, release = threading.Event(), threading.Event()
    real = executor.archive_images

    def slow_archive(*args, **kw):  # the first run stops inside its work until told to go on
        inside.set()
        release.wait(60)
        return real(*args, **kw)

    monkeypatch.setattr(executor, "archive_images", slow_archive)
    out: dict[str, object] = {}

    def first() -> None:
        out["first"] = jobs.apply_plan(config, inventory, NOW, dry_run=False, policy_file=case.policy)

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(60)
    try:
        with pytest.raises(LeaseHeld) as err:  # the second run, while the first works
            jobs.apply_plan(config, inventory, NOW, dry_run=False, policy_file=case.policy)
        assert "another retention run is acting on it" in str(err.value) and "cli:" in str(err.value)
        assert " ago" in str(err.value)
    finally:
        release.set()
        t.join(120)
    first_summary = out["first"]
    assert first_summary["images_removed"] > 0 and first_summary["repositories_failed"] == []
    for reg_name in case.regs:  # archived once: one catalog per repository
        keys = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"archive/images/{reg_name}/{case.prefix}").get(
                "Contents", []
            )
        ]
        assert len(keys) == 1, keys
    leases = s3.list_objects_v2(Bucket=BUCKET, Prefix="retention/runs/leases/").get("Contents", [])
    assert leases == []  # given back at the end


def test_the_cli_names_the_holder_and_exits_1_without_touching_anything(work, s3):
    from include.registry_ops.retention.lease import Lease

    case = Case(work, "held", lambda p: _wrapper(p, enabled=True), {"max_fraction_per_repository": 1.0})
    holder = Lease(s3, BUCKET, "retention/runs/", "oci-local", "manual__2026-11-28T07:13:00", "run-x", 120)
    holder.acquire()
    try:
        before = case.state()
        proc = case.apply("--execute")
        assert proc.returncode == 1, proc.stderr
        assert "manual__2026-11-28T07:13:00" in proc.stderr and "taken" in proc.stderr
        assert json.loads(proc.stdout)["error"].startswith("registry oci-local: another retention run")
        assert case.state() == before  # nothing deleted anywhere (all leases or none)
        assert not s3.list_objects_v2(Bucket=BUCKET, Prefix=f"archive/images/ecr-local/{case.prefix}").get(
            "Contents"
        )  # and nothing archived
    finally:
        holder.release()


# -- item 4: S3 failing mid-apply ------------------------------------------------------------------
def test_s3_failing_mid_apply_still_prints_the_summary_and_exits_1(work, tmp_path):
    """S3 refuses every write after the first deletions: the command still prints its JSON
    summary (what happened), exits 1, and every deletion's record is in its log."""
    case = Case(
        work, "s3down", lambda p: _wrapper(p, enabled=True), {"max_fraction_per_repository": 1.0},
        registries=("ecr",),
    )  # fmt: skip
    script = tmp_path / "s3_dies.py"
    script.write_text(
        "import sys\n"
        "from include.registry_ops.retention import executor\n"
        "real = executor._delete\n"
        "state = {'armed': False}\n"
        "def delete(registry, repository, digests):\n"
        "    result = real(registry, repository, digests)\n"
        "    state['armed'] = True\n"
        "    return result\n"
        "executor._delete = delete\n"
        "def refuse(params, **_):\n"
        "    if state['armed']:\n"
        "        raise ConnectionError('injected: S3 unreachable')\n"
        "from include.registry_ops.retention import jobs\n"
        "real_client = jobs.s3_client\n"
        "def client(config):\n"
        "    c = real_client(config)\n"
        "    c.meta.events.register('before-call.s3.PutObject', refuse)\n"
        "    return c\n"
        "jobs.s3_client = client\n"
        "from include.registry_ops.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), *case.args("--execute")],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["summary_key"] is None and "summary not written" in summary["summary_error"]
    assert summary["images_removed"] > 0 and summary["repositories_failed"]
    gone = [d for (_, d), here in case.state().items() if not here]
    assert len(gone) == summary["images_removed"]
    for digest in gone:
        assert digest in proc.stderr  # its record, logged at ERROR because S3 did not take it


# -- item 5: caps and strict booleans --------------------------------------------------------------
def test_a_policy_cannot_raise_the_config_cap(work):
    case = Case(work, "raise-cap", lambda p: _wrapper(p, enabled=True, max_fraction=1.0), {})
    before = case.state()
    proc = case.apply("--execute")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images_removed"] == 0 and len(summary["repositories_stopped"]) == 2
    assert "retention.max_fraction_per_repository" in proc.stderr
    assert case.state() == before


def test_per_policy_caps_are_enforced(work):
    frac = Case(
        work,
        "policy-frac",
        lambda p: _wrapper(p, enabled=True, max_fraction=0.1),
        {"max_fraction_per_repository": 1.0},
    )
    proc = frac.apply("--execute")
    assert proc.returncode == 1 and "policy max_fraction" in proc.stderr
    assert json.loads(proc.stdout)["images_removed"] == 0
    count = Case(
        work,
        "policy-count",
        lambda p: _wrapper(p, enabled=True, max_deletions=2),
        {"max_fraction_per_repository": 1.0},
    )
    before = count.state()
    proc = count.apply("--execute")
    assert proc.returncode == 1 and "over the policy's max_deletions of 2" in proc.stderr
    assert count.state() == before


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_enabled_must_be_a_real_boolean(work, value):
    case = Case(
        work, f"strict-{value}", lambda p: _wrapper(p, enabled=value), {"max_fraction_per_repository": 1.0}
    )
    before = case.state()
    proc = case.apply("--execute")
    assert proc.returncode == 2, proc.stderr
    assert "enabled" in proc.stderr and "boolean" in proc.stderr
    assert case.state() == before


# -- item 6: a plain ECR lifecycle file ------------------------------------------------------------
def test_a_plain_ecr_file_says_it_is_a_dry_run_and_can_be_enabled(work, tmp_path):
    case = Case(work, "plain", {"rules": [RULE]}, {"max_fraction_per_repository": 1.0})
    lifecycle = tmp_path / "lifecycle.json"
    lifecycle.write_text(case.policy.read_text())
    case.policy = lifecycle  # the policy inside is named after the file: "lifecycle"
    before = case.state()
    proc = case.apply("--execute")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images_removed"] == 0 and summary["would_remove_images"] > 0
    assert "every policy with actions is a dry run" in proc.stderr and "'lifecycle'" in proc.stderr
    assert summary["warnings"] and "--enable-policy" in summary["warnings"][0]
    assert case.state() == before

    proc = case.apply("--execute", "--enable-policy", "nope")
    assert proc.returncode == 2 and "no such policy" in proc.stderr and "'lifecycle'" in proc.stderr

    proc = case.apply("--execute", "--enable-policy", "lifecycle")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images_removed"] > 0 and "dry run" not in proc.stderr


def test_the_config_can_enable_a_plain_ecr_file(work, tmp_path):
    case = Case(
        work,
        "plain-config",
        {"rules": [RULE]},
        {"max_fraction_per_repository": 1.0, "enable_policies": ["lifecycle"]},
    )
    lifecycle = tmp_path / "lifecycle.json"
    lifecycle.write_text(case.policy.read_text())
    case.policy = lifecycle
    proc = case.apply("--execute")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images_removed"] > 0


# -- items 11 and 12: requests and log volume ------------------------------------------------------
def test_ecr_requests_at_the_archive_floor_and_one_log_line_per_repository(work, tmp_path):
    case = Case(
        work,
        "floor",
        lambda p: _wrapper(p, enabled=True),
        {"max_fraction_per_repository": 1.0},
        registries=("ecr",),
    )
    script = tmp_path / "count.py"
    script.write_text(
        "import collections, json, sys\n"
        "from include.registry_ops.registries import ecr\n"
        "counts = collections.Counter()\n"
        "real_init = ecr.EcrRegistry.__init__\n"
        "def init(self, *a, **kw):\n"
        "    real_init(self, *a, **kw)\n"
        "    count = lambda event_name, **_: counts.update([event_name.rsplit('.', 1)[-1]])\n"
        "    self.client.meta.events.register('before-send.ecr.*', count)\n"
        "ecr.EcrRegistry.__init__ = init\n"
        "from include.registry_ops.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('ECR-REQUESTS ' + json.dumps(counts), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), *case.args("--execute")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    n = summary["images_removed"]
    assert n > 3
    counts = json.loads(proc.stderr.split("ECR-REQUESTS ", 1)[1])
    # the fresh look is the archive's BatchGetImage read: no ListImages, one read and one delete per 100
    assert counts.get("ListImages", 0) == 0
    assert counts["BatchGetImage"] == -(-n // 100) and counts["BatchDeleteImage"] == -(-n // 100)
    lines = [
        line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("ECR-REQUESTS")
    ]
    assert len(lines) <= 3, "\n".join(lines)  # no line per image without -v
    assert not any(d in proc.stderr for d in [m.digest for m in case.fleet[0].manifests])


def test_verbose_gives_one_info_line_per_repository(work):
    case = Case(work, "verbose", lambda p: _wrapper(p, enabled=True), {"max_fraction_per_repository": 1.0})
    proc = run("-v", *case.args("--execute"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    repo_lines = [line for line in proc.stderr.splitlines() if case.prefix in line and "retention:" in line]
    assert len(repo_lines) >= 2  # one per registry's repository ...
    assert len(proc.stderr.splitlines()) < summary["images_removed"]  # ... not one per image
    assert "removed" in proc.stderr  # and the totals


# -- item 10, wired: an executing run compacts the digest index ---------------------------------
def test_an_executed_run_compacts_the_archive_index_for_restores_by_digest(work, s3):
    from include.registry_ops.retention.archive import ArchiveStore

    case = Case(work, "index", lambda p: _wrapper(p, enabled=True), {"max_fraction_per_repository": 1.0})
    proc = case.apply("--execute")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["archive_index"] is not None
    gone = [d for (_, d), here in case.state().items() if not here]
    store = ArchiveStore(s3, BUCKET, "archive/")
    assert not store.s3.list_objects_v2(
        Bucket=BUCKET, Prefix="archive/index/pending/oci-local/" + case.prefix
    ).get("Contents")  # merged
    found = store.search(None, None, digest=gone[0])
    assert found.via_index and found.hits and found.hits[0]["digest"] == gone[0]
