"""docker-compose.yaml as Docker Compose v2 reads it (``docker compose config``, run for real):
the default profile (a team's registries, nothing emulated), the ``localstack`` profile, with
and without a ``.env``. No Docker engine is needed for ``config``; none runs here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.compose.render import COMPOSE_FILE, REPO, SECRETS, ComposeError, Rendered, dotenv, render

AIRFLOW_HOME = "/opt/airflow"
# Services built from the x-airflow-common anchor, by the profile that starts them.
CORE_AIRFLOW = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
)
ONE_SHOT = {"airflow-init", "airflow-cli", "localstack-init"}
LOCALSTACK = ("registry", "moto", "mail", "localstack-init")
EMULATOR_HOSTS = ("moto", "registry", "mail")
ALL_PROFILES = ("localstack", "flower", "debug", "trivy-server")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def default(workdir) -> Rendered:
    """The team's stack: secrets in .env, no profile."""
    return render(workdir, dotenv(SECRETS))


@pytest.fixture(scope="module")
def everything(workdir) -> Rendered:
    return render(workdir, dotenv(SECRETS), ALL_PROFILES)


def airflow_services(rendered: Rendered) -> list[str]:
    image = rendered.services["airflow-scheduler"]["image"]
    return [n for n, s in rendered.services.items() if s.get("image") == image]


def container_ports(service: dict) -> set[int]:
    return {int(p["target"]) for p in service.get("ports", [])} | {int(p) for p in service.get("expose", [])}


def depends_on(service: dict) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in (service.get("depends_on") or {}).items()}


# ---- profiles ---------------------------------------------------------------------------------


def test_the_default_profile_is_airflow_and_its_backends_only(default):
    assert set(default.services) == {"postgres", "redis", *CORE_AIRFLOW}
    assert default.services["postgres"]["image"] == "postgres:16"
    assert default.services["redis"]["image"].startswith("redis:7.2")


def test_the_localstack_profile_adds_the_emulators_and_their_set_up(workdir):
    rendered = render(workdir, dotenv(SECRETS), ("localstack",))
    assert set(rendered.services) == {"postgres", "redis", *CORE_AIRFLOW, *LOCALSTACK}
    for name in LOCALSTACK:
        assert rendered.services[name]["profiles"] == ["localstack"], name


def test_every_airflow_service_is_built_from_the_common_anchor(everything):
    assert set(airflow_services(everything)) == {
        *CORE_AIRFLOW,
        "airflow-cli",
        "flower",
        "localstack-init",
    }


def test_default_services_do_not_depend_on_profiled_ones(everything):
    profiled = {n for n, s in everything.services.items() if s.get("profiles")}
    for name, svc in everything.services.items():
        if not svc.get("profiles"):
            assert not set(depends_on(svc)) & profiled, f"{name} depends on a profiled service"


# ---- connections: the team's, never the emulators' unless asked -----------------------------


def test_no_service_of_the_default_profile_carries_a_connection(default):
    for name in default.services:
        env = default.env(name)
        assert not [k for k in env if k.startswith("AIRFLOW_CONN_")], name
        for key, value in env.items():
            hosts = re.findall(r"(?:https?://|\"host\":\s*\")([\w.-]+)", value)
            assert not set(hosts) & set(EMULATOR_HOSTS), f"{name}: {key} points at an emulator"


