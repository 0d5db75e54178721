"""When a multi-arch index expires, which of its children go with it (planner_graph.py).

The reproduction is the ``docker manifest`` release workflow: each architecture is pushed with its
own tag (``v1.2.3-amd64``, ``v1.2.3-arm64``), then ``docker manifest create/push`` makes the index
``v1.2.3``. A release rule that selects ``vX.Y.Z`` expires old indexes; the per-arch images carry
tags of their own, so only rules that select *them* may expire them: "children follow their index"
is for untagged children only (docs/retention-policies.md §5). A child somebody tagged ``latest``
by digest (``crane tag app@sha256:… latest``) is the same case, and protections (protected tags,
in use by digest, pulled recently) keep a child whatever happens to its index.

Every case runs the real planner and is checked against the per-image reference loop of
``tests/retention/reference_planner.py`` too, so the two implementations cannot drift apart on it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.retention.helpers import (
    NOW,
    by_name,
    decide,
    digest,
    ecr_policy,
    image,
    inventory,
    planner_triples,
    reference_plan,
    rule,
)

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
RELEASE = rule(1, "tagged", "imageCountMoreThan", 2, regexes=[r"^v\d+\.\d+\.\d+$"], description="keep 2")
UNTAGGED_YEAR = rule(9, "untagged", "sinceImagePushed", 365, description="untagged: a year")


def manifest_release(version: str, days: float, arch_tags: dict[str, list[str]] | None = None) -> list[dict]:
    """An index ``version`` over amd64/arm64 children; ``arch_tags`` gives each child's own tags
    (default: the ``docker manifest`` workflow's ``<version>-<arch>``)."""
    arches = ("amd64", "arm64")
    tags = arch_tags if arch_tags is not None else {a: [f"{version}-{a}"] for a in arches}
    children = [image(f"{version}/{a}", tags.get(a, []), days, parents=[version]) for a in arches]
    index = image(version, [version], days, kind="index", children=[f"{version}/{a}" for a in arches])
    return [*children, index]


def links_only(records: list[dict[str, Any]], links: str) -> list[dict[str, Any]]:
    """The inventory with index -> child links as ``parent_digests`` (the adapters' form) or only
    as ``child_digests`` (an inventory from elsewhere); the planner accepts both."""
    if links == "children":
        for rec in records:
            rec["parent_digests"] = []
    return records


def agree_with_reference(frame, policies, in_use=None) -> None:
    assert planner_triples(frame, policies, in_use=in_use) == reference_plan(frame, policies, in_use=in_use)


NAMES = " ".join(f"{v} {v}/amd64 {v}/arm64" for v in ("v1.1.0", "v1.2.1", "v1.2.2", "v1.2.3", "v1.2.4"))


@pytest.mark.parametrize("links", ["parents", "children"])
def test_per_arch_tags_keep_children_of_an_expired_index(links):
    records = [
        *manifest_release("v1.1.0", 120, arch_tags={}),  # buildx style: untagged children
        *manifest_release("v1.2.1", 90),
        *manifest_release("v1.2.2", 60),
        *manifest_release("v1.2.3", 30),
        *manifest_release("v1.2.4", 1),
    ]
    frame = inventory(*links_only(records, links))
    pol = ecr_policy(RELEASE, UNTAGGED_YEAR, protect_tags=["latest"])
    rows, _ = decide(frame, pol)
    got = by_name({d: r["action"] for d, r in rows.items()}, NAMES)
    assert got == {
        "v1.1.0": "expire",
        "v1.1.0/amd64": "expire",  # untagged: goes with its index
        "v1.1.0/arm64": "expire",
        "v1.2.1": "expire",
        "v1.2.1/amd64": "keep",  # tagged v1.2.1-amd64: no rule selects it, so it stays
        "v1.2.1/arm64": "keep",
        "v1.2.2": "expire",
        "v1.2.2/amd64": "keep",
        "v1.2.2/arm64": "keep",
        "v1.2.3": "keep",
        "v1.2.3/amd64": "keep",
        "v1.2.3/arm64": "keep",
        "v1.2.4": "keep",
        "v1.2.4/amd64": "keep",
        "v1.2.4/arm64": "keep",
    }
    tagged_child = rows[digest("v1.2.1/amd64")]
    assert tagged_child["reason"] == "no rule selects this image -> keep"
    follower = rows[digest("v1.1.0/arm64")]
    assert "goes with its index " + digest("v1.1.0")[:19] in follower["reason"]
    assert follower["rule_priority"] == 1  # the index's rule
    if links == "parents":  # the reference loop reads parent links only
        agree_with_reference(frame, pol)


@pytest.mark.parametrize("protect", [[], ["latest"]], ids=["no-protected-tags", "latest-protected"])
def test_a_child_tagged_latest_by_digest_stays_when_its_index_expires(protect):
    """``latest`` was moved onto the amd64 image of v1.2.1 by digest; v1.2.1's index expires."""
    records = [
        *manifest_release("v1.2.1", 90, arch_tags={"amd64": ["latest"]}),
        *manifest_release("v1.2.2", 60, arch_tags={}),
        *manifest_release("v1.2.3", 30, arch_tags={}),
    ]
    frame = inventory(*records)
    pol = ecr_policy(RELEASE, UNTAGGED_YEAR, protect_tags=protect)
    got = by_name(
        {d: r["action"] for d, r in decide(frame, pol)[0].items()}, "v1.2.1 v1.2.1/amd64 v1.2.1/arm64"
    )
    assert got == {"v1.2.1": "expire", "v1.2.1/amd64": "keep", "v1.2.1/arm64": "expire"}
    agree_with_reference(frame, pol)


def test_a_tagged_child_goes_on_its_own_merits_unless_a_tag_is_protected():
    """A second rule expires per-arch tags older than 45 days: those children go by that rule
    (priority 2, its own reason), not as followers; one also tagged ``latest`` is kept."""
    per_arch = rule(2, "tagged", "sinceImagePushed", 45, regexes=[r"^v\d+\.\d+\.\d+-(amd64|arm64)$"])
    records = [
        *manifest_release("v1.2.1", 90),
        *manifest_release(
            "v1.2.2", 60, arch_tags={"amd64": ["v1.2.2-amd64", "latest"], "arm64": ["v1.2.2-arm64"]}
        ),
        *manifest_release("v1.2.3", 30),
        *manifest_release("v1.2.4", 1),
    ]
    frame = inventory(*records)
    pol = ecr_policy(RELEASE, per_arch, UNTAGGED_YEAR, protect_tags=["latest"])
    rows, _ = decide(frame, pol)
    names = "v1.2.1 v1.2.1/amd64 v1.2.1/arm64 v1.2.2 v1.2.2/amd64 v1.2.2/arm64 v1.2.3/amd64 v1.2.3/arm64"
    assert by_name({d: r["action"] for d, r in rows.items()}, names) == {
        "v1.2.1": "expire",
        "v1.2.1/amd64": "expire",
        "v1.2.1/arm64": "expire",
        "v1.2.2": "expire",
        "v1.2.2/amd64": "keep",  # selected by rule 2, but tagged latest (protected)
        "v1.2.2/arm64": "expire",
        "v1.2.3/amd64": "keep",  # 30 days: not older than 45, and its index is kept
        "v1.2.3/arm64": "keep",
    }
    own = rows[digest("v1.2.1/amd64")]
    assert own["rule_priority"] == 2 and "goes with its index" not in own["reason"]
    assert rows[digest("v1.2.2/amd64")]["reason"].endswith("; but protected tag latest -> keep")
    agree_with_reference(frame, pol)


def test_an_untagged_child_in_use_or_pulled_recently_stays_when_its_index_expires():
    """A Deployment pins the amd64 image by digest (what ``kubectl get pod -o yaml`` shows after the
    kubelet resolved the index); the arm64 image was pulled last week. Both stay; the index goes."""
    records = [
        *manifest_release("v1.2.1", 90, arch_tags={}),
        *manifest_release("v1.2.2", 90, arch_tags={}),
        *manifest_release("v1.2.3", 60, arch_tags={}),
        *manifest_release("v1.2.4", 30, arch_tags={}),
    ]
    for rec in records:
        if rec["digest"] == digest("v1.2.1/arm64"):
            rec["last_pulled_at"] = NOW - timedelta(days=7)
    frame = inventory(*records)
    in_use = {f"{HOST}/{records[0]['repository']}@{digest('v1.2.1/amd64')}"}
    pol = ecr_policy(RELEASE, UNTAGGED_YEAR, protect_tags=["latest"], keep_pulled_within_days=30)
    got = by_name(
        {d: r["action"] for d, r in decide(frame, pol, in_use=in_use)[0].items()},
        "v1.2.1 v1.2.1/amd64 v1.2.1/arm64 v1.2.2 v1.2.2/amd64 v1.2.2/arm64",
    )
    assert got == {
        "v1.2.1": "expire",
        "v1.2.1/amd64": "keep",  # in use by digest
        "v1.2.1/arm64": "keep",  # pulled within 30 days
        "v1.2.2": "expire",
        "v1.2.2/amd64": "expire",  # the control: unprotected untagged children go
        "v1.2.2/arm64": "expire",
    }
    agree_with_reference(frame, pol, in_use)
