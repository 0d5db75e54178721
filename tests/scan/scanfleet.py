"""Scan test helpers: a small fleet of real images under ``scan/...`` in both registries, the
real Trivy reports and ECR responses each image "has", and the trivy stand-in.

Images are genuine (tar layers, config, manifest whose bytes hash to the digest), pushed through
the distribution API (OCI) or built in moto's backend by the project's seeder (ECR). Trivy
cannot run here, so ``trivy`` is a stand-in that replays the real Trivy report assigned to the
image reference it is given, and records what it received (argv, whether credentials came via
the environment) so tests can check it. It accepts only the exact command line the Trivy scanner
must run (documented in ``STAND_IN``, set per test with ``expect_trivy``): a changed flag makes
it exit 1, the scanner records an error, and the test fails. ECR findings are the real AWS CLI /
Inspector responses, seeded into moto by digest through ``/moto-api/static/ecr/scan-finding-results``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import tarfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack.fleet import Blob, ManifestSpec
from include.registry_ops.registries.base import OCI_INDEX, OCI_MANIFEST

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRIVY = FIXTURES / "trivy"
ECR = FIXTURES / "ecr"
BUCKET = "registry-ops-scan-test"
LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MB = 1024 * 1024

STAND_IN = """#!{python}
\"\"\"Test stand-in for Trivy. It accepts exactly the command line the scanner must run, checks how
credentials arrive, replays the real Trivy report mapped to the image reference (TRIVY_FAKE_MAP),
and logs what it received (TRIVY_FAKE_LOG). Anything else exits 1 with a message on stderr, as
Trivy does, so the scanner records an error. Never used outside tests.

The expected command line, in this order (TRIVY_FAKE_EXPECT gives the variable parts):
  image --format json --scanners vuln --image-src remote --quiet --timeout <timeout>
        [--insecure  (iff the host is in insecure_hosts)] [--server <server>  (iff server)]
        <host>/<repository>@sha256:<64 hex>
\"\"\"
import hashlib, json, os, re, sys

