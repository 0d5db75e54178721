"""Each backup/DR runbook's commands, in the order the runbook gives them, on the local stack with
the fault the runbook is for injected: the commands exist, take the flags written, and do what
the runbook says they do.

Commands are the ``registry-ops`` lines of the runbook's ``sh`` blocks (the runbook's variables
come from its ``export`` line, values set here), the config in ``$REGISTRY_OPS_CONFIG``. Bash
reads each line (quoting, variables, comments) and hands its argv to ``cli.main`` in this
process, in the runbook's working directory and environment: a process per command paid a
Python and Airflow start-up (seconds) each. The first backup of
test_restore_registry_after_disaster runs as the console script of this venv under bash, and a
line with more shell than words (a pipe, a redirection) runs so too. A trailing ``# exit 1`` (or
``# exit 0 or 2``) is the exit the runbook announces; otherwise 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.seed import seed_oci
from devstack.services import RegistryService
from include.registry_ops.registries.base import NotFound
from include.registry_ops.registries.oci import OciRegistry
from tests import cli_in_process
from tests.backup.test_backup_support import bk_bucket, fleet_of, unique  # noqa: F401 - fixture
from tests.conftest import OCI_PASSWORD, OCI_USER

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
BIN = Path(sys.executable).parent
# the backup and DR runbooks (the access ones are run by tests/rotation)
BACKUP_RUNBOOKS = (
    "restore-registry-after-disaster.md",
    "restore-deleted-image.md",
    "failed-drill.md",
    "backup-not-completed.md",
)
EXIT = re.compile(r"#\s*exit\s+([\d\s,or]+)")


def blocks(name: str) -> list[list[tuple[str, set[int]]]]:
    """The runbook's ``sh`` blocks: per block its ``registry-ops`` commands with their exits."""
    text = (RUNBOOKS / name).read_text(encoding="utf-8")
    out = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        commands = []
        for line in body.splitlines():
            line = line.strip()
            if not line.startswith("registry-ops "):
                continue
            m = EXIT.search(line)
            codes = {int(c) for c in re.findall(r"\d+", m.group(1))} if m else {0}
            commands.append((line, codes))
        if commands:
            out.append(commands)
    return out


def exports(name: str) -> list[str]:
    text = (RUNBOOKS / name).read_text(encoding="utf-8")
    return [
        n
        for line in re.findall(r"^export (.+?)(?:\s+#.*)?$", text, re.M)
        for n in re.findall(r"(\w+)=", line)
    ]


# what bash would do more with than split words and expand variables: such a line runs in bash
SHELL_WORK = re.compile(r"[|;&<>`()]")


def run_block(
    block: list[tuple[str, set[int]]], env: dict[str, str], capfd: pytest.CaptureFixture[str] | None = None
) -> list[str]:
    """Run the block's commands, each checked against its announced exit; their stdouts. With
    ``capfd`` a plain command runs in process (see the module's docstring), else in bash."""
    outs = []
    for command, codes in block:
        if capfd is None or SHELL_WORK.search(re.sub(r"\s#.*$", "", command)):
            proc = subprocess.run(
                ["bash", "-c", command],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                cwd=env["WORKDIR"],
            )
        else:
            proc = _in_process(command, env, capfd)
        assert proc.returncode in codes, f"{command}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        outs.append(proc.stdout)
    return outs


def _argv(command: str, env: dict[str, str]) -> list[str]:
    """The arguments bash gives ``registry-ops`` for this line (a function prints them)."""
    script = 'registry-ops() { printf "%s\\0" "$@"; }\n' + command
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, check=True, timeout=60)
    return out.stdout.decode().split("\0")[:-1]


