"""The planner's digest lookups (in use by digest, an index's children, a referrer's subject) find
candidates by a 64-bit key of 16 hex digits of the digest (planner_state.digest_keys) and then
compare the digests as text: images whose keys collide but whose digests differ must never be
taken for each other. Digests that are not 71 bytes (no keys) are compared as text throughout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from include.registry_ops.retention import planner
from include.registry_ops.retention.planner_state import digest_keys, now_ns
from tests.retention.helpers import NOW, actions, ecr_policy, image, inventory, rule

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REPO = "ret-plan/app"
UNTAGGED = rule(1, "untagged", "sinceImagePushed", 1, description="untagged: a day")
# same 16 hex digits after "sha256:" (the bytes the key reads), different digests
COLLIDING = ["sha256:" + "ab" * 8 + tail * 48 for tail in "012"]
SHORT = ["sha256:ab", "sha256:ac", "sha256:ad"]  # not 71 bytes: no keys, text only


def test_colliding_digests_share_a_key_and_well_formed_ones_do_not():
    keys = digest_keys(pa.array(COLLIDING, pa.large_string()))
    assert keys is not None and len(set(keys.tolist())) == 1  # the case the text comparison guards
    assert digest_keys(pa.array(SHORT, pa.large_string())) is None
    assert digest_keys(pa.array([COLLIDING[0], None], pa.large_string())) is None


def with_digest(record: dict, value: str) -> dict:
    record["digest"] = value
    return record


@pytest.mark.parametrize("keys", [True, False], ids=["colliding-keys", "no-keys"])
def test_only_the_image_in_use_by_digest_stays(keys):
    """In-use references name sha256 digests only: without keys here means another image of the
    inventory has a short digest, so no row gets a key and every row is compared as text."""
    records = [with_digest(image(f"i{k}", [], days=30), d) for k, d in enumerate(COLLIDING)]
    if not keys:
        records.append(with_digest(image("odd", [], days=30), SHORT[0]))
    got = actions(
        inventory(*records), ecr_policy(UNTAGGED, keep_in_use=True), in_use={f"{HOST}/{REPO}@{COLLIDING[1]}"}
    )
    assert [got[d] for d in COLLIDING] == ["expire", "keep", "expire"]


@pytest.mark.parametrize("digests", [COLLIDING, SHORT], ids=["colliding-keys", "no-keys"])
def test_a_referrer_follows_its_own_subject_not_a_colliding_one(digests):
    """Subject i0 is kept (tagged), i1 expires: the referrer of i1 goes with i1, and the
    referrer whose subject is missing (i2 absent, same key as both) is expired as an orphan."""
    records = [
        with_digest(image("i0", ["v1"], days=30), digests[0]),
        with_digest(image("i1", [], days=30), digests[1]),
        with_digest(image("sig1", [], days=30, kind="referrer"), "sha256:" + "cd" * 32),
        with_digest(image("sig2", [], days=30, kind="referrer"), "sha256:" + "ef" * 32),
    ]
    records[2]["subject_digest"], records[3]["subject_digest"] = digests[1], digests[2]
    records.append(with_digest(image("sig0", [], days=30, kind="referrer"), "sha256:" + "aa" * 32))
    records[4]["subject_digest"] = digests[0]
    got = actions(inventory(*records), ecr_policy(UNTAGGED))
    assert got[digests[0]] == "keep" and got[digests[1]] == "expire"
    assert got["sha256:" + "aa" * 32] == "keep"  # follows the kept i0
    assert got["sha256:" + "cd" * 32] == "expire"  # follows i1
    assert got["sha256:" + "ef" * 32] == "expire"  # its subject is not in the repository


@pytest.mark.parametrize("digests", [COLLIDING, SHORT], ids=["colliding-keys", "no-keys"])
def test_an_untagged_child_stays_with_its_own_kept_index(digests):
    """Index x0 is kept (tagged) and lists child digests[0]; index x1 expires and lists
    digests[1]. Each child follows its own index, although the children's keys collide."""
    x0, x1 = "sha256:" + "01" * 32, "sha256:" + "02" * 32
    records = [
        with_digest(image("x0", ["v1"], days=30, kind="index"), x0),
        with_digest(image("x1", [], days=30, kind="index"), x1),
        with_digest(image("c0", [], days=30), digests[0]),
        with_digest(image("c1", [], days=30), digests[1]),
    ]
    records[0]["child_digests"], records[1]["child_digests"] = [digests[0]], [digests[1]]
    records[2]["parent_digests"], records[3]["parent_digests"] = [x0], [x1]
    got = actions(inventory(*records), ecr_policy(UNTAGGED, children_follow_index=True))
    assert got == {x0: "keep", x1: "expire", digests[0]: "keep", digests[1]: "expire"}


def test_digest_in_is_exact_when_keys_collide():
    """The lookup itself, below its callers (which compare text again): a colliding key is a
    candidate, never an answer."""
    frame = inventory(*(with_digest(image(f"i{k}", [], days=30), d) for k, d in enumerate(COLLIDING)))
    policies = ecr_policy(UNTAGGED)
    pid, group, _, names = planner._assign(frame, policies)
    ctx = planner._context(frame, pid, group, names, now_ns(NOW))
    hit = ctx.digest_in(pa.array([COLLIDING[1], "sha256:" + "ff" * 32]))
    assert ctx.digests_at(np.flatnonzero(hit)).to_pylist() == [COLLIDING[1]]
