"""Static checks of docker-compose.yaml (no Docker needed: the file is only loaded and inspected).

The compose file reads every secret from the environment (``${VAR:?...}``), so the checks run on
a copy interpolated the way Docker Compose does it, with fake values for those secrets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

AIRFLOW_HOME = "/opt/airflow"
# Services built from the x-airflow-common anchor.
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
    "airflow-cli",
    "flower",
)
# One-shot or run-on-demand services: no healthcheck expected.
ONE_SHOT = {"airflow-init", "airflow-cli"}
LONG_RUNNING_AIRFLOW = tuple(s for s in AIRFLOW_SERVICES if s not in ONE_SHOT)
LOCALSTACK = ("registry", "moto", "mail")
REQUIRED = ("postgres", "redis", *AIRFLOW_SERVICES, *LOCALSTACK)

# Secrets the file must take from the environment, never from a default written in it.
FAKE_SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-from-env",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin-secret-from-env",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-from-env",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-from-env",
    "AIRFLOW__API__SECRET_KEY": "api-secret-from-env",
}
CONNECTIONS = ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_OCI_LOCAL", "AIRFLOW_CONN_SMTP_DEFAULT")


# ---------------------------------------------------------------------------------------------
# Compose-style interpolation ($$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e},
# ${VAR:+a}, ${VAR+a}; braces balanced like compose-go v2 so JSON defaults work).
# ---------------------------------------------------------------------------------------------


class MissingVariable(ValueError):
    pass


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.S)


def interpolate_str(text: str, env: dict[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            depth, j = 0, i + 1
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            else:
                raise ValueError(f"unterminated ${{ in {text!r}")
            out.append(_resolve(text[i + 2 : j], env))
            i = j + 1
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            raise ValueError(f"invalid '$' in {text!r}: use '$$' for a literal dollar")
    return "".join(out)


def _resolve(body: str, env: dict[str, str]) -> str:
    m = _BRACED.fullmatch(body)
    if not m:
        raise ValueError(f"invalid interpolation ${{{body}}}")
    name, op, arg = m.groups()
    value = env.get(name)
    if op is None:
        return value or ""
    if op in (":-", "-"):
        use_default = not value if op == ":-" else value is None
        return interpolate_str(arg, env) if use_default else value
    if op in (":?", "?"):
        if (not value) if op == ":?" else value is None:
            raise MissingVariable(f"{name}: {arg}")
        return value
    present = bool(value) if op == ":+" else value is not None
    return interpolate_str(arg, env) if present else ""


def interpolate(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    return node


# ---------------------------------------------------------------------------------------------
# Fixtures and parsing helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict:
    """docker-compose.yaml as written (anchors and `<<:` merges resolved by PyYAML)."""
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    """The file interpolated as `docker compose` would, with fake secrets in the environment."""
    return interpolate(raw, dict(FAKE_SECRETS))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def common_env(compose) -> dict:
    return compose["x-airflow-common"]["environment"]


def environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return env


def parse_port(spec) -> tuple[str, int, int]:
    """(host ip or "", host port, container port) of one `ports` entry."""
    if isinstance(spec, dict):
        return spec.get("host_ip", ""), int(spec["published"]), int(spec["target"])
    spec = str(spec).split("/")[0]
    parts = spec.split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2])
    if len(parts) == 2:
        return "", int(parts[0]), int(parts[1])
    raise AssertionError(f"port {spec!r} is not published on a fixed host port")


def container_ports(service: dict) -> set[int]:
    return {parse_port(p)[2] for p in service.get("ports", [])} | {int(p) for p in service.get("expose", [])}


def mounts(service: dict) -> dict[str, str]:
    """{container path: host path} of a service's bind mounts (short syntax)."""
    result = {}
    for vol in service.get("volumes", []):
        source, target = vol.split(":")[:2]
        result[target] = source
    return result


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_required_services_exist(services):
    missing = [name for name in REQUIRED if name not in services]
    assert not missing, f"services missing from docker-compose.yaml: {missing}"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"].startswith("redis:7.2")


def test_airflow_service_list_is_complete(raw):
    """Every service built from the common anchor is covered by AIRFLOW_SERVICES (and back)."""
    common_image = raw["x-airflow-common"]["image"]
    from_anchor = {n for n, s in raw["services"].items() if s.get("image") == common_image}
    assert from_anchor == set(AIRFLOW_SERVICES)
    assert {n for n in raw["services"] if n.startswith("airflow-")} <= from_anchor


