"""Drift: each ECR repository's native lifecycle policy (moto) against the declared rules.

moto stores lifecycle policies without evaluating them, and its validator rejects the archive
fields (``storageClass``, ``sinceImagePulled``, ``transition``) that AWS accepts since Nov 2025,
so native policies here use the older subset; the comparison itself is field-generic.
"""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError

from include.registry_ops.retention.drift import check_drift, check_repository, compare
from include.registry_ops.retention.policy import parse_policies

AGE = {
    "rulePriority": 1,
    "description": "old prod images",
    "selection": {
        "tagStatus": "tagged",
        "tagPrefixList": ["prod", "eu"],
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 14,
    },
    "action": {"type": "expire"},
}
UNTAGGED = {
    "rulePriority": 2,
    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 10},
    "action": {"type": "expire"},
}


@pytest.fixture
def prefix() -> str:
    return f"ret-plan/{uuid.uuid4().hex[:8]}"


def declared(prefix: str):
    return parse_policies(
        {
            "policies": [
                {
                    "name": "regex",
                    "repositories": [f"{prefix}/regex"],
                    "rules": [
                        {
                            "rulePriority": 1,
                            "selection": {
                                "tagStatus": "tagged",
                                "tagRegexList": [r"^pr-\d+$"],
                                "countType": "imageCountMoreThan",
                                "countNumber": 3,
                            },
                            "action": {"type": "expire"},
                        }
                    ],
                },
                {
                    "name": "fleet",
                    "repositories": [f"{prefix}/*"],
                    "exclude_repositories": [f"{prefix}/unmanaged*"],
                    "rules": [AGE, UNTAGGED],
                },
            ]
        },
        "drift-test.yaml",
    )


def put(ecr, repo: str, rules: list | None) -> None:
    ecr.create_repository(repositoryName=repo)
    if rules is not None:
        ecr.put_lifecycle_policy(
            repositoryName=repo, lifecyclePolicyText=json.dumps({"rules": rules}, indent=3)
        )


def test_drift_statuses_against_moto(ecr, prefix):
    same = json.loads(json.dumps([UNTAGGED, AGE]))  # other rule order, other key order, list order
    same[1]["selection"]["tagPrefixList"] = ["eu", "prod"]
    same[1]["description"] = "edited in the console"
    put(ecr, f"{prefix}/in-sync", same)
    changed = json.loads(json.dumps([AGE, UNTAGGED]))
    changed[1]["selection"]["countNumber"] = 5
    put(ecr, f"{prefix}/differs", changed)
    put(ecr, f"{prefix}/missing", None)
    put(ecr, f"{prefix}/unmanaged", [UNTAGGED])
    put(ecr, f"{prefix}/unmanaged-none", None)
    put(ecr, f"{prefix}/regex", None)
    put(
        ecr,
        f"{prefix}/extra-rule",
        [
            AGE,
            UNTAGGED,
            UNTAGGED
            | {
                "rulePriority": 7,
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 50},
            },
        ],
    )

    drift = {
        d.repository.split("/")[-1]: d
        for d in check_drift(ecr, declared(prefix))
        if d.repository.startswith(prefix)
    }
    status = {name: d.status for name, d in drift.items()}
    assert status == {
        "in-sync": "in_sync",
        "differs": "differs",
        "missing": "missing",
        "unmanaged": "unmanaged",
        "unmanaged-none": "none",
        "regex": "missing",
        "extra-rule": "differs",
    }
    assert drift["in-sync"].cosmetic == [
        "rule 1: description: declared 'old prod images', native 'edited in the console'"
    ]
    assert drift["differs"].differences == ["rule 2: countNumber: declared 10, native 5"]
    assert drift["extra-rule"].differences == ["rule 7: in the native policy but not declared"]
    assert drift["regex"].not_expressible and not drift["missing"].not_expressible
    assert drift["in-sync"].policy == "fleet" and drift["unmanaged"].policy is None
    assert drift["differs"].to_dict()["status"] == "differs"


def test_a_deleted_repository_is_reported(ecr, prefix):
    d = check_repository(ecr, f"{prefix}/never-created", declared(prefix).resolve(f"{prefix}/x"))
    assert d.status == "repository_missing"


def test_moto_rejects_archive_fields_that_aws_accepts(ecr, prefix):
    """Documents the emulator gap (airflow3.md §10): archive rules cannot be put on moto repos."""
    ecr.create_repository(repositoryName=f"{prefix}/archive")
    archive = {
        "rulePriority": 1,
        "selection": {
            "tagStatus": "any",
            "countType": "sinceImagePulled",
            "countUnit": "days",
            "countNumber": 90,
        },
        "action": {"type": "transition", "targetStorageClass": "archive"},
    }
    with pytest.raises(ClientError, match="InvalidParameterException"):
        ecr.put_lifecycle_policy(
            repositoryName=f"{prefix}/archive", lifecyclePolicyText=json.dumps({"rules": [archive]})
        )


def test_compare_normalizes_defaults_and_reports_archive_fields():
    archived = {
        "rulePriority": 3,
        "selection": {
            "tagStatus": "any",
            "storageClass": "archive",
            "countType": "sinceImageTransitioned",
            "countUnit": "days",
            "countNumber": 365,
        },
        "action": {"type": "expire"},
    }
    explicit = json.loads(json.dumps(AGE))
    explicit["selection"]["storageClass"] = "standard"
    assert compare({"rules": [AGE, archived]}, json.dumps({"rules": [explicit, archived]})) == ([], [])
    longer = json.loads(json.dumps(archived))
    longer["selection"]["countNumber"] = 400
    diffs, _ = compare({"rules": [archived]}, {"rules": [longer]})
    assert diffs == ["rule 3: countNumber: declared 365, native 400"]
    diffs, _ = compare({"rules": [AGE]}, {"rules": []})
    assert diffs == ["rule 1: declared but not in the native policy"]
