"""AWS ECR adapter over a boto3 ECR client (from the Amazon provider's ``EcrHook``).

Listing uses the fewest calls AWS allows: ``describe_repositories`` pages of 1,000 and
``describe_images`` pages of 1,000 (one call per 1,000 images). Manifests are read with
``batch_get_image`` only for image indexes (to link their children), 100 ids per call.
Deletes go 100 ids per ``batch_delete_image`` and per-image ``failures[]`` are reported, not
ignored. Throttling and 5xx answers are retried by botocore's ``standard`` retry mode, set
where the client is built (``clients.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    ACCEPT_ALL,
    DeleteResult,
    Manifest,
    Registry,
    classify,
    index_size,
    link_graph,
    media_type_of,
    platform_of,
    referrer_subject,
)

PAGE = 1000
BATCH = 100


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _problem(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


class EcrRegistry(Registry):
    kind = "ecr"

    def __init__(self, name: str, client: Any, registry_id: str | None = None, page_size: int = PAGE) -> None:
        super().__init__(name)
        self.client = client
        self.registry_id = registry_id
        self.page_size = page_size
        client.meta.events.register("before-send.ecr.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.requests.add(event_name.rsplit(".", 1)[-1])

    def _ids(self) -> dict[str, str]:
        return {"registryId": self.registry_id} if self.registry_id else {}

    def list_repositories(self) -> list[str]:
        try:
            pages = self.client.get_paginator("describe_repositories").paginate(
                **self._ids(), PaginationConfig={"PageSize": self.page_size}
            )
            return sorted(r["repositoryName"] for p in pages for r in p["repositories"])
        except (ClientError, BotoCoreError) as exc:
            raise self.error(f"describe_repositories failed: {_problem(exc)}") from exc

    def describe(self, repository: str) -> list[dict[str, Any]]:
        """Raw ``imageDetails`` of a repository, all pages."""
        try:
            pages = self.client.get_paginator("describe_images").paginate(
                repositoryName=repository, **self._ids(), PaginationConfig={"PageSize": self.page_size}
            )
            return [d for p in pages for d in p["imageDetails"]]
        except (ClientError, BotoCoreError) as exc:
            raise self.error(f"describe_images failed: {_problem(exc)}", repository) from exc

    def list_images(self, repository: str) -> list[dict[str, Any]]:
        details = self.describe(repository)
        records = [self._record(repository, d) for d in details]
        indexes = [r["digest"] for r in records if r["kind"] == "index"]
        children: dict[str, list[str]] = {}
        platforms: dict[str, str] = {}
        for manifest in self.get_manifests(repository, indexes):
            entries = manifest.body.get("manifests", [])
            children[manifest.digest] = [e["digest"] for e in entries]
            for e in entries:
                p = platform_of(e.get("platform"))
                if p:
                    platforms[e["digest"]] = p
        for r in records:
            r["platform"] = platforms.get(r["digest"])
        link_graph(records, children)
        index_size(records)
        return records

    def _record(self, repository: str, d: dict[str, Any]) -> dict[str, Any]:
        tags = sorted(d.get("imageTags") or [])
        media_type = d.get("imageManifestMediaType")
        subject = d.get("subjectManifestDigest") or referrer_subject(tags)
        return {
            "registry_kind": self.kind,
            "repository": repository,
            "digest": d["imageDigest"],
            "tags": tags,
            "kind": classify(media_type, subject, tags),
            "media_type": media_type,
            "artifact_type": d.get("artifactMediaType"),
            "size_bytes": d.get("imageSizeInBytes"),
            "pushed_at": d.get("imagePushedAt"),
            "last_pulled_at": d.get("lastRecordedPullTime"),
            "subject_digest": subject,
        }

    def get_manifests(self, repository: str, digests: list[str]) -> list[Manifest]:
        """Manifests by digest, 100 per ``batch_get_image`` call; missing ones raise."""
        out: list[Manifest] = []
        for batch in chunks(digests, BATCH):
            try:
                resp = self.client.batch_get_image(
                    repositoryName=repository,
                    imageIds=[{"imageDigest": d} for d in batch],
                    acceptedMediaTypes=list(ACCEPT_ALL),
                    **self._ids(),
                )
            except (ClientError, BotoCoreError) as exc:
                raise self.error(f"batch_get_image failed: {_problem(exc)}", repository) from exc
            if resp.get("failures"):
                f = resp["failures"][0]
                raise self.error(
                    f"batch_get_image: {f['imageId']}: {f['failureCode']} {f.get('failureReason', '')}",
                    repository,
                )
            seen = set()
            for image in resp["images"]:
                digest = image["imageId"]["imageDigest"]
                if digest in seen:  # one entry per tag of the same digest
                    continue
                seen.add(digest)
                raw = image["imageManifest"].encode()
                media = image.get("imageManifestMediaType") or media_type_of(raw)
                out.append(Manifest(digest, media, raw))
        return out

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        if reference.startswith("sha256:"):
            return self.get_manifests(repository, [reference])[0]
        try:
            resp = self.client.batch_get_image(
                repositoryName=repository,
                imageIds=[{"imageTag": reference}],
                acceptedMediaTypes=list(ACCEPT_ALL),
                **self._ids(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self.error(f"batch_get_image failed: {_problem(exc)}", repository) from exc
        if not resp["images"]:
            raise self.error(f"tag {reference!r} not found", repository)
        image = resp["images"][0]
        raw = image["imageManifest"].encode()
        return Manifest(
            image["imageId"]["imageDigest"],
            image.get("imageManifestMediaType") or media_type_of(raw),
            raw,
        )

    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        kwargs: dict[str, Any] = {
            "repositoryName": repository,
            "imageManifest": manifest.raw.decode(),
            "imageManifestMediaType": manifest.media_type,
            "imageDigest": manifest.digest,
            **self._ids(),
        }
        if tag:
            kwargs["imageTag"] = tag
        try:
            resp = self.client.put_image(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageAlreadyExistsException":
                return manifest.digest
            raise self.error(f"put_image failed: {_problem(exc)}", repository) from exc
        return resp["image"]["imageId"]["imageDigest"]

    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        result = DeleteResult()
        for batch in chunks(digests, BATCH):
            try:
                resp = self.client.batch_delete_image(
                    repositoryName=repository,
                    imageIds=[{"imageDigest": d} for d in batch],
                    **self._ids(),
                )
            except (ClientError, BotoCoreError) as exc:
                for d in batch:
                    result.failures[d] = _problem(exc)
                continue
            result.deleted.extend(
                sorted({i["imageDigest"] for i in resp.get("imageIds", []) if "imageDigest" in i})
            )
            for f in resp.get("failures", []):
                digest = f["imageId"].get("imageDigest", "?")
                result.failures[digest] = f"{f['failureCode']}: {f.get('failureReason', '')}"
        return result
