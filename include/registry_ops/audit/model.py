"""The declared access model: which principals may pull, push, delete or administer which
repositories, which IAM users and roles are CI's service accounts, and which other accounts'
principals may be named by repository policies.

A YAML file referenced from the config (``audit.model``)::

    service_accounts: [user/ci-pusher, role/github-actions-*]
    grants:
      - principals: [role/deployer, group/developers]
        repositories: ["prod/*"]
        capabilities: [pull]
      - principals: [user/ci-pusher]
        repositories: ["prod/*", "staging/*"]
        capabilities: [pull, push]
        required: true          # model-missing when the account does not grant it
        registries: [ecr-prod]  # default: every audited registry
    cross_account:
      - principal: "210987654321"   # an account (all its principals) or one ARN
        repositories: ["prod/*"]
        capabilities: [pull]
        reason: the production EKS account pulls its images

Principals are ``user/NAME``, ``role/NAME``, ``group/NAME`` (the group's users) or
``service/NAME`` (a service principal a repository policy names), names with ``*`` and ``?``;
or an ARN. Repository globs use ``*`` and ``?`` over the characters of ECR repository names.
Anything else fails with the file, the key and the problem, before AWS is asked anything.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from ..config import Config, ConfigError, _loc
from .catalog import CAPABILITY_NAMES
from .policy import normalize_principal
from .scope import Row, account_of, root_of

REPO_GLOB = re.compile(r"^[a-z0-9._/*?-]+$")
NAME_GLOB = r"[\w+=,.@*?/-]+"
PRINCIPAL = re.compile(rf"^(user|role|group|service)/{NAME_GLOB}$")
ARN = re.compile(r"^arn:aws[\w-]*:(iam|sts)::(\d{12}|\*):[\w+=,.@*?/-]+$")
ACCOUNT = re.compile(r"^\d{12}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _capabilities(value: list[str]) -> list[str]:
    for cap in value:
        if cap not in CAPABILITY_NAMES:
            raise ValueError(f"unknown capability {cap!r} (known: {', '.join(CAPABILITY_NAMES)})")
    return value


def _repo_globs(value: list[str]) -> list[str]:
    for glob in value:
        if not REPO_GLOB.match(glob) or "//" in glob or glob.startswith("/"):
            raise ValueError(
                f"bad repository glob {glob!r}: use * and ? over lowercase letters, digits and . _ - /"
            )
    return value


def _principal(value: str) -> str:
    if not (PRINCIPAL.match(value) or ARN.match(value)):
        raise ValueError(
            f"bad principal {value!r}: give user/NAME, role/NAME, group/NAME or service/NAME "
            "(NAME may hold * and ?) or an IAM ARN"
        )
    return value


class Grant(_Strict):
    principals: list[str] = Field(min_length=1)
    repositories: list[str] = Field(min_length=1)
    capabilities: list[str] = Field(min_length=1)
    registries: list[str] | None = Field(None, min_length=1)
    required: StrictBool = False

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        return _capabilities(value)

    @field_validator("repositories")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        return _repo_globs(value)

    @field_validator("principals")
    @classmethod
    def _principals(cls, value: list[str]) -> list[str]:
        return [_principal(p) for p in value]


class CrossAccount(_Strict):
    principal: str
    repositories: list[str] = Field(min_length=1)
    capabilities: list[str] = Field(min_length=1)
    reason: str = Field(min_length=3)
    registries: list[str] | None = Field(None, min_length=1)

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        return _capabilities(value)

    @field_validator("repositories")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        return _repo_globs(value)

    @field_validator("principal")
    @classmethod
    def _account_or_arn(cls, value: str) -> str:
        if not (ACCOUNT.match(value) or ARN.match(value)):
            raise ValueError(f"bad principal {value!r}: give a 12-digit account id or an IAM ARN")
        return normalize_principal(value)


class AccessModel(_Strict):
    service_accounts: list[str] = Field(default_factory=list)
    grants: list[Grant] = Field(default_factory=list)
    cross_account: list[CrossAccount] = Field(default_factory=list)
    source: str = "<memory>"

    @field_validator("service_accounts")
    @classmethod
    def _service_accounts(cls, value: list[str]) -> list[str]:
        for ref in value:
            if not (ref.startswith(("user/", "role/")) and PRINCIPAL.match(ref)) and not ARN.match(ref):
                raise ValueError(f"bad service account {ref!r}: give user/NAME, role/NAME or an IAM ARN")
        return value

    # -- matching ----------------------------------------------------------------------------
    def is_service_account(self, row: Row) -> bool:
        return any(names(ref, row) for ref in self.service_accounts)

    def allows(self, row: Row, registry: str, repository: str, capability: str) -> bool:
        for g in self.grants:
            if (
                capability in g.capabilities
                and _in(registry, g.registries)
                and _repo(repository, g.repositories)
                and any(names(p, row) for p in g.principals)
            ):
                return True
        return any(
            capability in c.capabilities
            and _in(registry, c.registries)
            and _repo(repository, c.repositories)
            and cross_names(c.principal, row)
            for c in self.cross_account
        )

    def allowlisted(self, row: Row) -> CrossAccount | None:
        """The cross-account entry naming this principal (any repository), if any."""
        return next((c for c in self.cross_account if cross_names(c.principal, row)), None)


def _in(registry: str, registries: list[str] | None) -> bool:
    return registries is None or registry in registries


def _repo(repository: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(repository, g) for g in globs)


def names(ref: str, row: Row) -> bool:
    """Does a model principal reference name this row (a group: any of the user's groups)?"""
    if ref.startswith("arn:"):
        return fnmatch.fnmatchcase(row.arn, ref)
    kind, _, glob = ref.partition("/")
    if kind == "group":
        return row.kind == "user" and any(fnmatch.fnmatchcase(g, glob) for g in row.groups)
    if kind == "service":
        return row.kind == "service" and fnmatch.fnmatchcase(row.arn, glob)
    return row.kind == kind and fnmatch.fnmatchcase(row.name, glob)


def cross_names(principal: str, row: Row) -> bool:
    """An allowlist principal: an account root names every principal of that account."""
    root = root_of(principal)
    if root is not None:
        return account_of(row.arn) == root
    return fnmatch.fnmatchcase(row.arn, principal)


def parse_model(data: Any, source: str) -> AccessModel:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return AccessModel.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = [f"{source}: {_loc(e['loc'])}: {_message(e)}" for e in exc.errors()]
    raise ConfigError("invalid access model\n  " + "\n  ".join(problems))


def _message(error: Any) -> str:
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def model_path(config: Config) -> Path | None:
    if not config.audit.model:
        return None
    path = Path(config.audit.model)
    if not path.is_absolute() and config.source not in ("", "<memory>"):
        path = Path(config.source).parent / path
    return path


def load_model(config: Config) -> AccessModel | None:
    """The model the config names (None when it names none); ConfigError naming file, key, problem."""
    path = model_path(config)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the access model (audit.model): {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_model(data, str(path))
