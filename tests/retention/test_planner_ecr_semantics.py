"""The planner against AWS's documented lifecycle semantics.

Cases are AWS's "Examples of lifecycle policies in Amazon ECR" page (current version, with
tagPatternList and the archive examples; and the older tagPrefixList version of the same
examples), plus ecr-lifecycle.md §3: priorities, shielding by tag selection, counting claimed
images, strict "more than N days", ordering, multi-arch indexes and referrers.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from include.registry_ops.retention.planner import RESULT_COLUMNS, plan
from tests.retention.helpers import NOW, actions, by_name, decide, digest, ecr_policy, image, inventory, rule

# --------------------------------------------------------------------------- AWS examples page


def test_filtering_on_image_age_prod_pattern_older_than_14_days():
    """ "Filtering on image age": tagPatternList prod*, sinceImagePushed 14 days."""
    inv = inventory(
        image("old-prod", ["prod-1"], 20),
        image("prod-exact", ["prod"], 14),  # exactly 14 x 24 h: not "more than" 14 days
        image("young-prod", ["production-team1"], 3),
        image("old-dev", ["dev-1"], 30),
        image("old-untagged", [], 30),
    )
    pol = ecr_policy(rule(1, "tagged", "sinceImagePushed", 14, patterns=["prod*"]))
    got = by_name(actions(inv, pol), "old-prod prod-exact young-prod old-dev old-untagged")
    assert got == {
        "old-prod": "expire",
        "prod-exact": "keep",
        "young-prod": "keep",
        "old-dev": "keep",
        "old-untagged": "keep",
    }


def test_filtering_on_image_count_keep_one_untagged():
    """ "Filtering on image count": keep only one untagged image, expire all others."""
    inv = inventory(
        image("u1", [], 5),
        image("u2", [], 4),
        image("u3", [], 3),
        image("tagged", ["v"], 10),
    )
    pol = ecr_policy(rule(1, "untagged", "imageCountMoreThan", 1))
    assert by_name(actions(inv, pol), "u1 u2 u3 tagged") == {
        "u1": "expire",
        "u2": "expire",
        "u3": "keep",
        "tagged": "keep",
    }


def _abc() -> pd.DataFrame:
    return inventory(
        image("A", ["beta-1", "prod-1"], 10),
        image("B", ["beta-2", "prod-2"], 9),
        image("C", ["beta-3"], 8),
    )


@pytest.mark.parametrize("kind", ["patterns", "prefixes"])
def test_multiple_rules_example_a_image_b_is_shielded(kind):
    """Example A: rule 1 prod keeps B (newest prod), so rule 2 (beta) cannot expire B although it
    counts it: only A is expired. AWS shows it with tagPatternList (now) and tagPrefixList (before)."""
    sel = (lambda v: {"patterns": [v + "*"]}) if kind == "patterns" else (lambda v: {"prefixes": [v]})
    pol = ecr_policy(
        rule(1, "tagged", "imageCountMoreThan", 1, **sel("prod"), description="Rule 1"),
        rule(2, "tagged", "imageCountMoreThan", 1, **sel("beta"), description="Rule 2"),
    )
    rows, _ = decide(_abc(), pol)
    got = by_name({d: r["action"] for d, r in rows.items()}, "A B C")
    assert got == {"A": "expire", "B": "keep", "C": "keep"}
    b = rows[digest("B")]
    assert b["rule_priority"] == 1
    assert "rule 1 (Rule 1)" in b["reason"] and "shields it from rule 2" in b["reason"]
    assert rows[digest("A")]["rule_priority"] == 1
    assert rows[digest("C")]["rule_priority"] == 2 and "among the newest 1" in rows[digest("C")]["reason"]


@pytest.mark.parametrize("kind", ["patterns", "prefixes"])
def test_multiple_rules_example_b_priorities_swapped(kind):
    """Example B: beta first: it sees all three, expires A and B; prod sees nothing left to mark."""
    sel = (lambda v: {"patterns": [v + "*"]}) if kind == "patterns" else (lambda v: {"prefixes": [v]})
    pol = ecr_policy(
        rule(1, "tagged", "imageCountMoreThan", 1, **sel("beta")),
        rule(2, "tagged", "imageCountMoreThan", 1, **sel("prod")),
    )
    rows, _ = decide(_abc(), pol)
    assert by_name({d: r["action"] for d, r in rows.items()}, "A B C") == {
        "A": "expire",
        "B": "expire",
        "C": "keep",
    }
    assert {r["rule_priority"] for r in rows.values()} == {1}


@pytest.mark.parametrize("kind", ["patterns", "prefixes"])
def test_multiple_tags_in_a_single_rule_example_a_all_entries_must_match(kind):
    """Entries are AND-combined: only C and F carry both alpha and beta; C is older than 5 days."""
    inv = inventory(
        image("A", ["alpha-1"], 12),
        image("B", ["beta-1"], 11),
        image("C", ["alpha-2", "beta-2"], 10),
        image("D", ["alpha-3"], 4),
        image("E", ["beta-3"], 3),
        image("F", ["alpha-4", "beta-4"], 2),
    )
    sel = {"patterns": ["alpha*", "beta*"]} if kind == "patterns" else {"prefixes": ["alpha", "beta"]}
    pol = ecr_policy(rule(1, "tagged", "sinceImagePushed", 5, **sel))
    got = by_name(actions(inv, pol), "A B C D E F")
    assert [n for n, a in sorted(got.items()) if a == "expire"] == ["C"]


@pytest.mark.parametrize("kind", ["patterns", "prefixes"])
def test_multiple_tags_in_a_single_rule_example_b_tags_are_not_exclusive(kind):
    inv = inventory(
        image("A", ["alpha-1", "beta-1", "gamma-1"], 10),
        image("B", ["alpha-2", "beta-2"], 9),
        image("C", ["alpha-3", "beta-3", "gamma-2"], 8),
    )
    sel = {"patterns": ["alpha*", "beta*"]} if kind == "patterns" else {"prefixes": ["alpha", "beta"]}
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 1, **sel))
    assert by_name(actions(inv, pol), "A B C") == {"A": "expire", "B": "expire", "C": "keep"}


def test_filtering_on_all_images_example_a():
    inv = inventory(
        image("A", ["alpha-1"], 4),
        image("B", ["beta-1"], 3),
        image("C", [], 2),
        image("D", ["alpha-2"], 1),
    )
    pol = ecr_policy(rule(1, "any", "imageCountMoreThan", 1))
    assert by_name(actions(inv, pol), "A B C D") == {"A": "expire", "B": "expire", "C": "expire", "D": "keep"}


def _all_images_example_b() -> tuple[pd.DataFrame, object]:
    # E is exactly one day old; D was pushed just before it ("1 day ago" both, E the newer).
    inv = inventory(
        image("A", ["alpha-1", "beta-1"], 4),
        image("B", [], 3),
        image("C", ["alpha-2"], 2),
        image("D", ["git hash"], 1 + 1 / 1440),
        image("E", [], 1),
    )
    pol = ecr_policy(
        rule(1, "tagged", "imageCountMoreThan", 1, patterns=["alpha*"]),
        rule(2, "untagged", "sinceImagePushed", 1),
        rule(3, "any", "imageCountMoreThan", 1),
    )
    return inv, pol


def test_filtering_on_all_images_example_b_combines_every_rule_type():
    """Rule 1 expires A (keeps C); rule 2 expires B (not E: exactly one day is not "more than");
    rule 3 keeps the newest (E) and may only act on D: A, B, C and E were identified earlier."""
    inv, pol = _all_images_example_b()
    rows, _ = decide(inv, pol)
    got = by_name({d: (r["action"], r["rule_priority"]) for d, r in rows.items()}, "A B C D E")
    assert got == {
        "A": ("expire", 1),
        "B": ("expire", 2),
        "C": ("keep", 1),
        "D": ("expire", 3),
        "E": ("keep", 2),
    }


def test_example_b_needs_the_strict_comparison():
    """A non-strict comparison (>= 1 day) would expire E under rule 2; one second less and
    AWS's outcome holds, one second more and E goes: the boundary is exclusive."""
    inv, pol = _all_images_example_b()
    later = actions(inv, pol, NOW + timedelta(seconds=1))
    assert later[digest("E")] == "expire"
    assert actions(inv, pol, NOW)[digest("E")] == "keep"


