"""Reasons and references the vectorized planner assembles without a per-image loop: the semver
group label per major and per minor, the in-use reference of each repository when the same
tag is in use in several, and per-row details next to shared reasons."""

from __future__ import annotations

from tests.retention.helpers import (
    REPO,
    decide,
    digest,
    ecr_policy,
    image,
    inventory,
    rule,
)

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
OTHER = "ret-plan/other"
EVERYTHING_OLD = rule(1, "any", "sinceImagePushed", 1)


def test_semver_reason_names_the_major_alone_per_major_and_major_minor_per_minor():
    inv = inventory(
        image("2.1.0", ["v2.1.0"], 30),
        image("1.4.7", ["v1.4.7"], 20),
        image("1.3.0", ["v1.3.0"], 10),
    )
    rows, _ = decide(inv, ecr_policy(EVERYTHING_OLD, keep_semver={"per": "major", "keep": 1}))
    assert rows[digest("2.1.0")]["reason"].endswith("; but among the newest 1 releases of 2 -> keep")
    assert rows[digest("1.4.7")]["reason"].endswith("; but among the newest 1 releases of 1 -> keep")
    assert rows[digest("1.3.0")]["action"] == "expire"
    rows, _ = decide(inv, ecr_policy(EVERYTHING_OLD, keep_semver={"per": "minor", "keep": 1}))
    assert rows[digest("1.3.0")]["reason"].endswith("; but among the newest 1 releases of 1.3 -> keep")
    assert rows[digest("2.1.0")]["reason"].endswith("; but among the newest 1 releases of 2.1 -> keep")


def test_a_tag_in_use_in_two_repositories_names_each_repositorys_reference():
    inv = inventory(
        image("here", ["main"], 100),
        image("there", ["main"], 100, repo=OTHER),
        image("third", ["main"], 100, repo="ret-plan/third"),  # nobody runs its main
        image("free", ["v1"], 100),
    )
    refs = {f"{HOST}/{REPO}:main", f"{HOST}/{OTHER}:main", f"{HOST}/ret-plan/fourth:main"}
    rows, _ = decide(inv, ecr_policy(EVERYTHING_OLD), in_use=refs)
    assert rows[digest("here")]["reason"].endswith(f"; but tag in use as {HOST}/{REPO}:main -> keep")
    assert rows[digest("there")]["reason"].endswith(f"; but tag in use as {HOST}/{OTHER}:main -> keep")
    assert rows[digest("third")]["action"] == "expire"
    assert rows[digest("free")]["action"] == "expire"


def test_rows_with_and_without_details_keep_their_own_reason_in_inventory_order():
    inv = inventory(
        image("a", ["dev-1", "keep"], 100),
        image("b", ["dev-2"], 100),
        image("c", ["dev-3"], 100),
        image("d", ["dev-4", "x"], 100),
    )
    pol = ecr_policy(
        rule(1, "tagged", "sinceImagePushed", 1, prefixes=["dev-"]),
        untag_partial=True,
        protect_tags=["dev-3"],
    )
    rows, result = decide(inv, pol)
    assert list(result["digest"]) == [digest(n) for n in "abcd"]
    assert rows[digest("a")]["reason"].endswith(
        "; only these tags go, the image's other tags stay: dev-1 -> untag"
    )
    assert rows[digest("b")]["reason"].endswith("pushed more than 1 days ago -> expire")
    assert rows[digest("c")]["reason"].endswith("; but protected tag dev-3 -> keep")
    assert rows[digest("d")]["reason"].endswith(
        "; only these tags go, the image's other tags stay: dev-4 -> untag"
    )
