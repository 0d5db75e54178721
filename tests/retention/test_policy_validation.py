"""Policy files: AWS's lifecycle-policy validation rules (each refusal names file, rule and
field), the wrapper format (globs, first match, overrides, defaults) and loading."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from include.registry_ops.retention.policy import (
    MAX_POLICY_CHARS,
    PolicyError,
    ecr_pattern_regex,
    glob_regex,
    load_policies,
    parse_policies,
)

AGE = {
    "rulePriority": 1,
    "description": "Expire images older than 14 days",
    "selection": {
        "tagStatus": "tagged",
        "tagPatternList": ["prod*"],
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 14,
    },
    "action": {"type": "expire"},
}
UNTAGGED = {
    "rulePriority": 2,
    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
    "action": {"type": "expire"},
}
ANY = {
    "rulePriority": 3,
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 100},
    "action": {"type": "expire"},
}
PULLED = {
    "rulePriority": 1,
    "selection": {
        "tagStatus": "any",
        "countType": "sinceImagePulled",
        "countUnit": "days",
        "countNumber": 90,
    },
    "action": {"type": "transition", "targetStorageClass": "archive"},
}
ARCHIVED = {
    "rulePriority": 2,
    "selection": {
        "tagStatus": "any",
        "storageClass": "archive",
        "countType": "sinceImageTransitioned",
        "countUnit": "days",
        "countNumber": 365,
    },
    "action": {"type": "expire"},
}


def write(tmp_path, data, name="policy.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def refuse(tmp_path, rules, *needles):
    """Load {"rules": rules} from a file and expect a PolicyError naming file + needles."""
    path = write(tmp_path, {"rules": rules})
    with pytest.raises(PolicyError) as err:
        load_policies(path)
    message = str(err.value)
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def changed(rule, path, value):
    """A copy of ``rule`` with ``path`` ("selection.countUnit") set to value (None deletes it)."""
    out = copy.deepcopy(rule)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    if value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return out


# --------------------------------------------------------------------------- valid documents


def test_every_aws_example_policy_is_accepted(tmp_path):
    examples = [
        [AGE],
        [UNTAGGED | {"rulePriority": 1}],
        [PULLED],
        [ARCHIVED | {"rulePriority": 1}],
        [AGE, UNTAGGED, ANY],
        # "Combining archive and expire rules": two 'any' rules, one per storage class
        [
            changed(changed(PULLED, "selection.countType", "sinceImagePushed"), "selection.countNumber", 30),
            ARCHIVED,
        ],
    ]
    for rules in examples:
        policies = load_policies(write(tmp_path, {"rules": rules}))
        resolved = policies.resolve("any/repo")
        assert resolved is not None and [r.priority for r in resolved.rules] == sorted(
            r["rulePriority"] for r in rules
        )


def test_a_plain_ecr_policy_applies_to_every_repository_as_a_dry_run(tmp_path):
    policies = load_policies(write(tmp_path, {"rules": [AGE]}, "lifecycle.json"))
    resolved = policies.resolve("team/anything", "some-registry")
    assert resolved.name == "lifecycle" and resolved.dry_run and not policies.enabled("team/anything")
    assert policies.safety("x") == (None, None)
    assert resolved.ecr_policy() == {"rules": [AGE]}


def test_yaml_and_json_give_the_same_policies(tmp_path):
    data = {"policies": [{"name": "p", "repositories": ["a/*"], "rules": [AGE, UNTAGGED]}]}
    a = load_policies(write(tmp_path, data, "p.json")).resolve("a/x")
    b = load_policies(write(tmp_path, data, "p.yaml")).resolve("a/x")
    assert a.rules == b.rules and a.name == b.name


# --------------------------------------------------------------------------- AWS validation rules


def test_priorities_must_be_unique(tmp_path):
    refuse(tmp_path, [AGE, UNTAGGED | {"rulePriority": 1}], "rulePriority=1", "rulePriority", "unique")


@pytest.mark.parametrize("value", [0, -1, "1", 1.5, True, None])
def test_priority_must_be_a_positive_integer(tmp_path, value):
    refuse(tmp_path, [changed(AGE, "rulePriority", value)], "rulePriority")


def test_the_any_rule_must_have_the_highest_priority(tmp_path):
    msg = refuse(
        tmp_path, [ANY | {"rulePriority": 1}, AGE | {"rulePriority": 2}], "rule rulePriority=1", "tagStatus"
    )
    assert "'any'" in msg and "highest" in msg


def test_tagged_needs_exactly_one_tag_list(tmp_path):
    refuse(
        tmp_path,
        [changed(AGE, "selection.tagPatternList", None)],
        "rulePriority=1",
        "selection.tagPatternList",
    )
    both = changed(AGE, "selection.tagPrefixList", ["prod"])
    refuse(tmp_path, [both], "rulePriority=1", "tagPrefixList", "cannot be combined")


@pytest.mark.parametrize("status", ["untagged", "any"])
def test_untagged_and_any_take_no_tag_list(tmp_path, status):
    bad = changed(UNTAGGED, "selection.tagPrefixList", ["x"])
    bad["selection"]["tagStatus"] = status
    refuse(tmp_path, [bad], "rulePriority=2", "selection.tagPrefixList", status)


def test_at_most_four_wildcards_per_pattern(tmp_path):
    ok = changed(AGE, "selection.tagPatternList", ["*test*1*2*3", "test*1*2*3*"])  # AWS's valid example
    load_policies(write(tmp_path, {"rules": [ok]}))
    bad = changed(AGE, "selection.tagPatternList", ["test*1*2*3*4*5*6"])  # AWS's invalid example
    refuse(tmp_path, [bad], "rulePriority=1", "selection.tagPatternList", "at most 4")


def test_count_unit_only_with_since_count_types(tmp_path):
    bad = changed(UNTAGGED, "selection.countUnit", "days")
    refuse(tmp_path, [bad], "rulePriority=2", "selection.countUnit", "imageCountMoreThan")
    refuse(tmp_path, [changed(AGE, "selection.countUnit", None)], "rulePriority=1", "selection.countUnit")
    refuse(tmp_path, [changed(AGE, "selection.countUnit", "hours")], "selection.countUnit", "'days'")


@pytest.mark.parametrize("value", [0, -3, 1.5, "2", None])
def test_count_number_must_be_at_least_one(tmp_path, value):
    refuse(
        tmp_path, [changed(AGE, "selection.countNumber", value)], "rulePriority=1", "selection.countNumber"
    )


def test_since_image_pulled_can_only_transition(tmp_path):
    bad = changed(PULLED, "action", {"type": "expire"})
    refuse(tmp_path, [bad], "rulePriority=1", "action.type", "sinceImagePulled")


def test_since_image_transitioned_needs_archive_and_expire(tmp_path):
    refuse(
        tmp_path,
        [changed(ARCHIVED, "selection.storageClass", None)],
        "rulePriority=2",
        "selection.storageClass",
        "'archive'",
    )
    bad = changed(ARCHIVED, "action", {"type": "transition", "targetStorageClass": "archive"})
    refuse(tmp_path, [bad], "rulePriority=2", "action.type", "sinceImageTransitioned")
    refuse(
        tmp_path, [changed(AGE, "selection.storageClass", "archive")], "selection.storageClass", "'standard'"
    )


def test_transition_needs_the_archive_target(tmp_path):
    refuse(tmp_path, [changed(PULLED, "action.targetStorageClass", None)], "action.targetStorageClass")
    refuse(tmp_path, [changed(PULLED, "action.targetStorageClass", "glacier")], "action.targetStorageClass")
    refuse(
        tmp_path,
        [changed(AGE, "action.targetStorageClass", "archive")],
        "action.targetStorageClass",
        "only allowed with action",
    )


def test_at_most_fifty_rules(tmp_path):
    rules = [
        changed(AGE, "selection.tagPatternList", [f"p{i}*"]) | {"rulePriority": i + 1} for i in range(51)
    ]
    refuse(tmp_path, rules, "rules", "51 rules", "at most 50")
    load_policies(write(tmp_path, {"rules": rules[:50]}))


def test_policy_text_at_most_30720_characters(tmp_path):
    long = [
        changed(AGE, "description", "x" * (MAX_POLICY_CHARS // 2)) | {"rulePriority": i + 1} for i in range(2)
    ]
    long[1]["selection"]["tagPatternList"] = ["other*"]
    refuse(tmp_path, long, "rules", "30720")


def test_tag_lists_must_form_a_unique_set_per_storage_class(tmp_path):
    same = changed(AGE, "selection.tagPatternList", ["prod*"]) | {"rulePriority": 2}
    refuse(tmp_path, [AGE, same], "rulePriority=2", "selection.tagPatternList", "unique set")
    reordered = [changed(AGE, "selection.tagPrefixList", ["a", "b"]), {}]
    reordered[0]["selection"].pop("tagPatternList")
    reordered[1] = copy.deepcopy(reordered[0]) | {"rulePriority": 2}
    reordered[1]["selection"]["tagPrefixList"] = ["b", "a"]
    refuse(tmp_path, reordered, "rulePriority=2", "selection.tagPrefixList")


def test_one_untagged_rule_per_storage_class(tmp_path):
    second = changed(UNTAGGED, "selection.countNumber", 5) | {"rulePriority": 3}
    refuse(tmp_path, [UNTAGGED, second], "rulePriority=3", "selection.tagStatus", "untagged")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("selection.tagStatus", "all", "selection.tagStatus"),
        ("selection.countType", "sinceImageCreated", "selection.countType"),
        ("action.type", "delete", "action.type"),
        ("selection.storageClass", "glacier", "selection.storageClass"),
        ("selection.tagPatternList", [], "selection.tagPatternList"),
        ("selection.tagPatternList", "prod*", "selection.tagPatternList"),
        ("selection.tagsPattern", ["x"], "selection.tagsPattern"),
        ("priority", 1, "priority"),
        ("description", 3, "description"),
    ],
)
def test_wrong_values_and_unknown_fields_name_the_field(tmp_path, path, value, field):
    refuse(tmp_path, [changed(AGE, path, value)], "rulePriority=1", field)


def test_missing_required_parts(tmp_path):
    refuse(tmp_path, [changed(AGE, "selection", None)], "selection", "required")
    refuse(tmp_path, [changed(AGE, "action", None)], "action", "required")
    refuse(tmp_path, [], "rules", "non-empty")
    nopriority = changed(AGE, "rulePriority", None)
    refuse(tmp_path, [nopriority], "rules[0]", "rulePriority")


def test_tag_regex_list_is_validated(tmp_path):
    regex = changed(AGE, "selection.tagPatternList", None)
    regex["selection"]["tagRegexList"] = [r"^v\d+\.\d+\.\d+$"]
    policies = load_policies(write(tmp_path, {"rules": [regex]}))
    assert not policies.resolve("x").native
    bad = copy.deepcopy(regex)
    bad["selection"]["tagRegexList"] = ["(unclosed"]
    refuse(tmp_path, [bad], "rulePriority=1", "selection.tagRegexList", "regular expression")
    re2 = copy.deepcopy(regex)
    re2["selection"]["tagRegexList"] = [r"(?<=v)1"]  # lookbehind: Python accepts it, RE2 does not
    refuse(tmp_path, [re2], "selection.tagRegexList", "RE2")


def test_unreadable_files_name_the_file(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"rules": [')
    with pytest.raises(PolicyError, match=r"bad\.json: not valid JSON at line 1"):
        load_policies(bad_json)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("policies: [\n  - name: x\n   rules: ]")
    with pytest.raises(PolicyError, match=r"bad\.yaml: not valid YAML at line"):
        load_policies(bad_yaml)
    with pytest.raises(PolicyError, match=r"missing\.json: cannot read"):
        load_policies(tmp_path / "missing.json")
    with pytest.raises(PolicyError, match="unknown field in an ECR lifecycle policy"):
        load_policies(write(tmp_path, {"rules": [AGE], "extra": 1}))
    with pytest.raises(PolicyError, match="top level must be an object"):
        load_policies(write(tmp_path, [AGE]))


# --------------------------------------------------------------------------- wrapper format


def wrapper(tmp_path, data, name="policies.yaml"):
    return load_policies(write(tmp_path, data, name))


def test_wrapper_resolution_first_match_excludes_overrides_and_defaults(tmp_path):
    policies = wrapper(
        tmp_path,
        {
            "version": 1,
            "defaults": {"keep_in_use": True, "protect_tags": ["latest"], "max_fraction": 0.2},
            "policies": [
                {
                    "name": "services",
                    "registries": ["ecr-*"],
                    "repositories": ["team/*"],
                    "exclude_repositories": ["team/legacy-*"],
                    "enabled": True,
                    "max_deletions": 100,
                    "rules": [AGE],
                    "overrides": [
                        {"repositories": ["team/api"], "max_deletions": 5, "untag_partial": True},
                        {"repositories": ["team/api", "team/web"], "enabled": False, "rules": [UNTAGGED]},
                    ],
                },
                {"name": "catch-all", "rules": [UNTAGGED], "keep_semver": {"per": "major", "keep": 2}},
            ],
        },
    )
    api = policies.resolve("team/api", "ecr-prod")
    assert api.name == "services" and api.max_deletions == 5 and api.untag_partial and not api.enabled
    assert [r.priority for r in api.rules] == [2]  # the later override's rules replace the policy's
    assert api.max_fraction == 0.2 and api.protect_tags == ("latest",)
    other = policies.resolve("team/other", "ecr-prod")
    assert other.enabled and other.max_deletions == 100 and not other.untag_partial
    assert policies.safety("team/other", "ecr-prod") == (100, 0.2)
    assert policies.enabled("team/other", "ecr-prod")
    legacy = policies.resolve("team/legacy-1", "ecr-prod")
    assert legacy.name == "catch-all" and legacy.keep_semver.keep == 2 and not legacy.enabled
    assert policies.resolve("team/other", "oci-local").name == "catch-all"  # registry glob
    assert api.key != other.key


def test_wrapper_defaults_are_safe():
    policies = parse_policies({"policies": [{"name": "p", "rules": [AGE]}]})
    p = policies.resolve("r")
    assert p.dry_run and p.keep_in_use and not p.untag_partial and p.children_follow_index
    assert p.protect_tags == ("latest", r"re:^v?\d+\.\d+\.\d+$")
    assert p.archive_layers is None


def test_overrides_may_unset_an_inherited_setting():
    policies = parse_policies(
        {
            "defaults": {"keep_semver": {"keep": 3}},
            "policies": [
                {"name": "p", "rules": [AGE], "overrides": [{"repositories": ["x"], "keep_semver": None}]}
            ],
        }
    )
    assert policies.resolve("y").keep_semver.keep == 3
    assert policies.resolve("x").keep_semver is None


def test_rules_in_overrides_are_validated_with_their_location(tmp_path):
    bad = {
        "policies": [
            {
                "name": "p",
                "rules": [AGE],
                "overrides": [{"repositories": ["x"], "rules": [PULLED | {"action": {"type": "expire"}}]}],
            }
        ]
    }
    with pytest.raises(PolicyError) as err:
        wrapper(tmp_path, bad)
    assert "policy 'p' overrides[0]: rule rulePriority=1: action.type" in str(err.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"policies": [{"name": "p", "rules": [AGE], "enabeld": True}]}, "policy 'p': enabeld: Extra inputs"),
        ({"policies": [{"name": "p", "rules": [AGE], "max_fraction": 2}]}, "policy 'p': max_fraction"),
        ({"policies": [{"name": "p"}]}, "policy 'p': rules: required"),
        (
            {"policies": [{"name": "p", "rules": [AGE]}, {"name": "p", "rules": [AGE]}]},
            "names must be unique",
        ),
        ({"policies": []}, "policies"),
        ({"version": 2, "policies": [{"name": "p", "rules": [AGE]}]}, "version"),
        ({"policies": [{"name": "p", "rules": [AGE], "protect_tags": ["re:(x"]}]}, "protect_tags"),
        (
            {"policies": [{"name": "p", "rules": [AGE], "keep_semver": {"per": "patch", "keep": 1}}]},
            "keep_semver.per",
        ),
        ({"policies": [{"name": "p", "rules": [AGE, AGE]}]}, "policy 'p': rule rulePriority=1: rulePriority"),
    ],
)
def test_wrapper_errors_name_file_policy_and_field(tmp_path, data, needle):
    with pytest.raises(PolicyError) as err:
        wrapper(tmp_path, data)
    assert "policies.yaml" in str(err.value) and needle in str(err.value), str(err.value)


def test_matchers():
    import re

    assert re.match(ecr_pattern_regex("prod*"), "prod") and re.match(
        ecr_pattern_regex("prod*"), "production-team1"
    )
    assert re.match(ecr_pattern_regex("*prod*"), "repo-production")
    assert not re.match(ecr_pattern_regex("prod*"), "my-prod")
    assert re.match(ecr_pattern_regex("v1.?"), "v1.?") and not re.match(ecr_pattern_regex("v1.?"), "v1x5")
    assert re.match(glob_regex("release-[0-9]*"), "release-1") and not re.match(
        glob_regex("release-[0-9]*"), "release-x"
    )
    assert re.match(glob_regex("rc?"), "rc1") and not re.match(glob_regex("rc?"), "rc10")
