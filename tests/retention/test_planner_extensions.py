"""The platform's extensions on top of ECR rules: exclusions, regex selectors, semver keep,
keep-if-pulled, images in use, protected tags, untag instead of delete, per-repo overrides."""

from __future__ import annotations

from include.registry_ops.retention.policy import parse_policies
from tests.retention.helpers import (
    NOW,
    REPO,
    actions,
    by_name,
    decide,
    digest,
    ecr_policy,
    image,
    inventory,
    rule,
)

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
EVERYTHING_OLD = rule(1, "any", "sinceImagePushed", 1)


def test_excluded_repositories_are_not_planned():
    inv = inventory(image("a", ["x"], 10), image("b", ["x"], 10, repo="ret-plan/legacy-db"))
    pol = ecr_policy(EVERYTHING_OLD, exclude_repositories=["ret-plan/legacy-*"])
    assert set(actions(inv, pol)) == {digest("a")}


def test_excluded_tags_hide_images_from_rules_and_from_counting():
    inv = inventory(image("pinned", ["keep-forever"], 1), image("a", ["x"], 2), image("b", ["y"], 3))
    keep_one = rule(1, "any", "imageCountMoreThan", 1)
    plain = by_name(actions(inv, ecr_policy(keep_one)), "pinned a b")
    assert plain == {"pinned": "keep", "a": "expire", "b": "expire"}
    rows, _ = decide(inv, ecr_policy(keep_one, exclude_tags=["keep-*"]))
    got = by_name({d: r["action"] for d, r in rows.items()}, "pinned a b")
    assert got == {"pinned": "keep", "a": "keep", "b": "expire"}  # "a" is now the newest one counted
    assert rows[digest("pinned")]["reason"].startswith("not seen by rules: excluded by exclude_tags")


def test_tag_regex_selector_is_searched_per_tag():
    inv = inventory(
        image("pr", ["pr-12"], 30),
        image("not-numeric", ["pr-x"], 30),
        image("embedded", ["my-pr-1"], 30),
        image("two-tags", ["abc", "pr-7"], 30),
    )
    pol = ecr_policy(rule(1, "tagged", "sinceImagePushed", 14, regexes=[r"^pr-\d+$"]))
    got = by_name(actions(inv, pol), "pr not-numeric embedded two-tags")
    assert got == {"pr": "expire", "not-numeric": "keep", "embedded": "keep", "two-tags": "expire"}


def _releases():
    return inventory(
        image("1.3.9", ["v1.3.9"], 50),
        image("1.4.5", ["v1.4.5"], 40),
        image("1.4.6", ["v1.4.6"], 30),
        image("2.0.0", ["v2.0.0"], 20),
        image("1.4.7", ["v1.4.7"], 10),  # a hotfix pushed after 2.0.0
        image("rc", ["v1.4.8-rc.1"], 5),
        image("build", ["abc1234"], 5),
    )


def test_keep_semver_newest_per_minor_by_version_not_push_time():
    pol = ecr_policy(EVERYTHING_OLD, keep_semver={"per": "minor", "keep": 2})
    rows, _ = decide(_releases(), pol)
    got = by_name({d: r["action"] for d, r in rows.items()}, "1.3.9 1.4.5 1.4.6 2.0.0 1.4.7 rc build")
    assert got == {
        "1.3.9": "keep",
        "1.4.5": "expire",
        "1.4.6": "keep",
        "2.0.0": "keep",
        "1.4.7": "keep",
        "rc": "expire",  # pre-releases are not releases unless include_prerelease
        "build": "expire",
    }
    assert "among the newest 2 releases of 1.4" in rows[digest("1.4.6")]["reason"]


def test_keep_semver_per_major_with_prereleases():
    pol = ecr_policy(EVERYTHING_OLD, keep_semver={"per": "major", "keep": 1, "include_prerelease": True})
    got = by_name(actions(_releases(), pol), "1.3.9 1.4.5 1.4.6 2.0.0 1.4.7 rc")
    # within major 1 the highest version is 1.4.8-rc.1 (a pre-release of a higher version)
    assert got == {
        "1.3.9": "expire",
        "1.4.5": "expire",
        "1.4.6": "expire",
        "2.0.0": "keep",
        "1.4.7": "expire",
        "rc": "keep",
    }