@contextlib.contextmanager
def _process_state(env: dict[str, str], cwd: str) -> Iterator[None]:
    """This process's environment and working directory as the command's, then put back."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def _in_process(
    command: str, env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    argv = _argv(command, env)
    with _process_state(env, env["WORKDIR"]):
        return cli_in_process.run(capfd, argv)


@pytest.fixture
def stack(moto_server, s3, bk_bucket, tmp_path, smtp_server, capfd):  # noqa: F811
    """A registry of its own (its storage can be wiped), a layout DR target, a config, a bucket."""
    (tmp_path / "registry").mkdir()
    service = RegistryService(tmp_path / "registry", OCI_USER, OCI_PASSWORD).start()
    conn = service.conn_json()
    reg = OciRegistry("oci-rb", service.url, OCI_USER, OCI_PASSWORD)
    config = tmp_path / "registry-ops.yaml"
    (tmp_path / "dr").mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "oci-rb", "kind": "oci", "conn_id": "oci_rb"},
                    {"name": "dr-layout", "kind": "ocilayout", "path": str(tmp_path / "dr")},
                ],
                "storage": {"conn_id": "aws_default", "bucket": bk_bucket},
                "backup": {"registries": ["oci-rb"]},
                "dr": {"target": "dr-layout", "email": False},
            }
        )
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "REGISTRY_OPS_CONFIG": str(config),
        "AIRFLOW_CONN_OCI_RB": conn,
        "WORKDIR": str(tmp_path),
    }
    yield {
        "service": service,
        "reg": reg,
        "env": env,
        "tmp": tmp_path,
        "s3": s3,
        "bucket": bk_bucket,
        "capfd": capfd,
    }
    service.stop()


def _seed(reg: OciRegistry) -> dict[str, dict[str, str]]:
    """A small fleet pushed through the registry API; {repository: {tag: digest}}."""
    fleet = fleet_of(unique("rb"), repositories=2, images=8)
    seed_oci(reg, fleet)
    return {r.name: _tags(reg, r.name) for r in fleet}


def _tags(reg: OciRegistry, repository: str) -> dict[str, str]:
    """{tag: digest} of the repository now ({} when the registry does not know it)."""
    try:
        tags = reg.list_tags(repository)
    except NotFound:
        return {}
    return {t: reg.head_manifest(repository, t).digest for t in tags}


def _backup(env: dict[str, str], capfd: pytest.CaptureFixture[str] | None = None) -> None:
    run_block([("registry-ops backup run --mode full", {0})], env, capfd)


def test_the_runbooks_name_their_variables_and_every_command_exists():
    from include.registry_ops.cli import build_parser

    parser = build_parser()
    for name in BACKUP_RUNBOOKS:
        assert blocks(name), f"{name}: no commands"
        used = {v for block in blocks(name) for command, _ in block for v in re.findall(r"\$(\w+)", command)}
        assert used <= set(exports(name)) | {"REGISTRY_OPS_CONFIG"}, (name, used)
        for block in blocks(name):
            for command, _ in block:
                argv = re.sub(r"#.*$", "", command).split()[1:]
                try:
                    parser.parse_args([a.strip('"') for a in argv])
                except SystemExit as exc:  # argparse's exit on an unknown flag or command
                    pytest.fail(f"{name}: {command!r} does not parse (exit {exc.code})")


def test_restore_registry_after_disaster(stack):
    env = {**stack["env"], "REGISTRY": "oci-rb"}
    before = _seed(stack["reg"])
    _backup(env)
    # the disaster: the registry's storage is wiped and the registry restarted empty
    stack["service"].stop()
    shutil.rmtree(stack["tmp"] / "registry" / "data")
    stack["service"].start()
    assert {r: _tags(stack["reg"], r) for r in before} == {r: {} for r in before}
    look, dry, restore, confirm = blocks("restore-registry-after-disaster.md")
    run_block(look, env, stack["capfd"])  # backup list, backup verify latest
    run_block(dry, env, stack["capfd"])
    assert {r: _tags(stack["reg"], r) for r in before} == {r: {} for r in before}  # dry run wrote nothing
    first, again = run_block(restore, env, stack["capfd"])  # restore, then the rerun
    assert json.loads(first)["failures"] == {} and json.loads(first)["manifests"] > 0
    assert json.loads(again)["manifests"] == 0 and json.loads(again)["blobs"] == 0  # nothing twice
    assert {r: _tags(stack["reg"], r) for r in before} == before
    run_block(confirm, env, stack["capfd"])  # inventory, a new backup
    assert (stack["tmp"] / "restored-inventory.json").is_file()


def test_restore_deleted_image(stack):
    before = _seed(stack["reg"])
    _backup(env := stack["env"], stack["capfd"])
    repository, (tag, digest) = next(iter(before.items()))[0], next(iter(next(iter(before.values())).items()))
    stack["reg"].delete_images(repository, [digest])  # deleted by hand
    assert tag not in _tags(stack["reg"], repository)
    env = {**env, "REGISTRY": "oci-rb", "REPOSITORY": repository, "DIGEST": digest}
    archive, backup = blocks("restore-deleted-image.md")
    # not in the archive: restore says so (exit 2), as the runbook expects
    run_block(archive, env, stack["capfd"])
    run_block(backup, env, stack["capfd"])
    assert _tags(stack["reg"], repository) == before[repository]


def test_failed_drill(stack):
    before = _seed(stack["reg"])
    env = {**stack["env"], "DR_TARGET": "dr-layout"}
    _backup(env, stack["capfd"])
    # the fault: one layer in the store damaged
    s3, bucket = stack["s3"], stack["bucket"]
    layer_key = next(
        o["Key"]
        for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="archive/blobs/")
        for o in p.get("Contents", [])
    )
    s3.put_object(Bucket=bucket, Key=layer_key, Body=b"rotten")
    reproduce, clean, repair, again = blocks("failed-drill.md")
    run_block(reproduce, env, stack["capfd"])  # exit 1
    run_block(clean, env, stack["capfd"])
    run_block(repair, env, stack["capfd"])  # verify --quarantine (exit 1), full backup, verify (exit 0)
    run_block(again, env, stack["capfd"])  # the drill passes
    assert before  # the fleet the drill checked


def test_backup_not_completed(stack):
    _seed(stack["reg"])
    env = stack["env"]
    _backup(env, stack["capfd"])
    look, cause, fix = blocks("backup-not-completed.md")
    run_block(look, env, stack["capfd"])
    stack["service"].stop()  # the fault: the registry does not answer
    try:
        outs = run_block(cause, env, stack["capfd"])  # dry run 0, run 1 naming the registry
        assert "oci-rb" in outs[1]
    finally:
        stack["service"].start()  # the fix
    run_block(fix, env, stack["capfd"])