def test_archive_examples_transition_by_last_pull_and_expire_by_archive_age():
    """ "Filtering on last pulled time" and "archive transition time", from the examples page."""
    inv = inventory(
        image("pulled-long-ago", ["a"], 400, pulled_days=120),
        image("pulled-recently", ["b"], 400, pulled_days=10),
        image("never-pulled-old", ["c"], 100),  # falls back to push time
        image("never-pulled-new", ["d"], 30),
        image(
            "archived-long",
            ["e"],
            800,
            storage_class="ARCHIVE",
            last_archived_at=NOW - timedelta(days=400),
        ),
        image(
            "archived-short",
            ["f"],
            800,
            storage_class="ARCHIVE",
            last_archived_at=NOW - timedelta(days=100),
        ),
    )
    pol = ecr_policy(
        rule(1, "any", "sinceImagePulled", 90, action="transition"),
        rule(2, "any", "sinceImageTransitioned", 365, storage="archive"),
    )
    got = by_name(
        actions(inv, pol),
        "pulled-long-ago pulled-recently never-pulled-old never-pulled-new archived-long archived-short",
    )
    assert got == {
        "pulled-long-ago": "transition",
        "pulled-recently": "keep",
        "never-pulled-old": "transition",
        "never-pulled-new": "keep",
        "archived-long": "expire",
        "archived-short": "keep",
    }


