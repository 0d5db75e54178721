"""The runbooks in docs/runbooks/: every command they give exists (``registry-ops`` lines parse
with the real parser, ``aws`` lines name a real operation and real parameters of it in
botocore's models, the ones awscli is generated from), and the rotation-by-hand and leaked-key
runbooks, run command by command in their order on the local stack, do what they say.

``aws`` lines are run as the same API call through boto3 (awscli is not installed here);
lines marked ``# not on the local stack`` or ``# only if ...`` are checked, not run."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore import xform_name

from include.registry_ops.cli import build_parser, main

from .conftest import CONN_ID, REGION, Aws, Reg, make_config

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
NAMES = ["rotate-registry-credentials.md", "revoke-leaked-key.md", "answer-audit-finding.md"]
AWS_GLOBAL = {"--query", "--output", "--region", "--profile", "--no-cli-pager"}
SKIP = re.compile(r"\s+#\s*(not on the local stack|only if .*)$")


def sections(name: str) -> dict[str, list[tuple[str, bool]]]:
    """heading -> [(command, to be run)] from the ``sh`` blocks, in order; inline code spans
    that are commands go under ``inline`` (checked only)."""
    text = (RUNBOOKS / name).read_text(encoding="utf-8")
    out: dict[str, list[tuple[str, bool]]] = {"inline": []}
    heading = "top"
    in_block = False
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("```"):
            in_block = line.strip() == "```sh"
        elif in_block:
            command = line.strip()
            if not command or command.startswith(("#", "export ")):
                continue
            skipped = SKIP.search(command)
            command = SKIP.sub("", command)
            out.setdefault(heading, []).append((command, not skipped))
        else:
            for span in re.findall(r"`((?:registry-ops|aws) [^`]+)`", line):
                out["inline"].append((span, False))
    return out


def all_commands(name: str) -> list[str]:
    return [c for cmds in sections(name).values() for c, _ in cmds]


def _argv(command: str, env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$([A-Z_]+)", lambda m: env.get(m.group(1), "x"), a) for a in shlex.split(command)]


def _aws_call(argv: list[str]) -> tuple[str, str, dict[str, str]]:
    """(service, operation name, parameters) of an ``aws SERVICE OP --opt value ...`` line."""
    service, op, rest = argv[1], argv[2], argv[3:]
    model = botocore.session.get_session().get_service_model(service)
    by_cli = {xform_name(name, "-"): name for name in model.operation_names}
    assert op in by_cli, f"aws {service} {op}: no such operation"
    operation = model.operation_model(by_cli[op])
    members = {xform_name(m, "-"): m for m in operation.input_shape.members}
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        opt = rest[i]
        assert opt.startswith("--"), f"{' '.join(argv)}: {opt!r} is not an option"
        value = rest[i + 1] if i + 1 < len(rest) and not rest[i + 1].startswith("--") else None
        i += 2 if value is not None else 1
        if opt in AWS_GLOBAL:
            continue
        assert opt[2:] in members, f"aws {service} {op}: no option {opt} (has {sorted(members)})"
        params[members[opt[2:]]] = value
    missing = set(operation.input_shape.required_members) - set(params)
    assert not missing, f"aws {service} {op}: required {sorted(missing)} missing"
    return service, by_cli[op], params


@pytest.mark.parametrize("name", NAMES)
def test_every_command_of_the_runbook_exists(name):
    commands = all_commands(name)
    assert len(commands) >= 5, commands
    parser = build_parser()
    for command in commands:
        argv = _argv(command, {"UNTIL": "2030-01-01", "DELETE_AFTER": "2030-01-01T00:00:00+00:00"})
        if argv[0] == "registry-ops":
            try:
                parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{name}: {command!r} does not parse")
        else:
            assert argv[0] == "aws", command
            _aws_call(argv)


# -- running them ----------------------------------------------------------------------------------
class Runner:
    """Runs a runbook's commands in order: ``registry-ops`` in this process, ``aws`` as boto3."""

    def __init__(self, aws: Aws, capfd: Any, env: dict[str, str], dynamic: dict[str, Callable[[], str]]):
        self.aws, self.capfd, self.env, self.dynamic = aws, capfd, env, dynamic
        self.outputs: list[tuple[str, int, str]] = []

    def run(self, name: str, *headings: str) -> list[tuple[str, int, str]]:
        found = sections(name)
        done = []
        for prefix in headings:
            (heading,) = [h for h in found if h.startswith(prefix)]
            for command, runnable in found[heading]:
                if runnable:
                    done.append(self.one(command))
        return done

    def one(self, command: str) -> tuple[str, int, str]:
        env = {**self.env, **{k: f() for k, f in self.dynamic.items() if f"${k}" in command}}
        argv = _argv(command, env)
        if argv[0] == "registry-ops":
            code = main(argv[1:])
            out, err = self.capfd.readouterr()
        else:
            service, op, params = _aws_call(argv)
            answer = getattr(self.aws.client(service), xform_name(op))(**params)
            code, out, err = 0, json.dumps(answer, default=str), ""
        assert code == 0, f"{command}: exit {code}\n{err[-2000:]}"
        self.outputs.append((command, code, out))
        return command, code, out