def test_keep_if_pulled_recently():
    inv = inventory(
        image("recent", ["a"], 100, pulled_days=10),
        image("stale", ["b"], 100, pulled_days=40),
        image("never", ["c"], 100),
    )
    rows, _ = decide(inv, ecr_policy(rule(1, "any", "sinceImagePushed", 30), keep_pulled_within_days=30))
    assert by_name({d: r["action"] for d, r in rows.items()}, "recent stale never") == {
        "recent": "keep",
        "stale": "expire",
        "never": "expire",
    }
    assert rows[digest("recent")]["reason"].endswith("; but pulled within the last 30 days -> keep")
    assert rows[digest("recent")]["rule_priority"] == 1


def test_images_in_use_are_kept_by_digest_tag_or_bare_digest():
    inv = inventory(
        image("by-tag", ["v1", "abc"], 100),
        image("by-digest", ["v2"], 100),
        image("bare", [], 100),
        image("other-repo-tag", ["v3"], 100),
        image("free", ["v4"], 100),
    )
    refs = {
        f"{HOST}/{REPO}:v1",
        f"{HOST}/{REPO}@{digest('by-digest')}",
        digest("bare"),
        f"{HOST}/ret-plan/other:v3",  # same tag in another repository protects nothing here
        "not a reference!",
    }
    pol = ecr_policy(EVERYTHING_OLD)
    rows, _ = decide(inv, pol, in_use=refs)
    got = by_name({d: r["action"] for d, r in rows.items()}, "by-tag by-digest bare other-repo-tag free")
    assert got == {
        "by-tag": "keep",
        "by-digest": "keep",
        "bare": "keep",
        "other-repo-tag": "expire",
        "free": "expire",
    }
    assert f"tag in use as {HOST}/{REPO}:v1" in rows[digest("by-tag")]["reason"]
    assert f"in use as {HOST}/{REPO}@{digest('by-digest')}" in rows[digest("by-digest")]["reason"]
    off = actions(inv, ecr_policy(EVERYTHING_OLD, keep_in_use=False), in_use=refs)
    assert set(off.values()) == {"expire"}


def test_protected_tags_default_to_latest_and_semver_releases():
    inv = inventory(
        image("latest", ["latest", "abc"], 100),
        image("release", ["v1.2.3"], 100),
        image("bare-release", ["1.2.3"], 100),
        image("two-part", ["v1.2"], 100),
        image("rc", ["1.2.4-rc1"], 100),
    )
    pol = parse_policies({"policies": [{"name": "p", "rules": [EVERYTHING_OLD]}]})
    rows, _ = decide(inv, pol)
    got = by_name({d: r["action"] for d, r in rows.items()}, "latest release bare-release two-part rc")
    assert got == {
        "latest": "keep",
        "release": "keep",
        "bare-release": "keep",
        "two-part": "expire",
        "rc": "expire",
    }
    assert "but protected tag latest -> keep" in rows[digest("latest")]["reason"]
    custom = ecr_policy(EVERYTHING_OLD, protect_tags=["stable-*", r"re:^v1\.2$"])
    inv2 = inventory(image("s", ["stable-2"], 100), image("v12", ["v1.2"], 100), image("l", ["latest"], 100))
    assert by_name(actions(inv2, custom), "s v12 l") == {"s": "keep", "v12": "keep", "l": "expire"}