def test_the_team_env_file_reaches_every_airflow_container(workdir):
    harbor = '{"conn_type": "http", "host": "harbor.example.com", "login": "robot$ops", "password": "p#1"}'
    team = {
        **SECRETS,
        "REGISTRY_OPS_CONFIG": "/opt/airflow/config/team.yaml",
        "AIRFLOW_CONN_AWS_PROD": "aws://?region_name=eu-west-1",
        "AIRFLOW_CONN_HARBOR": f"'{harbor}'",  # single quotes: '$' and '#' stay literal
        "AIRFLOW__SECRETS__BACKEND": "airflow.providers.amazon.aws.secrets."
        "secrets_manager.SecretsManagerBackend",
    }
    rendered = render(workdir, dotenv(team), ALL_PROFILES)
    for name in airflow_services(rendered):
        env = rendered.env(name)
        assert env["AIRFLOW_CONN_AWS_PROD"] == "aws://?region_name=eu-west-1", name
        assert json.loads(env["AIRFLOW_CONN_HARBOR"])["login"] == "robot$ops", name
        assert env["REGISTRY_OPS_CONFIG"] == "/opt/airflow/config/team.yaml", name
        assert env["AIRFLOW__SECRETS__BACKEND"].endswith("SecretsManagerBackend"), name
    for name in set(rendered.services) - set(airflow_services(rendered)):
        assert "AIRFLOW_CONN_AWS_PROD" not in rendered.env(name), f"{name} is not an Airflow container"


def test_env_file_path_names_another_file(workdir):
    project = workdir / "elsewhere"
    project.mkdir()
    (project / "team.env").write_text("AIRFLOW_CONN_AWS_PROD=aws://\n", encoding="utf-8")
    text = dotenv({**SECRETS, "ENV_FILE_PATH": str(project / "team.env")})
    rendered = render(workdir, text)
    assert rendered.env("airflow-worker")["AIRFLOW_CONN_AWS_PROD"] == "aws://"


def test_without_a_config_setting_the_demo_config_is_used(default):
    assert default.env("airflow-worker")["REGISTRY_OPS_CONFIG"] == f"{AIRFLOW_HOME}/config/registry-ops.yaml"


def test_localstack_connections_are_imported_not_set_in_the_environment(workdir):
    from airflow.secrets.local_filesystem import load_connections_dict

    rendered = render(workdir, dotenv(SECRETS), ("localstack",))
    init = rendered.services["localstack-init"]
    script = init["command"][-1]
    source = REPO / "docker" / "localstack" / "connections.json"
    target = {t for t, s in rendered.binds("localstack-init").items() if s == source.parent}
    assert target, "docker/localstack is not mounted into localstack-init"
    assert f"airflow connections import {target.pop()}/{source.name}" in script
    assert "--overwrite" not in script  # a team's own connection of the same id is kept
    assert "registry-ops init" in script  # the demo config's bucket
    assert depends_on(init)["moto"] == "service_healthy"
    assert depends_on(init)["airflow-init"] == "service_completed_successfully"

    conns = load_connections_dict(str(source))  # the parser `airflow connections import` uses
    assert set(conns) == {"aws_default", "oci_local", "smtp_default"}
    aws = conns["aws_default"]
    endpoint = urlsplit(aws.extra_dejson["endpoint_url"])
    assert endpoint.hostname == "moto" and endpoint.port in container_ports(rendered.services["moto"])
    assert (aws.login, aws.password) == ("testing", "testing")  # moto's dummy keys, not a secret
    oci = conns["oci_local"]
    assert oci.host == "registry" and oci.port in container_ports(rendered.services["registry"])
    smtp = conns["smtp_default"]
    assert smtp.host == "mail" and smtp.port in container_ports(rendered.services["mail"])
    assert smtp.extra_dejson["disable_tls"] is True


def test_airflow_init_adds_the_airflow_api_connection_only_when_missing(default):
    script = default.services["airflow-init"]["command"][-1].replace("$$", "$")
    guard = script.index("if ! airflow connections get airflow_api")
    add = script.index("airflow connections add airflow_api")
    assert guard < add
    assert "http://airflow-apiserver:8080" in script
    assert 8080 in container_ports(default.services["airflow-apiserver"])


# ---- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(workdir, secret):
    values = {k: v for k, v in SECRETS.items() if k != secret}
    with pytest.raises(ComposeError, match=f"required variable {secret} is missing a value"):
        render(workdir, dotenv(values))


def test_without_a_dotenv_compose_names_a_missing_secret(workdir):
    with pytest.raises(ComposeError, match=r"required variable \w+ is missing a value: set \w+ in \.env"):
        render(workdir)