def test_image_is_airflow_3_3_2_built_from_dockerfile(raw):
    build = raw["x-airflow-common"]["build"]
    assert build["context"] == "."
    assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["args"]["AIRFLOW_VERSION"] == "3.3.2"
    assert build["args"]["PYTHON_VERSION"] == "3.11"

    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base == "apache/airflow:3.3.2-python3.11"
    assert re.search(r"pip install .*-r /opt/airflow/requirements\.txt", text)
    assert re.search(r"pip install .*-e /opt/airflow\s*$", text, re.M)


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_shares_common_environment(services, common_env, name):
    env = environment(services[name])
    differing = {k for k, v in common_env.items() if env.get(k) != v}
    assert not differing, f"{name}: common environment missing or overridden: {sorted(differing)}"


def test_common_environment_wiring(services, common_env):
    assert common_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common_env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert common_env["GX_ANALYTICS_ENABLED"] == "false"
    assert common_env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] in ("true", "false")
    assert common_env["AIRFLOW__CORE__AUTH_MANAGER"].rsplit(".", 1)[-1] in (
        "FabAuthManager",
        "SimpleAuthManager",
    )

    pg = environment(services["postgres"])
    db = urlsplit(common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert db.scheme == "postgresql+psycopg2"
    assert db.hostname == "postgres" and services[db.hostname]["image"].startswith("postgres:")
    assert (db.port or 5432) == 5432
    assert db.username == pg["POSTGRES_USER"]
    assert db.password == pg["POSTGRES_PASSWORD"] == FAKE_SECRETS["POSTGRES_PASSWORD"]
    assert db.path == f"/{pg['POSTGRES_DB']}"

    backend = urlsplit(common_env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert backend.scheme == "db+postgresql"
    assert (backend.hostname, backend.username, backend.password, backend.path) == (
        db.hostname,
        db.username,
        db.password,
        db.path,
    )

    broker = urlsplit(common_env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis"
    assert broker.hostname == "redis" and services["redis"]["image"].startswith("redis:")
    assert broker.port == 6379 and 6379 in container_ports(services["redis"])


def test_execution_api_url_points_at_api_server(services, common_env):
    url = urlsplit(common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.scheme == "http"
    assert url.path == "/execution/"
    api = services[url.hostname]
    assert api["command"] == "api-server"
    assert url.port in container_ports(api)
    health = urlsplit(api["healthcheck"]["test"][-1])
    assert (health.port, health.path) == (url.port, "/api/v2/version")


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_mounts_project_dirs(services, name):
    vols = mounts(services[name])
    for folder in ("dags", "plugins", "include", "config", "logs"):
        target = f"{AIRFLOW_HOME}/{folder}"
        assert target in vols, f"{name}: nothing mounted at {target}"
        source = vols[target]
        assert Path(source).name == folder, f"{name}: {target} mounted from {source}"
        if folder != "logs":  # created by airflow-init at first start
            assert (REPO / source).is_dir(), f"{name}: host path {source} does not exist"


def test_pythonpath_and_config_location(services, common_env):
    pythonpath = common_env["PYTHONPATH"].split(":")
    assert AIRFLOW_HOME in pythonpath
    # include.registry_ops is importable because ./include sits right under a PYTHONPATH entry
    include_targets = {t for t, s in mounts(services["airflow-worker"]).items() if s == "./include"}
    assert include_targets == {f"{AIRFLOW_HOME}/include"}

    config = Path(common_env["REGISTRY_OPS_CONFIG"])
    config_mount = {t for t, s in mounts(services["airflow-worker"]).items() if s == "./config"}
    assert config_mount == {str(config.parent)}
    assert config.suffix in (".yaml", ".yml")


@pytest.mark.parametrize("name", [s for s in REQUIRED if s not in ONE_SHOT])
def test_long_running_services_have_healthchecks(services, name):
    health = services[name].get("healthcheck")
    assert health and not health.get("disable"), f"{name} has no healthcheck"
    test = health["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


@pytest.mark.parametrize("name", LONG_RUNNING_AIRFLOW)
def test_airflow_services_wait_for_healthy_backends(services, name):
    deps = depends_on(services[name])
    assert deps.get("postgres") == "service_healthy", name
    assert deps.get("redis") == "service_healthy", name
    assert deps.get("airflow-init") == "service_completed_successfully", name


def test_worker_waits_for_api_server_and_shuts_down_warm(services):
    worker = services["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert depends_on(worker)["airflow-apiserver"] == "service_healthy"
    assert environment(worker)["DUMB_INIT_SETSID"] == "0"
    assert "inspect ping" in worker["healthcheck"]["test"][-1]


def test_airflow_components_and_healthchecks(services):
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert "localhost:8974/health" in services["airflow-scheduler"]["healthcheck"]["test"][-1]
    for name, job in (("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")):
        check = services[name]["healthcheck"]["test"][-1]
        # $$ in the file becomes a literal $ for the container shell
        assert f'--job-type {job} --hostname "${{HOSTNAME}}"' in check, name
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    init_env = environment(services["airflow-init"])
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_profiles(services):
    for name in LOCALSTACK:
        assert services[name].get("profiles") == ["localstack"], name
    assert services["flower"].get("profiles") == ["flower"]
    core = ("postgres", "redis", *(s for s in AIRFLOW_SERVICES if s not in ("flower", "airflow-cli")))
    for name in core:
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_default_services_do_not_depend_on_profiled_ones(services):
    profiled = {n for n, s in services.items() if s.get("profiles")}
    for name, svc in services.items():
        if not svc.get("profiles"):
            assert not set(depends_on(svc)) & profiled, f"{name} depends on a profiled service"


def test_localstack_services(services):
    registry = services["registry"]
    assert registry["image"].startswith("registry:2")
    assert environment(registry)["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"
    assert 5000 in container_ports(registry)
    assert "/v2/" in " ".join(registry["healthcheck"]["test"])

    moto = services["moto"]
    assert moto["image"].startswith("motoserver/moto:")
    assert 5000 in container_ports(moto)
    assert "/moto-api/" in " ".join(moto["healthcheck"]["test"])

    assert 1025 in container_ports(services["mail"])


def test_connections_point_at_localstack_services(services, common_env):
    aws = json.loads(common_env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["conn_type"] == "aws"
    assert (aws["login"], aws["password"]) == ("testing", "testing")
    assert aws["extra"]["region_name"] == "us-east-1"
    endpoint = urlsplit(aws["extra"]["endpoint_url"])
    assert endpoint.hostname == "moto" and endpoint.port in container_ports(services["moto"])

    oci = json.loads(common_env["AIRFLOW_CONN_OCI_LOCAL"])
    assert (oci["conn_type"], oci["host"], oci["extra"]["scheme"]) == ("http", "registry", "http")
    assert oci["port"] in container_ports(services["registry"])

    smtp = json.loads(common_env["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert (smtp["conn_type"], smtp["host"]) == ("smtp", "mail")
    assert smtp["port"] in container_ports(services["mail"])
    assert smtp["extra"]["disable_tls"] is True and smtp["extra"]["disable_ssl"] is True
    assert "@" in smtp["extra"]["from_email"]


@pytest.mark.parametrize("var", CONNECTIONS)
def test_connections_can_be_overridden_from_the_environment(raw, var):
    override = "aws://AKIA:secret@/?region_name=eu-west-1"
    env = {**FAKE_SECRETS, var: override}
    value = interpolate(raw["x-airflow-common"]["environment"][var], env)
    assert value == override


@pytest.mark.parametrize("secret", sorted(FAKE_SECRETS))
def test_secrets_come_from_the_environment(raw, secret):
    env = {k: v for k, v in FAKE_SECRETS.items() if k != secret}
    with pytest.raises(MissingVariable, match=secret):
        interpolate(raw, env)


def test_secrets_are_shared_by_all_airflow_components(services):
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__FERNET_KEY"] == FAKE_SECRETS["AIRFLOW__CORE__FERNET_KEY"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == FAKE_SECRETS["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert env["AIRFLOW__API__SECRET_KEY"] == FAKE_SECRETS["AIRFLOW__API__SECRET_KEY"]


def test_environment_values_are_strings(compose):
    """Compose rejects YAML booleans (and other non-scalars) as environment values."""
    blocks = {"x-airflow-common": compose["x-airflow-common"], **compose["services"]}
    for name, svc in blocks.items():
        for key, value in environment(svc).items():
            assert isinstance(value, (str, int, float)) and not isinstance(value, bool), (
                f"{name}: {key}={value!r} must be quoted"
            )


def test_published_ports_do_not_collide(services):
    seen: dict[int, str] = {}
    for name, svc in services.items():
        for spec in svc.get("ports", []):
            _, host_port, _ = parse_port(spec)
            assert host_port not in seen, f"host port {host_port}: {seen.get(host_port)} and {name}"
            seen[host_port] = name
    assert seen[8080] == "airflow-apiserver"
    assert {seen[5000], seen[5001]} == {"registry", "moto"}
