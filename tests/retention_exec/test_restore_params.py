"""registry_restore's trigger form (its Params schema) and both of its modes, run with dag.test()
against images really archived from the distribution registry into moto's S3."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from include.registry_ops.retention.executor import Limits, execute
from include.registry_ops.retention.restore_request import (
    MODE_LIST,
    MODE_RESTORE,
    ParamError,
    from_params,
    listing_text,
)
from tests.retention_exec.helpers import (
    BUCKET,
    oci_registry,
    oldest_images,
    plan_for,
    present,
    run_ctx,
    seed,
    small_fleet,
    unique,
    visible,
    with_children,
)

GOOD = "sha256:" + "ab" * 32
OPTIONAL = ("digest", "tag", "registry", "repository", "to_registry", "to_repository")


@pytest.fixture(scope="module")
def restore_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags["registry_restore"]


def _serialized_params(dag) -> dict:
    """The Params as the UI receives them (the serialized DAG's JSON)."""
    from airflow.serialization.serialized_objects import DagSerialization

    data = json.loads(json.dumps(DagSerialization.to_dict(dag)))["dag"]["params"]
    return {name: {**spec, "schema": spec["schema"]["__var"]} for name, spec in data}


def test_form_schema_requires_nothing_and_opens_on_the_listing(restore_dag):
    params = _serialized_params(restore_dag)
    assert next(iter(params)) == "mode"  # the form's order: what the run does comes first
    assert set(OPTIONAL) <= set(params)
    optional = [n for n in params if n not in ("mode", "move_tags")]  # any Param added later too
    for name in optional:
        schema, default = params[name]["schema"], params[name]["default"]
        assert default is None and "null" in schema["type"] and "string" in schema["type"], name
    assert params["digest"]["schema"]["pattern"] == r"^sha256:[0-9a-f]{64}$"
    mode = params["mode"]
    assert mode["default"] == MODE_LIST and mode["schema"]["enum"] == [MODE_LIST, MODE_RESTORE]
    assert params["move_tags"]["default"] is False


def _with(dag, **values):
    """A copy of the DAG's Params holding these values, as a trigger's conf sets them."""
    params = copy.deepcopy(dag.params)
    for name, value in values.items():
        params.get_param(name).value = value
    return params


def test_defaults_validate_and_a_bad_digest_is_rejected(restore_dag):
    from airflow.sdk.exceptions import ParamValidationError

    defaults = copy.deepcopy(restore_dag.params).validate()
    assert defaults == {**dict.fromkeys(defaults), "mode": MODE_LIST, "move_tags": False}  # the rest null
    assert set(OPTIONAL) <= set(defaults)
    assert _with(restore_dag, mode=MODE_RESTORE, digest=GOOD).validate()["digest"] == GOOD
    for bad in ("sha256:xyz", GOOD.upper(), GOOD[7:], GOOD + "0", "md5:" + "ab" * 16):
        with pytest.raises(ParamValidationError, match=r"Invalid input for param digest: .* does not match"):
            _with(restore_dag, digest=bad).validate()
    with pytest.raises(ParamValidationError, match="param mode"):
        _with(restore_dag, mode="delete everything").validate()
    with pytest.raises(ParamValidationError, match="param tag"):
        _with(restore_dag, tag=7).validate()


def test_a_restore_is_never_inferred_from_the_listing_mode():
    with pytest.raises(ParamError, match=r"mode is 'list recent archives' but digest='sha256:ab"):
        from_params({"mode": MODE_LIST, "digest": GOOD})
    with pytest.raises(ParamError, match=r"tag='v1', move_tags=True given: set mode to 'restore'"):
        from_params({"tag": "v1", "move_tags": True})  # mode left out: the form's default
    with pytest.raises(ParamError, match="Param 'mode': 'delete'"):
        from_params({"mode": "delete"})
    with pytest.raises(ParamError, match="Param 'digest': 'sha256:XY' is not sha256:"):
        from_params({"mode": MODE_RESTORE, "digest": "sha256:XY"})
    # blanks (an API caller's "") mean "not given", like null
    req = from_params({"mode": MODE_LIST, "digest": " ", "tag": "", "repository": "team/app"})
    assert (req.mode, req.digest, req.tag, req.repository) == (MODE_LIST, None, None, "team/app")
    req = from_params({"mode": MODE_RESTORE, "tag": "v1", "repository": "r", "move_tags": True})
    assert req.restore_kwargs() == {
        "registry": None,
        "repository": "r",
        "digest": None,
        "tag": "v1",
        "to_registry": None,
        "to_repository": None,
        "move_tags": True,
    }
    with pytest.raises(ParamError, match=r"to_registry='layout' given: set mode to 'restore'"):
        from_params({"to_registry": "layout"})  # a target alone never starts a restore


def test_listing_text_is_a_table():
    text = listing_text(
        [
            {
                "registry": "oci-local",
                "repository": "team/app",
                "digest": GOOD,
                "tags": ["1.0.0", "abc1234"],
                "archived_at": "2026-11-27T10:00:00+00:00",
                "restorable": "full",
            }
        ]
    )
    head, row = text.splitlines()
    assert head.split() == ["archived", "at", "image", "tags", "restorable"]
    assert f"oci-local/team/app@{GOOD}" in row and "1.0.0,abc1234" in row and row.endswith("full")
    assert listing_text([]) == "(the archive is empty)"


@pytest.fixture(scope="module")
def archived(moto_server, registry_server, s3, tmp_path_factory):
    """Three images of a fresh repository archived and deleted by the executor; a config for them."""
    import contextlib

    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    oci = oci_registry(registry_server.url)
    prefix = unique("restore-form")
    repo = seed(oci, small_fleet(prefix, repositories=1, images=12, seed=5))[0]
    specs = visible(oci, repo)
    chosen = [m for m in oldest_images(specs, 3)]
    limits = Limits(max_deletions_per_run=10_000, max_fraction=1.0)
    [result] = execute(
        plan_for("oci-local", repo, specs, with_children(specs, chosen)),
        run_ctx(s3),
        lambda _: oci,
        limits=limits,
    )
    assert result["status"] == "done" and not any(present(oci, repo.name, m.digest) for m in chosen)
    path = tmp_path_factory.mktemp("restore-form") / "registry-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [prefix + "*"]}
                ],
                "storage": {"conn_id": "aws_default", "bucket": BUCKET},
            }
        )
    )
    return {"config": path, "oci": oci, "repo": repo, "chosen": chosen}


