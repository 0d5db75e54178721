"""The config model: the shipped file is valid; each kind of mistake names file, key and problem."""

from __future__ import annotations

import traceback

import pytest

from include.registry_ops.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

GOOD = {
    "registries": [
        {
            "name": "prod-ecr",
            "kind": "ecr",
            "conn_id": "aws_prod",
            "region": "eu-west-1",
            "include": ["team-*/*"],
            "exclude": ["*/scratch-*"],
        },
        {"name": "harbor", "kind": "oci", "conn_id": "harbor", "url": "https://harbor.example.com"},
    ],
    "storage": {"bucket": "ops-bucket"},
}


def test_shipped_config_is_valid():
    cfg = load_config(DEFAULT_CONFIG)
    assert [r.kind for r in cfg.registries] == ["ecr", "oci"]
    assert cfg.storage.prefixes.inventory == "inventory/"


def test_globs_include_and_exclude():
    reg = parse_config(GOOD).registries[0]
    assert reg.wants("team-a/api")
    assert not reg.wants("team-a/scratch-1")
    assert not reg.wants("other/api")


@pytest.mark.parametrize(
    ("mutate", "where", "problem"),
    [
        (lambda c: c["registries"][1].update(kind="quay"), "registries[1].kind", "'ecr' or 'oci'"),
        (lambda c: c["registries"][0].pop("conn_id"), "registries[0].conn_id", "Field required"),
        (lambda c: c["registries"][0].update(url="https://x"), "registries[0]", "'url' applies to kind"),
        (lambda c: c["registries"][1].update(region="us-east-1"), "registries[1]", "'region' and"),
        (lambda c: c["registries"][0].update(name="Bad Name"), "registries[0].name", "pattern"),
        (lambda c: c["registries"][1].update(name="prod-ecr"), "<top level>", "repeated: prod-ecr"),
        (lambda c: c["storage"].update(bucket="UPPER"), "storage.bucket", "pattern"),
        (lambda c: c.update(registries=[]), "registries", "at least 1"),
        (lambda c: c.update(extra_key=1), "extra_key", "Extra inputs are not permitted"),
        (lambda c: c["registries"][0].update(registry_id="12"), "registries[0].registry_id", "pattern"),
    ],
)
def test_each_mistake_names_file_key_and_problem(tmp_path, mutate, where, problem):
    import copy

    import yaml

    data = copy.deepcopy(GOOD)
    mutate(data)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{path}: {where}" in msg and problem in msg


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("registries:\n  - name: a\n    kind: [ecr\n")
    with pytest.raises(ConfigError, match=rf"{path}: not valid YAML at line \d+"):
        load_config(path)


def test_missing_file_and_wrong_top_level(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_unknown_registry_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown registry 'nope' \(configured: prod-ecr, harbor\)"):
        parse_config(GOOD).registry("nope")


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    import yaml

    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    monkeypatch.setenv("REGISTRY_OPS_CONFIG", str(path))
    assert load_config().source == str(path)


SECRET = "hunter2-registry-pass"


@pytest.mark.parametrize(
    "url",
    [
        f"https://ops:{SECRET}@harbor.example.com",
        f"http://{SECRET}@127.0.0.1:5000/",
        f"https://ops:{SECRET}@harbor.example.com/v2/",  # also off-pattern: still refused as credentials
    ],
)
def test_credentials_in_a_registry_url_are_refused_without_echoing_them(tmp_path, url):
    import copy

    import yaml

    data = copy.deepcopy(GOOD)
    data["registries"][1]["url"] = url
    path = tmp_path / "creds.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{path}: registries[1].url: " in msg and "Airflow connection" in msg, msg
    assert SECRET not in msg and SECRET not in "".join(traceback.format_exception(err.value))
    assert err.value.__context__ is None  # pydantic's error, which repeats the input, is not chained


def test_cli_refuses_credentials_in_url_and_keeps_them_off_stderr(tmp_path, capfd):
    import copy

    import yaml

    from include.registry_ops.cli import main

    data = copy.deepcopy(GOOD)
    data["registries"][1]["url"] = f"https://ops:{SECRET}@harbor.example.com"
    path = tmp_path / "creds.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["inventory", "--config", str(path), "--out", str(tmp_path / "x.parquet")])
    out, err = capfd.readouterr()
    assert code == 2 and "registries[1].url" in err and "credentials" in err, err
    assert SECRET not in out + err


def test_a_plain_registry_url_is_fine():
    import copy

    data = copy.deepcopy(GOOD)
    data["registries"][1]["url"] = "http://127.0.0.1:5000/"
    assert parse_config(data).registries[1].url == "http://127.0.0.1:5000/"


BOOLEANS = [
    (("registries", 1, "read_configs"), "registries[1].read_configs"),
    (("retention", "archive_layers"), "retention.archive_layers"),
    (("scan", "scan_untagged"), "scan.scan_untagged"),
]


def _set(data: dict, path: tuple, value: object) -> dict:
    import copy

    data = copy.deepcopy(data)
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "where"), BOOLEANS, ids=[w for _, w in BOOLEANS])
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "on", None])
def test_booleans_are_strict(path, where, value):
    with pytest.raises(ConfigError) as err:
        parse_config(_set(GOOD, path, value), "strict.yaml")
    assert f"strict.yaml: {where}: Input should be a valid boolean" in str(err.value)


@pytest.mark.parametrize(("path", "where"), BOOLEANS, ids=[w for _, w in BOOLEANS])
def test_yaml_true_and_false_stay_booleans(tmp_path, path, where):
    import yaml

    for text, expected in (("true", True), ("false", False)):
        data = _set(GOOD, path, "__B__")
        file = tmp_path / f"{text}.yaml"
        file.write_text(yaml.safe_dump(data).replace("__B__", text))
        config = load_config(file)
        node: object = config
        for part in path:
            node = node[part] if isinstance(part, int) else getattr(node, part)
        assert node is expected, where


def test_backup_and_dr_name_only_configured_registries():
    from include.registry_ops.config import ConfigError, parse_config

    base = {
        "registries": [{"name": "a", "kind": "ocilayout", "path": "/tmp/a"}],
        "storage": {"bucket": "bkt"},
    }
    config = parse_config(base, "t")
    assert (config.backup.full_every_days, config.backup.keep_daily, config.backup.keep_monthly) == (
        7,
        30,
        12,
    )
    assert (config.dr.rto_seconds, config.dr.rpo_seconds) == (4 * 3600, 26 * 3600)
    for extra, key in (
        ({"backup": {"registries": ["zz"]}}, "backup.registries"),
        ({"dr": {"target": "zz"}}, "dr.target"),
    ):
        with pytest.raises(ConfigError, match=rf"{key}: unknown registry 'zz'"):
            parse_config({**base, **extra}, "t")