def test_the_example_dotenv_lists_every_required_secret(workdir):
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    keys = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    required = set(re.findall(r"\$\{(\w+):\?", "\n".join(x for x in lines if not x.lstrip().startswith("#"))))
    assert required == set(SECRETS) and required <= keys
    filled = "".join(
        f"{line}{SECRETS[line[:-1]]}\n" if line[:-1] in SECRETS and line.endswith("=") else f"{line}\n"
        for line in example.splitlines()
    )
    rendered = render(workdir, filled)
    env = rendered.env("airflow-worker")
    assert env["AIRFLOW__CORE__FERNET_KEY"] == SECRETS["AIRFLOW__CORE__FERNET_KEY"]
    assert not [v for v in env.values() if v.lstrip().startswith("#")], "a comment became a value"


def test_secrets_are_shared_by_all_airflow_components(everything):
    for name in airflow_services(everything):
        env = everything.env(name)
        for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
            assert env[key] == SECRETS[key], (name, key)
        assert env["AIRFLOW__API_AUTH__JWT_ISSUER"], name


# ---- wiring -----------------------------------------------------------------------------------


def test_airflow_services_share_the_common_environment(everything):
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        common = yaml.safe_load(fh)["x-airflow-common"]["environment"]
    reference = everything.env("airflow-scheduler")
    for name in airflow_services(everything):
        env = everything.env(name)
        differing = sorted(k for k in common if env.get(k) != reference[k])
        assert not differing, f"{name}: common environment missing or overridden: {differing}"


def test_common_environment_wiring(default):
    env = default.env("airflow-scheduler")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "true"
    assert env["GX_ANALYTICS_ENABLED"] == "false"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")

    pg = default.env("postgres")
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert db.scheme == "postgresql+psycopg2" and db.hostname == "postgres" and (db.port or 5432) == 5432
    assert (db.username, db.password, db.path) == (
        pg["POSTGRES_USER"],
        SECRETS["POSTGRES_PASSWORD"],
        f"/{pg['POSTGRES_DB']}",
    )
    backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert backend.scheme == "db+postgresql"
    assert (backend.hostname, backend.username, backend.password, backend.path) == (
        db.hostname,
        db.username,
        db.password,
        db.path,
    )
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert 6379 in container_ports(default.services["redis"])


def test_execution_api_url_points_at_the_api_server(default):
    url = urlsplit(default.env("airflow-worker")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.scheme, url.path) == ("http", "/execution/")
    api = default.services[url.hostname]
    assert api["command"] == ["api-server"]
    assert url.port in container_ports(api)
    health = urlsplit(api["healthcheck"]["test"][-1])
    assert (health.port, health.path) == (url.port, "/api/v2/version")


def test_project_folders_are_mounted_in_every_airflow_service(everything):
    for name in airflow_services(everything):
        binds = everything.binds(name)
        for folder in ("dags", "plugins", "include", "config", "policies", "logs"):
            source = binds.get(f"{AIRFLOW_HOME}/{folder}")
            assert source == REPO / folder, f"{name}: {AIRFLOW_HOME}/{folder} mounted from {source}"
            if folder != "logs":  # created by airflow-init at first start
                assert source.is_dir(), f"{name}: {source} does not exist"


def test_pythonpath_config_and_airflow_cfg_locations(default):
    env = default.env("airflow-worker")
    assert AIRFLOW_HOME in env["PYTHONPATH"].split(":")
    binds = default.binds("airflow-worker")
    assert binds[f"{AIRFLOW_HOME}/include"] == REPO / "include"
    for key in ("REGISTRY_OPS_CONFIG", "AIRFLOW_CONFIG"):
        assert Path(env[key]).parent == Path(f"{AIRFLOW_HOME}/config"), key
    assert binds[f"{AIRFLOW_HOME}/config"] == REPO / "config"
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert "config/airflow.cfg" in ignored and "logs/" in ignored