def active_column(table: str, user: str) -> list[str]:
    """``audit keys --format table``: the ``active`` cell of each of the user's keys, sorted."""
    header, *rows = table.splitlines()
    column = header.split().index("active")
    return sorted(r.split()[column] for r in rows if r.split()[1:2] == [user])


def result_of(out: str) -> dict[str, Any]:
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


@pytest.fixture
def stack(aws: Aws, reg: Reg, tmp_path):
    """A config with one CI service account, one htpasswd user and the account's ECR registry
    (``audit keys`` reads the account through it)."""
    account = aws.service_account()
    config = make_config(
        [account],
        directory=tmp_path,
        registries=[{"name": "ecr-rot", "kind": "ecr", "conn_id": CONN_ID, "region": REGION}],
        htpasswd=[reg.entry()],
    )
    doc = yaml.safe_load(Path(config.source).read_text())
    doc["audit"] = {"report_wait_seconds": 5}
    Path(config.source).write_text(yaml.safe_dump(doc))
    env = {"CONFIG": config.source, "CI_USER": account.user, "HTPASSWD_USER": reg.user}
    return account, env


def _delete_after(aws: Aws, account) -> str:
    (when,) = [v for k, v in aws.tags(account.user).items() if k.startswith("registry-ops:deactivated:")]
    from datetime import datetime

    return (datetime.fromisoformat(when) + timedelta(days=7)).isoformat()


def _version(aws: Aws, account, label: str) -> str:
    return next(v for v, s in aws.stages(account.secret_id).items() if label in s)


def test_rotate_by_hand_runbook(aws, reg, stack, capfd):
    account, env = stack
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    runner = Runner(aws, capfd, env, {"DELETE_AFTER": lambda: _delete_after(aws, account)})
    book = "rotate-registry-credentials.md"

    (plan,) = runner.run(book, "1.")
    assert result_of(plan[2])["accounts"][0]["status"] == "planned"
    (rotated,) = runner.run(book, "2.")
    record = result_of(rotated[2])["accounts"][0]
    new = record["current_key"]
    assert record["status"] == "rotated" and new != old and aws.works(account)
    audit_keys, again = runner.run(book, "3.")
    assert active_column(audit_keys[2], account.user) == ["False", "True"]  # old inactive, new active
    assert result_of(again[2])["accounts"][0]["steps"] == []
    (deleted,) = runner.run(book, "4.")
    assert [s["step"] for s in result_of(deleted[2])["accounts"][0]["steps"]] == ["delete"]
    assert aws.keys(account.user) == {new: True}
    plan_pw, rotate_pw = runner.run(book, "5.")
    assert result_of(plan_pw[2])["accounts"][0]["status"] == "planned"
    assert result_of(rotate_pw[2])["accounts"][0]["status"] == "rotated"
    assert reg.status(aws.labelled(reg.secret_id, "AWSCURRENT")["password"]) == 200
    assert reg.status(reg.first) == 401


def test_rotate_by_hand_runbook_roll_back(aws, stack, capfd):
    account, env = stack
    old = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    dynamic = {
        "OLD_KEY": lambda: aws.labelled(account.secret_id, "AWSPREVIOUS")["AccessKeyId"],
        "PREVIOUS_VERSION": lambda: _version(aws, account, "AWSPREVIOUS"),
        "CURRENT_VERSION": lambda: _version(aws, account, "AWSCURRENT"),
    }
    runner = Runner(aws, capfd, env, dynamic)
    book = "rotate-registry-credentials.md"
    runner.run(book, "2.")
    new = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    *_, plan = runner.run(book, "Roll back")
    assert aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"] == old and aws.works(account)
    steps = result_of(plan[2])["accounts"][0]["steps"]
    assert [(s["step"], s["target"]) for s in steps] == [("deactivate", new)]


def test_revoke_leaked_key_runbook(aws, reg, stack, capfd):
    account, env = stack
    leaked = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    runner = Runner(aws, capfd, {**env, "LEAKED_KEY": leaked}, {})
    book = "revoke-leaked-key.md"

    runner.run(book, "1.")
    assert aws.keys(account.user) == {leaked: False} and not aws.works(account)
    (rotated,) = runner.run(book, "2.")
    assert result_of(rotated[2])["accounts"][0]["status"] == "rotated" and aws.works(account)
    new = aws.labelled(account.secret_id, "AWSCURRENT")["AccessKeyId"]
    _, tidy = runner.run(book, "3.")
    assert aws.keys(account.user) == {new: True} and aws.tags(account.user) == {}
    assert result_of(tidy[2])["accounts"][0]["status"] == "current"
    audit_keys, plan = runner.run(book, "4.")
    assert active_column(audit_keys[2], account.user) == ["True"]  # one key, active
    assert result_of(plan[2])["accounts"][0]["steps"] == []
    (password,) = runner.run(book, "A leaked registry")
    assert result_of(password[2])["accounts"][0]["status"] == "rotated"
    assert reg.status(reg.first) == 401
    assert os.environ.get("AIRFLOW_CONN_ROTATION_TEST")  # every command went through the connection