def test_untag_instead_of_delete_when_other_tags_stay():
    inv = inventory(
        image("dev-and-release", ["dev-1", "release-1"], 30),
        image("only-dev", ["dev-2", "dev-3"], 30),
        image("dev-and-latest", ["dev-4", "latest"], 30),
        image("dev-in-use", ["dev-5", "stable"], 30),
        image("newest", ["dev-9"], 1),
    )
    pol = ecr_policy(
        rule(1, "tagged", "imageCountMoreThan", 1, patterns=["dev-*"]),
        untag_partial=True,
        protect_tags=["latest"],
    )
    rows, result = decide(inv, pol, in_use={f"{REPO}:dev-5"})
    got = by_name(
        {d: (r["action"], r["untag_tags"]) for d, r in rows.items()},
        "dev-and-release only-dev dev-and-latest dev-in-use newest",
    )
    assert got == {
        "dev-and-release": ("untag", ["dev-1"]),
        "only-dev": ("expire", []),  # every tag matched: the digest goes
        "dev-and-latest": ("untag", ["dev-4"]),  # the protected tag stays, the image with it
        "dev-in-use": ("keep", []),  # the only tag to remove is in use
        "newest": ("keep", []),
    }
    assert (
        "only these tags go, the image's other tags stay: dev-1 -> untag"
        in rows[digest("dev-and-release")]["reason"]
    )
    assert "tag in use as ret-plan/app:dev-5" in rows[digest("dev-in-use")]["reason"]
    assert result.loc[result["action"] != "untag", "untag_tags"].map(len).eq(0).all()


def test_without_untag_partial_a_protected_tag_keeps_the_whole_image():
    inv = inventory(image("dev-and-latest", ["dev-4", "latest"], 30), image("newest", ["dev-9"], 1))
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 1, patterns=["dev-*"]), protect_tags=["latest"])
    assert actions(inv, pol)[digest("dev-and-latest")] == "keep"


def test_untagging_an_index_keeps_its_children_and_referrers():
    inv = inventory(
        image("c1", [], 30, parents=["idx"]),
        image("idx", ["dev-1", "v1"], 30, kind="index", children=["c1"]),
        image("sig", [], 30, kind="referrer", subject="idx"),
        image("newest", ["dev-2"], 1),
    )
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["dev-"]), untag_partial=True)
    assert by_name(actions(inv, pol), "c1 idx sig newest") == {
        "c1": "keep",
        "idx": "untag",
        "sig": "keep",
        "newest": "keep",
    }


def test_in_use_child_of_an_expired_index_stays():
    inv = inventory(
        image("c1", [], 30, parents=["idx"]),
        image("c2", [], 30, parents=["idx"]),
        image("idx", ["v1"], 30, kind="index", children=["c1", "c2"]),
    )
    pol = ecr_policy(EVERYTHING_OLD)
    got = by_name(actions(inv, pol, in_use={f"{REPO}@{digest('c1')}"}), "c1 c2 idx")
    assert got == {"c1": "keep", "c2": "expire", "idx": "expire"}


def test_in_use_referrer_stays_even_if_its_subject_goes():
    inv = inventory(image("s", ["a"], 30), image("sig", [], 30, kind="referrer", subject="s"))
    got = by_name(actions(inv, ecr_policy(EVERYTHING_OLD), in_use={digest("sig")}), "s sig")
    assert got == {"s": "expire", "sig": "keep"}


def test_overrides_change_extensions_per_repository():
    pol = parse_policies(
        {
            "policies": [
                {
                    "name": "p",
                    "protect_tags": [],
                    "rules": [EVERYTHING_OLD],
                    "overrides": [
                        {"repositories": ["ret-plan/pinned"], "exclude_tags": ["*"], "enabled": True}
                    ],
                }
            ]
        }
    )
    inv = inventory(image("a", ["x"], 10), image("b", ["x"], 10, repo="ret-plan/pinned"))
    rows, result = decide(inv, pol)
    assert by_name({d: r["action"] for d, r in rows.items()}, "a b") == {"a": "expire", "b": "keep"}
    assert dict(zip(result["repository"], result["dry_run"], strict=True)) == {
        REPO: True,
        "ret-plan/pinned": False,
    }


def test_transition_rules_are_not_turned_into_untags():
    inv = inventory(image("x", ["dev-1", "keep"], 100))
    pol = ecr_policy(
        rule(1, "tagged", "sinceImagePushed", 30, patterns=["dev-*"], action="transition"), untag_partial=True
    )
    assert actions(inv, pol, NOW) == {digest("x"): "transition"}