args = sys.argv[1:]
env = os.environ
password, token = env.get("TRIVY_PASSWORD"), env.get("TRIVY_TOKEN")
record = {{
    "argv": args,
    "username": env.get("TRIVY_USERNAME"),
    "password_sha256": hashlib.sha256(password.encode()).hexdigest() if password else None,
    "token": bool(token),
    "env": sorted(env),
}}
with open(env["TRIVY_FAKE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")


def fail(message):
    sys.exit("FATAL " + message)


expect = json.loads(env["TRIVY_FAKE_EXPECT"])
secrets = [s for s in (password, token) if s]
if any(s in a for s in secrets for a in args):
    fail("credentials on the command line")
if ("TRIVY_USERNAME" in env) != ("TRIVY_PASSWORD" in env):
    fail("TRIVY_USERNAME and TRIVY_PASSWORD must come together")
for name in sorted(env):
    if name.startswith(("AWS_", "DOCKER_")) or name in ("TRIVY_REGISTRY_TOKEN", "GITHUB_TOKEN"):
        fail(f"unexpected credential variable {{name}} in trivy's environment")
    if name not in ("TRIVY_PASSWORD", "TRIVY_TOKEN") and any(s in env[name] for s in secrets):
        fail(f"a credential in {{name}}: credentials go only in TRIVY_USERNAME/TRIVY_PASSWORD/TRIVY_TOKEN")
reference = args[-1] if args else ""
if not re.fullmatch(r"[a-z0-9.:-]+(/[a-z0-9._-]+)+@sha256:[0-9a-f]{{64}}", reference):
    fail(f"the last argument must be <host>/<repository>@sha256:<digest>, got {{reference!r}}")
host = reference.split("/", 1)[0]
expected = ["image", "--format", "json", "--scanners", "vuln", "--image-src", "remote", "--quiet"]
expected += ["--timeout", expect["timeout"]]
if host in expect["insecure_hosts"]:
    expected.append("--insecure")
if expect["server"]:
    expected += ["--server", expect["server"]]
expected.append(reference)
if args != expected:
    unknown = [a for a in args if a not in expected]
    missing = [a for a in expected if a not in args]
    fail(
        f"unexpected command line (unknown {{unknown}}, missing {{missing}}): "
        f"got {{' '.join(args)}}; expected {{' '.join(expected)}}"
    )
if host in expect["auth_hosts"] and not (env.get("TRIVY_USERNAME") and password):
    fail(f"{{reference}}: UNAUTHORIZED: authentication required")
reports = json.load(open(env["TRIVY_FAKE_MAP"]))
if reference not in reports:
    fail(f"image scan error: {{reference}}: MANIFEST_UNKNOWN: manifest unknown")
sys.stdout.write(open(reports[reference]).read())
"""


def _tar(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(payload), 0
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _blob(data: bytes, media_type: str) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type, data)


def _raw(body: dict) -> tuple[str, bytes]:
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest(), raw


def image(
    name: str, tags: list[str], *, arch: str = "amd64", layer_sizes: tuple[int, ...] = (3000,)
) -> ManifestSpec:
    """A real single-platform image: one tar layer per size, a config, an OCI manifest."""
    rng = random.Random(name + arch)
    layers = [
        _blob(_tar(f"{name}/{i}.bin", rng.randbytes(size)), LAYER) for i, size in enumerate(layer_sizes)
    ]
    config = _blob(
        json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "created": "2026-11-01T12:00:00Z",
                "rootfs": {"type": "layers", "diff_ids": [x.digest for x in layers]},
            },
            sort_keys=True,
        ).encode(),
        CONFIG,
    )
    digest, raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": LAYER, "digest": x.digest, "size": x.size} for x in layers],
        }
    )
    now = datetime.now(UTC).replace(microsecond=0)
    return ManifestSpec(
        digest,
        OCI_MANIFEST,
        raw,
        sorted(tags),
        now,
        None,
        "image",
        [config, *layers],
        platform=f"linux/{arch}",
    )


def index(children: list[ManifestSpec], tags: list[str]) -> ManifestSpec:
    digest, raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": c.digest,
                    "size": len(c.raw),
                    "platform": {"os": "linux", "architecture": c.platform.split("/")[1]},
                }
                for c in children
            ],
        }
    )
    now = datetime.now(UTC).replace(microsecond=0)
    return ManifestSpec(
        digest, OCI_INDEX, raw, sorted(tags), now, None, "index", children=[c.digest for c in children]
    )


def signature(subject: ManifestSpec) -> ManifestSpec:
    """A cosign-style signature (tag ``sha256-<hex>.sig``): a referrer, never scanned."""
    layer = _blob(
        json.dumps({"critical": {"image": {"docker-manifest-digest": subject.digest}}}).encode(),
        "application/vnd.dev.cosign.simplesigning.v1+json",
    )
    config = _blob(b"{}", CONFIG)
    digest, raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        }
    )
    now = datetime.now(UTC).replace(microsecond=0)
    return ManifestSpec(
        digest,
        OCI_MANIFEST,
        raw,
        [f"sha256-{subject.digest[7:]}.sig"],
        now,
        None,
        "referrer",
        [config, layer],
        subject=subject.digest,
    )


@dataclass
class ScanFleet:
    """What was pushed, and the real report each scannable image replays."""

    oci_host: str
    repos: dict[str, list[ManifestSpec]]
    trivy_reports: dict[str, Path] = field(default_factory=dict)  # trivy reference -> report
    ecr_responses: dict[str, Path] = field(default_factory=dict)  # digest -> ECR response
    by_name: dict[str, ManifestSpec] = field(default_factory=dict)

    def ref(self, repository: str, name: str) -> str:
        return f"{self.oci_host}/{repository}@{self.by_name[name].digest}"


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:7]


def seed_ecr_findings(endpoint: str, repository: str, digest: str, response_file: Path) -> None:
    """Seed one real DescribeImageScanFindings response for (repository, digest) into moto."""
    result = copy.deepcopy(json.loads(response_file.read_text()))
    result["repositoryName"] = repository
    result["imageId"] = {"imageDigest": digest}
    resp = requests.post(
        f"{endpoint}/moto-api/static/ecr/scan-finding-results",
        json={"results": [result], "region": "us-east-1"},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text


def invocations(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def publish_inventory(config) -> dict:
    """List the scan/* repositories of both registries and publish a snapshot, as the inventory DAG does."""
    from include.registry_ops import inventory, storage
    from include.registry_ops.clients import build_registry, s3_client

    s3 = s3_client(config)
    storage.ensure_bucket(s3, config.storage.bucket)
    now = datetime.now(UTC) - timedelta(seconds=1)
    listing = inventory.run_inventory(config, build_registry, now)
    assert listing.errors == []
    return inventory.publish_snapshot(
        s3,
        config.storage.bucket,
        config.storage.prefixes.inventory,
        listing.table,
        [],
        now,
        [r.name for r in config.registries],
    )


def stand_in_env(mp: pytest.MonkeyPatch, fleet: ScanFleet, workdir: Path) -> Path:
    """Point the trivy stand-in at the fleet's reports and expect the command line the scanner
    builds for the fleet's registries (see ``expect_trivy``); returns its invocation log."""
    mapping = workdir / "trivy-map.json"
    mapping.write_text(json.dumps({k: str(v) for k, v in fleet.trivy_reports.items()}))
    log = workdir / "trivy-log.jsonl"
    log.touch()
    mp.setenv("TRIVY_FAKE_MAP", str(mapping))
    mp.setenv("TRIVY_FAKE_LOG", str(log))
    expect_trivy(
        mp, timeout="600s", insecure_hosts=[fleet.oci_host], server=None, auth_hosts=[fleet.oci_host]
    )
    return log


def expect_trivy(mp: pytest.MonkeyPatch, **changes: Any) -> dict[str, Any]:
    """Set what the stand-in accepts (TRIVY_FAKE_EXPECT): ``timeout`` (the ``--timeout`` value),
    ``insecure_hosts`` (hosts scanned with ``--insecure``: the plain-HTTP test registry),
    ``server`` (the ``--server`` URL, or None for standalone), ``auth_hosts`` (hosts that refuse
    a scan without TRIVY_USERNAME/TRIVY_PASSWORD). Unnamed keys keep their current value."""
    current = json.loads(os.environ.get("TRIVY_FAKE_EXPECT", "{}"))
    unknown = set(changes) - {"timeout", "insecure_hosts", "server", "auth_hosts"}
    assert not unknown, f"expect_trivy: unknown keys {sorted(unknown)}"
    current.update(changes)
    mp.setenv("TRIVY_FAKE_EXPECT", json.dumps(current))
    return current


def write_config(
    workdir: Path, tag: str, trivy_bin: Path, include: str = "scan/*", **scan: Any
) -> tuple[Path, Any]:
    """A config for the ``scan/*`` repositories of both registries (or ``include``'s), S3
    prefixes under ``tag``."""
    from include.registry_ops.config import load_config

    path = workdir / f"registry-ops-{uuid.uuid4().hex[:6]}.yaml"
    section = {
        "size_budget_mb": 1,
        "trivy": {"binary": str(trivy_bin)},
        "ecr": {"poll_seconds": 0.05},
        "uploads_prefix": f"{tag}/uploads/",
        **scan,
    }
    registries = [
        {
            "name": "ecr-local",
            "kind": "ecr",
            "conn_id": "aws_default",
            "region": "us-east-1",
            "include": [include],
        },
        {"name": "oci-local", "kind": "oci", "conn_id": "oci_local", "include": [include]},
    ]
    storage = {
        "conn_id": "aws_default",
        "bucket": BUCKET,
        "prefixes": {"inventory": f"{tag}/inventory/", "reports": f"{tag}/reports/"},
    }
    notifications = {"recipients": ["secops@example.com"], "sender": "scan@example.com"}
    path.write_text(
        yaml.safe_dump(
            {"registries": registries, "storage": storage, "notifications": notifications, "scan": section}
        )
    )
    config = load_config(path)
    from include.registry_ops import storage
    from include.registry_ops.clients import s3_client

    storage.ensure_bucket(s3_client(config), BUCKET)  # jobs never create it (registry-ops init does)
    return path, config