def test_trivy_has_one_database_volume_for_every_container(everything):
    dockerfile = (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8")
    (cache,) = re.findall(r"TRIVY_CACHE_DIR=(\S+)", dockerfile)
    for name in airflow_services(everything):
        if name != "localstack-init":
            assert everything.named_volumes(name).get(cache) == "trivy-cache", name
    server = everything.services["trivy-server"]
    assert everything.named_volumes("trivy-server") == {cache: "trivy-cache"}
    assert server["command"][server["command"].index("--cache-dir") + 1] == cache
    (version,) = re.findall(r"^ARG TRIVY_VERSION=(\S+)$", dockerfile, re.M)
    assert server["image"] == f"aquasec/trivy:{version}"
    assert "trivy-cache" in everything.data["volumes"]


@pytest.mark.parametrize(
    "name",
    [
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "flower",
        "registry",
        "moto",
        "mail",
        "trivy-server",
    ],
)
def test_long_running_services_have_healthchecks(everything, name):
    health = everything.services[name].get("healthcheck")
    assert health and not health.get("disable"), f"{name} has no healthcheck"
    assert health["test"][0] in ("CMD", "CMD-SHELL") and len(health["test"]) > 1


def test_airflow_services_wait_for_healthy_backends_and_the_init(everything):
    for name in airflow_services(everything):
        if name in ONE_SHOT:
            continue
        deps = depends_on(everything.services[name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("airflow-init") == "service_completed_successfully", name


def test_worker_waits_for_the_api_server_shuts_down_warm_and_has_a_memory_cap(default, workdir):
    worker = default.services["airflow-worker"]
    assert worker["command"] == ["celery", "worker"]
    assert depends_on(worker)["airflow-apiserver"] == "service_healthy"
    assert default.env("airflow-worker")["DUMB_INIT_SETSID"] == "0"
    assert "inspect ping" in worker["healthcheck"]["test"][-1]
    assert int(worker["deploy"]["resources"]["limits"]["memory"]) == 4 * 2**30
    bigger = render(workdir, dotenv({**SECRETS, "REGISTRY_OPS_WORKER_MEMORY": "8g"}))
    assert int(bigger.services["airflow-worker"]["deploy"]["resources"]["limits"]["memory"]) == 8 * 2**30


def test_airflow_components_and_the_init_checks(default):
    s = default.services
    assert s["airflow-scheduler"]["command"] == ["scheduler"]
    assert "localhost:8974/health" in s["airflow-scheduler"]["healthcheck"]["test"][-1]
    for name, job in (("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")):
        assert f"--job-type {job}" in s[name]["healthcheck"]["test"][-1], name
    init_env = default.env("airflow-init")
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true" and init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    script = s["airflow-init"]["command"][-1]
    for check in ("_PHYS_PAGES", "/proc/stat", "df /"):  # memory, CPUs, disk
        assert check in script, check
    assert "airflow config list" in script  # writes the default airflow.cfg into ./config


def test_localstack_services(workdir):
    rendered = render(workdir, dotenv(SECRETS), ("localstack",))
    registry = rendered.services["registry"]
    assert registry["image"].startswith("registry:2")
    assert rendered.env("registry")["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"
    assert 5000 in container_ports(registry)
    assert rendered.services["moto"]["image"].startswith("motoserver/moto:")
    assert 1025 in container_ports(rendered.services["mail"])


def test_published_ports_do_not_collide_and_emulators_stay_on_loopback(everything):
    seen: dict[int, str] = {}
    for name, svc in everything.services.items():
        for port in svc.get("ports", []):
            published = int(port["published"])
            assert published not in seen, f"host port {published}: {seen.get(published)} and {name}"
            seen[published] = name
            if name != "airflow-apiserver":
                assert port.get("host_ip") == "127.0.0.1", f"{name} is published on every interface"
    assert seen[8080] == "airflow-apiserver"
    assert {seen[5000], seen[5001]} == {"registry", "moto"}