def _fresh_dag():
    """A DagBag per run: dag.test(run_conf=...) leaves the conf on the DAG object."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder="dags").dags["registry_restore"]


def test_list_mode_logs_the_archives_and_restore_mode_restores(airflow_db, archived, monkeypatch, caplog):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(archived["config"]))
    repo, oci = archived["repo"], archived["oci"]
    dr = _fresh_dag().test(run_conf={"mode": MODE_LIST, "registry": "oci-local", "repository": repo.name})
    assert dr.state == DagRunState.SUCCESS
    assert "no digest or tag given; the newest archived images" in caplog.text
    for m in archived["chosen"]:
        assert f"oci-local/{repo.name}@{m.digest}" in caplog.text
    [ti] = dr.get_task_instances()
    assert {e["digest"] for e in ti.xcom_pull(task_ids="restore")["recent"]} >= {
        m.digest for m in archived["chosen"]
    }

    spec = archived["chosen"][0]
    dr = _fresh_dag().test(run_conf={"mode": MODE_RESTORE, "digest": spec.digest, "registry": "oci-local"})
    assert dr.state == DagRunState.SUCCESS
    assert oci.get_manifest(repo.name, spec.digest).raw == spec.raw


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"digest": GOOD}, "mode is 'list recent archives' but digest="),  # the form's default mode
        ({"mode": MODE_RESTORE}, "give exactly one of a digest or a tag"),
        ({"mode": MODE_RESTORE, "tag": "v1"}, "restoring by tag needs the repository"),
    ],
)
def test_bad_requests_fail_at_once_naming_the_problem(
    airflow_db, archived, monkeypatch, capfd, conf, message
):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(archived["config"]))
    dr = _fresh_dag().test(run_conf=conf)
    assert dr.state == DagRunState.FAILED
    [ti] = dr.get_task_instances()
    assert ti.state == "failed" and ti.try_number == 1  # no retry
    logs = capfd.readouterr()
    assert f"AirflowFailException: {message}" in logs.out + logs.err