def test_combining_archive_and_expire_rules_example():
    """Two 'any' rules, one per storage class: standard images older than 30 days transition,
    archived ones older than 365 days in the archive expire; rules see only their class."""
    inv = inventory(
        image("old", ["x"], 31),
        image("new", ["y"], 29),
        image("arch", ["z"], 900, storage_class="archive", last_archived_at=NOW - timedelta(days=366)),
    )
    pol = ecr_policy(
        rule(1, "any", "sinceImagePushed", 30, action="transition"),
        rule(2, "any", "sinceImageTransitioned", 365, storage="archive"),
    )
    assert by_name(actions(inv, pol), "old new arch") == {
        "old": "transition",
        "new": "keep",
        "arch": "expire",
    }


def test_restored_image_uses_its_restore_time():
    """ecr-lifecycle.md §3.9: a restored image's lastActivatedAt replaces its push time."""
    inv = inventory(image("restored", ["r"], 400, last_activated_at=NOW - timedelta(days=2)))
    pol = ecr_policy(rule(1, "any", "sinceImagePushed", 30))
    assert actions(inv, pol)[digest("restored")] == "keep"


# --------------------------------------------------------------------------- ordering and clocks


def test_count_rule_ties_break_by_digest_and_input_order_does_not_matter():
    recs = [image(f"t{i}", [f"v{i}"], 5) for i in range(6)]  # identical push times
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 2, prefixes=["v"]))
    first = actions(inventory(*recs), pol)
    again = actions(inventory(*reversed(recs)), pol)
    assert first == again
    kept = sorted(d for d, a in first.items() if a == "keep")
    assert kept == sorted(digest(f"t{i}") for i in range(6))[-2:]  # newest = highest digest on a tie


def test_oci_images_without_push_time_use_created_at():
    """The distribution registry records no push time: the clock falls back to created_at."""
    inv = inventory(
        image("built-long-ago", ["a"], None, created_days=100),
        image("built-recently", ["b"], None, created_days=1),
    )
    pol = ecr_policy(rule(1, "any", "sinceImagePushed", 30))
    assert by_name(actions(inv, pol), "built-long-ago built-recently") == {
        "built-long-ago": "expire",
        "built-recently": "keep",
    }


