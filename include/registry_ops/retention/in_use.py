"""Images in use: references from ECS task definitions, services and running tasks, Lambda
functions (container images), and a user-supplied list.

Users' first request is "never delete what running workloads use" (aws/containers-roadmap#1078).
ECR lifecycle policies cannot see workloads, so the planner takes the set of references found
here and keeps every image it names: by digest (``repo@sha256:...`` or a bare digest, which
protects that digest in every repository) or by tag (``repo:tag``, the image the tag points at
now). Registry hosts are ignored when matching, which can only protect more, never less.

Discovery failures raise :class:`InUseError`: a plan without the in-use set must not delete.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class InUseError(RuntimeError):
    """A workload API could not be read; planning deletes without it would be unsafe."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference; ``repository`` is empty for a bare digest."""

    raw: str
    host: str | None
    repository: str
    tag: str | None
    digest: str | None


def parse_reference(ref: str) -> ImageRef | None:
    """``[host/]repo[:tag][@sha256:...]`` or a bare ``sha256:...``; None when not a valid reference."""
    text = ref.strip()
    if DIGEST.match(text):
        return ImageRef(ref, None, "", None, text)
    name, digest = text, None
    if "@" in text:
        name, digest = text.rsplit("@", 1)
        if not DIGEST.match(digest):
            return None
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not TAG.match(tag):
            return None
    host = None
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    if not REPOSITORY.match(name):
        return None
    if tag is None and digest is None:
        tag = "latest"  # what a runtime pulls for a bare name
    return ImageRef(ref, host, name, tag, digest)


@dataclass
class InUseIndex:
    """Lookup tables the planner uses: digest -> [(repository or '', ref)], tag -> [(repository, ref)]."""

    digests: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    tags: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    skipped: list[str] = field(default_factory=list)


def index_references(refs: Iterable[str]) -> InUseIndex:
    index = InUseIndex()
    for raw in sorted(set(refs)):
        ref = parse_reference(raw)
        if ref is None:
            index.skipped.append(raw)
            continue
        if ref.digest:
            index.digests[ref.digest].append((ref.repository, raw))
        if ref.tag:
            index.tags[ref.tag].append((ref.repository, raw))
    if index.skipped:
        log.warning(
            "in-use: %d reference(s) are not image references: %s", len(index.skipped), index.skipped[:5]
        )
    return index


@dataclass
class InUse:
    """References found and where each was found (for the plan's reasons and audit)."""

    sources: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, ref: str | None, source: str) -> None:
        if ref:
            self.sources[ref].add(source)

    @property
    def refs(self) -> set[str]:
        return set(self.sources)

    def merge(self, other: InUse) -> InUse:
        for ref, srcs in other.sources.items():
            self.sources[ref] |= srcs
        return self


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:  # botocore ClientError/BotoCoreError; anything else is as fatal
        raise InUseError(f"in-use discovery: {what} failed: {exc}") from exc


def _pages(client: Any, op: str, key: str, **kwargs: Any) -> Iterator[Any]:
    try:
        for page in client.get_paginator(op).paginate(**kwargs):
            yield from page.get(key, [])
    except Exception as exc:
        raise InUseError(f"in-use discovery: {op} failed: {exc}") from exc


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def ecs_references(ecs: Any, *, active_revisions: bool = True, tasks: bool = True) -> InUse:
    """Images of ACTIVE task definitions (every revision can be rolled back to), of the task
    definitions services run (even deregistered ones) and of running tasks (with the digest
    the agent resolved, which pins mutable tags)."""
    found = InUse()
    seen: set[str] = set()

    def task_definition(arn: str, source: str) -> None:
        if arn in seen:
            return
        seen.add(arn)
        td = _call(f"describe_task_definition({arn})", ecs.describe_task_definition, taskDefinition=arn)
        for c in td["taskDefinition"].get("containerDefinitions", []):
            found.add(c.get("image"), f"{source} {arn}")

    if active_revisions:
        for arn in _pages(ecs, "list_task_definitions", "taskDefinitionArns", status="ACTIVE"):
            task_definition(arn, "ecs task definition")
    for cluster in _pages(ecs, "list_clusters", "clusterArns"):
        services = list(_pages(ecs, "list_services", "serviceArns", cluster=cluster))
        for batch in _chunks(services, 10):
            resp = _call("describe_services", ecs.describe_services, cluster=cluster, services=batch)
            for svc in resp.get("services", []):
                arns = {svc.get("taskDefinition")} | {
                    d.get("taskDefinition") for d in svc.get("deployments", [])
                }
                for arn in sorted(a for a in arns if a):
                    task_definition(arn, f"ecs service {svc.get('serviceName')}: task definition")
        if not tasks:
            continue
        running = list(_pages(ecs, "list_tasks", "taskArns", cluster=cluster, desiredStatus="RUNNING"))
        for batch in _chunks(running, 100):
            resp = _call("describe_tasks", ecs.describe_tasks, cluster=cluster, tasks=batch)
            for task in resp.get("tasks", []):
                for c in task.get("containers", []):
                    image, digest = c.get("image"), c.get("imageDigest")
                    found.add(image, f"ecs task {task.get('taskArn')}")
                    if image and digest:
                        ref = parse_reference(image)
                        if ref:
                            where = f"{ref.host}/" if ref.host else ""
                            found.add(f"{where}{ref.repository}@{digest}", f"ecs task {task.get('taskArn')}")
    return found


def lambda_references(lam: Any) -> InUse:
    """Container-image Lambda functions, every published version: ``ImageUri`` (as deployed)
    and ``ResolvedImageUri`` (the digest Lambda pinned)."""
    found = InUse()
    for fn in _pages(lam, "list_functions", "Functions", FunctionVersion="ALL"):
        if fn.get("PackageType") != "Image":
            continue
        arn = fn["FunctionArn"]
        version = fn.get("Version") or "$LATEST"
        kwargs = {"FunctionName": fn["FunctionName"]}
        if version != "$LATEST":  # name + qualifier: moto's server does not route "$LATEST" in an ARN
            kwargs["Qualifier"] = version
        code = _call(f"get_function({arn})", lam.get_function, **kwargs).get("Code", {})
        found.add(code.get("ImageUri"), f"lambda {arn}")
        found.add(code.get("ResolvedImageUri"), f"lambda {arn}")
    return found


def user_references(lines: Iterable[str] | str | Path, source: str = "user list") -> InUse:
    """A user list: one reference per line; blank lines and ``#`` comments ignored."""
    if isinstance(lines, (str, Path)):
        path = Path(lines)
        source = str(path)
        lines = path.read_text(encoding="utf-8").splitlines()
    found = InUse()
    for line in lines:
        ref = line.split("#", 1)[0].strip()
        found.add(ref or None, source)
    return found


def collect_in_use(ecs: Any = None, lambda_client: Any = None, extra: Iterable[str] = ()) -> InUse:
    """Everything in use: ECS and Lambda (when their clients are given) plus ``extra`` references."""
    found = InUse()
    if ecs is not None:
        found.merge(ecs_references(ecs))
    if lambda_client is not None:
        found.merge(lambda_references(lambda_client))
    found.merge(user_references(list(extra)))
    return found
