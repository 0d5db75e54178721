"""A realistic, deterministic test fleet (local stack, tests and benches only).

``make_fleet(seed=...)`` always yields the same repositories, manifests, digests, tags and
times. Manifests are real JSON whose bytes hash to their digests; layers are real tar blobs
(shared base layers from a pool, plus one small unique layer per image), so the OCI registry
stores genuine images that skopeo can inspect and copy. What a fleet holds:

- releases tagged with semver and a 7-hex commit, ``latest`` on the newest release;
- CI builds tagged with a commit and a ``YYYYMMDD-HHMMSS`` timestamp;
- untagged images (releases whose tags moved on);
- multi-arch indexes (linux/amd64 + linux/arm64) whose children are untagged;
- cosign-style signatures (``sha256-<hex>.sig``) and in-toto attestations with ``subject``;
- sizes from a few MB to over 200 MB (``layer_scale`` shrinks the pool for fast tests);
- push times spread over ``days`` (default 400) before ``now``, and pull times for some.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from include.registry_ops.registries.base import OCI_INDEX, OCI_MANIFEST

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SIG_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
INTOTO = "application/vnd.in-toto+json"
MB = 1024 * 1024
# Shared base layers (name, MB at layer_scale 1.0): OS bases, runtimes, fat toolchains.
POOL = (
    ("alpine", 3),
    ("debian-slim", 28),
    ("distroless", 7),
    ("python", 45),
    ("node", 62),
    ("jdk", 95),
    ("cuda", 130),
    ("assets", 18),
)
APPS = (
    "api",
    "web",
    "worker",
    "billing",
    "auth",
    "search",
    "payments",
    "gateway",
    "reports",
    "notifier",
    "ingest",
    "scheduler",
    "ledger",
    "catalog",
    "media",
    "ml-serving",
    "frontend",
    "batch",
    "metrics",
    "edge",
)
TEAMS = ("platform", "data", "shop", "core")


@dataclass
class Blob:
    digest: str
    size: int
    media_type: str
    data: bytes


@dataclass
class ManifestSpec:
    digest: str
    media_type: str
    raw: bytes
    tags: list[str]
    pushed_at: datetime
    last_pulled_at: datetime | None
    kind: str  # image | index | referrer
    blobs: list[Blob] = field(default_factory=list)  # config + layers this manifest needs
    platform: str | None = None
    subject: str | None = None
    artifact_type: str | None = None
    children: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blobs)


@dataclass
class RepoSpec:
    name: str
    manifests: list[ManifestSpec]


def _tar(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _blob(data: bytes, media_type: str) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type, data)


@cache
def layer_pool(seed: int, layer_scale: float) -> dict[str, Blob]:
    rng = random.Random(seed)
    return {
        name: _blob(
            _tar(f"{name}/rootfs.bin", rng.randbytes(max(1024, int(mb * MB * layer_scale)))), LAYER_TYPE
        )
        for name, mb in POOL
    }


def _manifest(body: dict) -> tuple[str, bytes]:
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest(), raw


def _desc(b: Blob) -> dict:
    return {"mediaType": b.media_type, "digest": b.digest, "size": b.size}


def _image(
    rng: random.Random,
    pool: dict[str, Blob],
    repo: str,
    build: int,
    created: datetime,
    arch: str,
    bases: list[str],
) -> tuple[str, bytes, list[Blob]]:
    unique = _blob(
        _tar(
            "app/build-info.json",
            json.dumps({"repo": repo, "build": build, "arch": arch, "nonce": rng.getrandbits(64)}).encode(),
        ),
        LAYER_TYPE,
    )
    layers = [pool[b] for b in bases] + [unique]
    config = _blob(
        json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "config": {
                    "Labels": {
                        "org.opencontainers.image.source": f"https://git.example.com/{repo}",
                        "build": str(build),
                    }
                },
                "rootfs": {"type": "layers", "diff_ids": [x.digest for x in layers]},
            },
            sort_keys=True,
        ).encode(),
        CONFIG_TYPE,
    )
    digest, raw = _manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _desc(config),
            "layers": [_desc(x) for x in layers],
        }
    )
    return digest, raw, [config, *layers]


def _referrer(subject: ManifestSpec, kind: str, when: datetime) -> ManifestSpec:
    if kind == "sig":
        payload = json.dumps(
            {
                "critical": {
                    "image": {"docker-manifest-digest": subject.digest},
                    "type": "cosign container image signature",
                }
            }
        ).encode()
        layer = _blob(payload, SIG_LAYER)
        config = _blob(b"{}", CONFIG_TYPE)
        artifact = None
    else:
        layer = _blob(
            json.dumps(
                {
                    "_type": "https://in-toto.io/Statement/v1",
                    "subject": [{"digest": {"sha256": subject.digest[7:]}}],
                }
            ).encode(),
            INTOTO,
        )
        config = _blob(b"{}", EMPTY_CONFIG)
        artifact = INTOTO
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc(config),
        "layers": [_desc(layer)],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.raw)},
    }
    if artifact:
        body["artifactType"] = artifact
    digest, raw = _manifest(body)
    tag = f"sha256-{subject.digest[7:]}.{kind}"
    return ManifestSpec(
        digest,
        OCI_MANIFEST,
        raw,
        [tag],
        when,
        None,
        "referrer",
        [config, layer],
        subject=subject.digest,
        artifact_type=artifact,
    )


def make_fleet(
    seed: int = 7,
    repositories: int = 20,
    images: int = 1000,
    *,
    now: datetime | None = None,
    days: int = 400,
    layer_scale: float = 1.0,
    prefix: str = "",
) -> list[RepoSpec]:
    """About ``images`` manifests spread over ``repositories`` repositories."""
    now = (now or datetime(2026, 11, 27, tzinfo=UTC)).replace(microsecond=0)
    rng = random.Random(seed)
    pool = layer_pool(seed, layer_scale)
    names = [
        f"{prefix}{TEAMS[i % len(TEAMS)]}/{APPS[i % len(APPS)]}"
        + (f"-{i // len(APPS)}" if i >= len(APPS) else "")
        for i in range(repositories)
    ]
    per_repo = max(1, images // repositories)
    fleet = []
    for r, name in enumerate(names):
        multiarch = r % 4 == 1
        signed = r % 3 == 0
        runtime = rng.choice(["python", "node", "jdk", "distroless", "alpine"])
        extra = ["cuda"] if r % 7 == 3 else (["assets"] if r % 5 == 2 else [])
        base = ["debian-slim"] if runtime in ("python", "node", "jdk") else []
        manifests: list[ManifestSpec] = []
        major, minor, patch = rng.randint(0, 3), 0, 0
        build = 0
        while len(manifests) < per_repo:
            build += 1
            age = days * (1 - build / (per_repo * 0.8 + 1)) * rng.uniform(0.9, 1.0)
            pushed = (now - timedelta(days=max(age, 0.02), seconds=rng.randint(0, 86399))).replace(
                microsecond=0
            )
            release = rng.random() < 0.35
            commit = f"{rng.getrandbits(28):07x}"
            tags = [commit]
            if release:
                if rng.random() < 0.15:
                    major, minor, patch = major + 1, 0, 0
                elif rng.random() < 0.4:
                    minor, patch = minor + 1, 0
                else:
                    patch += 1
                tags.append(f"{major}.{minor}.{patch}")
            else:
                tags.append(pushed.strftime("%Y%m%d-%H%M%S"))
            if rng.random() < 0.15:
                tags = []  # tags moved on: an untagged image
            pulled = (
                (pushed + timedelta(days=rng.uniform(0, (now - pushed).days or 1))).replace(microsecond=0)
                if rng.random() < 0.6
                else None
            )
            bases = [*base, runtime, *extra]
            if multiarch:
                kids = []
                for arch in ("amd64", "arm64"):
                    d, raw, blobs = _image(rng, pool, name, build, pushed, arch, bases)
                    kids.append(
                        ManifestSpec(
                            d, OCI_MANIFEST, raw, [], pushed, pulled, "image", blobs, platform=f"linux/{arch}"
                        )
                    )
                idx_digest, idx_raw = _manifest(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_INDEX,
                        "manifests": [
                            {
                                "mediaType": OCI_MANIFEST,
                                "digest": k.digest,
                                "size": len(k.raw),
                                "platform": {"os": "linux", "architecture": k.platform.split("/")[1]},
                            }
                            for k in kids
                        ],
                    }
                )
                top = ManifestSpec(
                    idx_digest,
                    OCI_INDEX,
                    idx_raw,
                    tags,
                    pushed,
                    pulled,
                    "index",
                    children=[k.digest for k in kids],
                )
                manifests.extend(kids)
                manifests.append(top)
            else:
                d, raw, blobs = _image(rng, pool, name, build, pushed, "amd64", bases)
                top = ManifestSpec(
                    d, OCI_MANIFEST, raw, tags, pushed, pulled, "image", blobs, platform="linux/amd64"
                )
                manifests.append(top)
            if signed and release and tags:
                manifests.append(_referrer(top, "sig", pushed + timedelta(minutes=2)))
                if rng.random() < 0.5:
                    manifests.append(_referrer(top, "att", pushed + timedelta(minutes=3)))
        releases = [
            m for m in manifests if m.kind != "referrer" and any(t[0].isdigit() and "." in t for t in m.tags)
        ]
        if releases:
            releases[-1].tags.append("latest")
        for m in manifests:
            m.tags.sort()
        fleet.append(RepoSpec(name, manifests))
    return fleet
