"""docker/Dockerfile against what runs in it: the files the config reads are copied and mounted,
Trivy is in the image, the build context leaves local state out, and the runtime requirements
resolve under the merged constraints with aiobotocore (as the official image has it).

No Docker engine runs here, so the image is never built: the Dockerfile's COPY lines are read,
and pip resolves the image's requirement set for real (``pip install --dry-run``)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import posixpath
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from include.registry_ops.config import load_config
from tests.compose.render import REPO, SECRETS, dotenv, render

# docker/ is not a package (and `docker` is the Docker SDK's name): load the build script by path.
_spec = importlib.util.spec_from_file_location("merge_constraints", REPO / "docker" / "merge_constraints.py")
merge_constraints = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge_constraints)
canonical, merge, pins, required = (
    merge_constraints.canonical,
    merge_constraints.merge,
    merge_constraints.pins,
    merge_constraints.required,
)

DOCKERFILE = REPO / "docker" / "Dockerfile"
AIRFLOW_HOME = PurePosixPath("/opt/airflow")


def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination as written) of each COPY line from the build context (not --from)."""
    result = []
    for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        if "--from=" not in line:
            result.append((parts[:-1], parts[-1]))
    return result


def in_image(path: PurePosixPath) -> Path | None:
    """The repository file the image has at ``path`` (None when no COPY puts it there)."""
    for sources, dest in copies():
        into_folder = dest.endswith("/") or len(sources) > 1
        for source in sources:
            if source.endswith("/"):  # a folder's content
                if path.is_relative_to(dest):
                    return REPO / source / path.relative_to(dest)
            elif path == (PurePosixPath(dest) / Path(source).name if into_folder else PurePosixPath(dest)):
                return REPO / source
    return None


def dockerignored(rel: str) -> bool:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    ignored = False
    parts = PurePosixPath(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate, pat = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if any(
            fnmatch.fnmatch(prefix, pat) or fnmatch.fnmatch(prefix, pat.replace("**/", ""))
            for prefix in prefixes
        ):
            ignored = not negate
    return ignored


def container_files(config_file: Path) -> dict[str, PurePosixPath]:
    """Every file the code reads in the container for this config: {what: container path}."""
    config = load_config(config_file)
    config_dir = AIRFLOW_HOME / "config"
    files = {"config": config_dir / config_file.name}
    for key in ("policy_file", "in_use_file"):
        if value := getattr(config.retention, key):
            files[f"retention.{key}"] = PurePosixPath(posixpath.normpath(config_dir / value))
    files["page static files"] = AIRFLOW_HOME / "include" / "registry_ops" / "page" / "static" / "index.js"
    return files


CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: p.name)
def test_every_file_the_config_reads_is_in_the_image_and_the_mounts(tmp_path, config_file):
    rendered = render(tmp_path, dotenv(SECRETS), ("localstack",))
    image = rendered.services["airflow-scheduler"]["image"]
    services = [n for n, s in rendered.services.items() if s.get("image") == image]
    for what, path in container_files(config_file).items():
        source = in_image(path)
        assert source is not None, f"{what}: {path} is not copied into the image (docker/Dockerfile)"
        assert source.is_file(), f"{what}: the image would copy {source}, which does not exist"
        assert not dockerignored(str(source.relative_to(REPO))), f"{what}: .dockerignore drops {source}"
        for name in services:
            binds = rendered.binds(name)
            mounted = [
                host / PurePosixPath(path).relative_to(target)
                for target, host in binds.items()
                if PurePosixPath(path).is_relative_to(target)
            ]
            assert mounted, f"{what}: {path} is not under a mount of {name}"
            assert mounted[-1].is_file(), f"{what}: {name} mounts {mounted[-1]}, which does not exist"


def test_the_build_context_leaves_local_state_out():
    for rel in (".venv", ".git", "logs", ".env", ".env.prod", "tests", "config/airflow.cfg"):
        assert dockerignored(rel), rel
    assert not dockerignored(".env.example")
    for sources, _ in copies():
        for source in sources:
            assert not dockerignored(source.rstrip("/")), f"COPY {source} is in .dockerignore"