def test_images_without_any_time_are_never_aged_and_count_as_newest():
    inv = inventory(
        image("no-time", ["a"], None),
        image("old", ["b"], 50),
        image("older", ["c"], 60),
    )
    assert actions(inv, ecr_policy(rule(1, "any", "sinceImagePushed", 1)))[digest("no-time")] == "keep"
    got = by_name(actions(inv, ecr_policy(rule(1, "any", "imageCountMoreThan", 1))), "no-time old older")
    assert got == {"no-time": "keep", "old": "expire", "older": "expire"}


def test_counts_are_per_repository():
    inv = inventory(
        *[image(f"a{i}", ["v"], i, repo="ret-plan/a") for i in range(1, 4)],
        *[image(f"b{i}", ["v"], i, repo="ret-plan/b") for i in range(1, 4)],
    )
    got = actions(inv, ecr_policy(rule(1, "any", "imageCountMoreThan", 2)))
    assert sorted(by_name(got, "a1 a2 a3 b1 b2 b3").items()) == [
        ("a1", "keep"),
        ("a2", "keep"),
        ("a3", "expire"),
        ("b1", "keep"),
        ("b2", "keep"),
        ("b3", "expire"),
    ]


def test_a_digest_with_several_tags_is_one_image():
    """Counting is per digest: three tags on one digest take one slot, not three."""
    inv = inventory(
        image("multi", ["v1", "v1.0", "stable"], 1),
        image("single", ["v0"], 2),
        image("older", ["v-old"], 3),
    )
    got = by_name(
        actions(inv, ecr_policy(rule(1, "tagged", "imageCountMoreThan", 2, prefixes=["v"]))),
        "multi single older",
    )
    assert got == {"multi": "keep", "single": "keep", "older": "expire"}


# --------------------------------------------------------------------------- graph


def _multiarch(index_days: float, tags: list[str], name: str = "idx") -> list[dict]:
    return [
        image(f"{name}-amd64", [], index_days, parents=[name]),
        image(f"{name}-arm64", [], index_days, parents=[name]),
        image(name, tags, index_days, kind="index", children=[f"{name}-amd64", f"{name}-arm64"]),
    ]


def test_children_of_a_kept_index_are_never_expired():
    """The untagged rule selects the (untagged) children, but their index is kept (ECR rule 7)."""
    inv = inventory(*_multiarch(30, ["v1"]), image("orphan", [], 30))
    pol = ecr_policy(rule(1, "untagged", "sinceImagePushed", 7))
    rows, _ = decide(inv, pol)
    got = by_name({d: r["action"] for d, r in rows.items()}, "idx idx-amd64 idx-arm64 orphan")
    assert got == {"idx": "keep", "idx-amd64": "keep", "idx-arm64": "keep", "orphan": "expire"}
    reason = rows[digest("idx-amd64")]["reason"]
    assert "child of the kept index " + digest("idx")[:19] in reason and reason.endswith("-> keep")
    assert rows[digest("idx-amd64")]["rule_priority"] == 1  # the rule claimed it, then the graph kept it


def test_untagged_children_go_with_their_expired_index():
    inv = inventory(*_multiarch(30, ["v1"]), *_multiarch(1, ["v2"], name="new"))
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["v"]))
    rows, _ = decide(inv, pol)
    got = by_name(
        {d: r["action"] for d, r in rows.items()}, "idx idx-amd64 idx-arm64 new new-amd64 new-arm64"
    )
    assert got == {
        "idx": "expire",
        "idx-amd64": "expire",
        "idx-arm64": "expire",
        "new": "keep",
        "new-amd64": "keep",
        "new-arm64": "keep",
    }
    child = rows[digest("idx-arm64")]
    assert "goes with its index" in child["reason"] and child["rule_priority"] == 1


def test_children_follow_index_off_is_pure_ecr():
    inv = inventory(*_multiarch(30, ["v1"]), *_multiarch(1, ["v2"], name="new"))
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["v"]), children_follow_index=False)
    got = by_name(actions(inv, pol), "idx idx-amd64")
    assert got == {"idx": "expire", "idx-amd64": "keep"}


def test_a_child_shared_by_a_kept_index_stays():
    inv = inventory(
        image("shared", [], 30, parents=["old", "new"]),
        image("old", ["v1"], 30, kind="index", children=["shared"]),
        image("new", ["v2"], 1, kind="index", children=["shared"]),
    )
    pol = ecr_policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["v"]))
    assert by_name(actions(inv, pol), "old new shared") == {"old": "expire", "new": "keep", "shared": "keep"}


def test_referrers_follow_their_subject_and_are_not_counted():
    inv = inventory(
        image("old", ["v1"], 30),
        image("old-sig", ["sha256-" + digest("old")[7:] + ".sig"], 30, kind="referrer", subject="old"),
        image("new", ["v2"], 2),
        image("new-att", [], 2, kind="referrer", subject="new"),
        image("newer", ["v3"], 1),
        image("lost-sig", [], 50, kind="referrer", subject="gone-long-ago"),
    )
    # keep 2: referrers do not take slots, so "new" survives next to "newer"
    pol = ecr_policy(rule(1, "any", "imageCountMoreThan", 2))
    rows, _ = decide(inv, pol)
    got = by_name({d: r["action"] for d, r in rows.items()}, "old old-sig new new-att newer lost-sig")
    assert got == {
        "old": "expire",
        "old-sig": "expire",
        "new": "keep",
        "new-att": "keep",
        "newer": "keep",
        "lost-sig": "expire",
    }
    assert rows[digest("old-sig")]["rule_priority"] == 1
    assert "follows its subject" in rows[digest("old-sig")]["reason"]
    assert "not in the repository" in rows[digest("lost-sig")]["reason"]
    assert pd.isna(rows[digest("new-att")]["rule_priority"])


def test_referrer_of_a_transitioned_subject_transitions():
    inv = inventory(
        image("s", ["a"], 100),
        image("sig", [], 100, kind="referrer", subject="s"),
    )
    pol = ecr_policy(rule(1, "any", "sinceImagePushed", 30, action="transition"))
    assert by_name(actions(inv, pol), "s sig") == {"s": "transition", "sig": "transition"}


# --------------------------------------------------------------------------- contract


def test_result_follows_the_contract():
    inv = inventory(
        image("a", ["v1"], 3),
        image("b", ["v2"], 2, repo="other/unmanaged"),
        image("c", [], 1),
    )
    inv.index = [10, 20, 30]
    policies = ecr_policy(rule(1, "any", "imageCountMoreThan", 1), repositories=["ret-plan/*"])
    result = plan(inv, policies, NOW)
    assert tuple(result.columns) == RESULT_COLUMNS
    assert list(result.index) == [10, 30]  # inventory order and index; unmanaged repository left out
    assert str(result["rule_priority"].dtype) == "Int64"
    assert result["dry_run"].dtype == bool and result["dry_run"].all()  # new policies are dry runs
    assert set(result["policy"]) == {"test"}
    assert result["action"].tolist() == ["expire", "keep"]
    assert all(isinstance(t, list) for t in result["untag_tags"]) and result["untag_tags"].iloc[0] == []
    assert all(isinstance(t, list) for t in result["tags"])
    assert result["reason"].map(lambda s: isinstance(s, str) and len(s) > 10).all()


def test_empty_inventory_and_no_matching_policy():
    pol = ecr_policy(rule(1, "any", "imageCountMoreThan", 1), repositories=["nothing/*"])
    empty = plan(inventory(image("a", ["v"], 1)), pol, NOW)
    assert empty.empty and tuple(empty.columns) == RESULT_COLUMNS
    assert plan(inventory(), pol, NOW).empty


def test_naive_now_means_utc():
    inv = inventory(image("a", ["v"], 30))
    pol = ecr_policy(rule(1, "any", "sinceImagePushed", 29))
    assert actions(inv, pol, NOW.replace(tzinfo=None)) == actions(inv, pol, NOW)