def test_the_image_is_the_official_airflow_image_with_the_compose_build_args(tmp_path):
    rendered = render(tmp_path, dotenv(SECRETS))
    build = rendered.services["airflow-worker"]["build"]
    assert Path(build["context"]) == rendered.project
    assert REPO / build["dockerfile"] == DOCKERFILE
    text = dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    args.update(build["args"])
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in re.findall(r"^FROM (\S+)", text, re.M)
    ]
    assert bases[-1] == "apache/airflow:3.3.2-python3.11"


def test_trivy_is_copied_from_a_pinned_official_image():
    text = dockerfile()
    (version,) = re.findall(r"^ARG TRIVY_VERSION=(\S+)$", text, re.M)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin a release, not latest"
    assert re.search(r"^FROM aquasec/trivy:\$\{TRIVY_VERSION\} AS trivy$", text, re.M)
    assert re.search(r"^COPY --from=trivy /usr/local/bin/trivy /usr/local/bin/trivy$", text, re.M)
    assert re.search(r"TRIVY_CACHE_DIR=/\S+", text)
    assert "trivy --version" in text  # the build fails when the binary does not run


def test_the_image_installs_the_runtime_set_under_the_merged_constraints_and_checks_it():
    text = dockerfile()
    assert 'merge_constraints.py \\\n        --airflow "${HOME}/constraints.txt"' in text
    pip_install = r"pip install --no-cache-dir --constraint (\S+) \\\n\s+"
    install = re.search(pip_install + r"\"apache-airflow==\$\{AIRFLOW_VERSION\}\" -r (\S+)", text)
    assert install and install.group(2) == "/opt/airflow/requirements.txt"
    assert f"> {install.group(1)}" in text  # the merged file is the one pip is given
    assert text.count("&& pip check") == 2  # after the requirements and after the project
    assert "requirements-dev" not in text and "devstack" not in text


# ---- the constraints -------------------------------------------------------------------------


def test_merge_keeps_airflow_pins_except_the_ones_we_require_and_fills_in_ours():
    airflow = "# header\nboto3==1.1.0\nFlask_AppBuilder==4.0\naiohttp==3.14.0\n"
    project = "boto3==9.9\nflask-appbuilder==5.0\nmatplotlib==3.11.2\npandas==3.1.1\n"
    requirements = (
        "boto3==1.43.75  # ours\napache-airflow-providers-amazon[aiobotocore]==9.39.0\n-r other.txt\n"
    )
    lines = merge(airflow, project, requirements)
    assert lines == ["aiohttp==3.14.0", "Flask_AppBuilder==4.0", "matplotlib==3.11.2", "pandas==3.1.1"]
    assert required(requirements) == {"boto3", "apache-airflow-providers-amazon"}
    assert canonical("Flask_AppBuilder") == canonical("flask.appbuilder") == "flask-appbuilder"
    with pytest.raises(ValueError, match="not a 'name==version' constraint: 'boto3>=1'"):
        pins("boto3>=1\n")


def test_constraints_txt_agrees_with_the_requirements_pins():
    frozen = pins((REPO / "constraints.txt").read_text(encoding="utf-8"))
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = re.sub(r"\[.*?\]", "", line).split("==")
            assert frozen.get(canonical(name)) and frozen[canonical(name)].split("==")[1] == version, line


def test_the_image_requirement_set_resolves_with_aiobotocore(tmp_path):
    """What the image build asks of pip, resolved against the package index. Airflow's own
    constraints file for 3.3.2 lives on GitHub, which this machine cannot reach, so the merge
    takes an empty one here: the project's freeze pins everything (the image build merges the
    real file and runs `pip check`)."""
    merged = tmp_path / "constraints-image.txt"
    project, requirements = (
        (REPO / n).read_text(encoding="utf-8") for n in ("constraints.txt", "requirements.txt")
    )
    lines = merge("", project, requirements)
    merged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--constraint",
            str(merged),
            "apache-airflow==3.3.2",
            "-r",
            str(REPO / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {
        canonical(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert resolved["apache-airflow"] == "3.3.2"
    assert "aiobotocore" in resolved and resolved["botocore"] == resolved["boto3"]
