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
    digest_of,
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


def aws_problem(exc: Exception) -> str:
    """'Code: message' of a botocore error, for messages that name the problem."""
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

    def ids(self) -> dict[str, str]:
        """The ``registryId`` argument, when the registry is another account's."""
        return {"registryId": self.registry_id} if self.registry_id else {}

    def list_repositories(self) -> list[str]:
        try:
            pages = self.client.get_paginator("describe_repositories").paginate(
                **self.ids(), PaginationConfig={"PageSize": self.page_size}
            )
            return sorted(r["repositoryName"] for p in pages for r in p["repositories"])
        except (ClientError, BotoCoreError) as exc:
            raise self.error(f"describe_repositories failed: {aws_problem(exc)}") from exc

    def describe(self, repository: str) -> list[dict[str, Any]]:
        """Raw ``imageDetails`` of a repository, all pages."""
        try:
            pages = self.client.get_paginator("describe_images").paginate(
                repositoryName=repository, **self.ids(), PaginationConfig={"PageSize": self.page_size}
            )
            return [d for p in pages for d in p["imageDetails"]]
        except (ClientError, BotoCoreError) as exc:
            raise self.error(f"describe_images failed: {aws_problem(exc)}", repository) from exc

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

    def fetch_manifests(
        self, repository: str, digests: list[str], tags: dict[str, set[str]] | None = None
    ) -> tuple[dict[str, Manifest], set[str], dict[str, str]]:
        """Manifests by digest, 100 per ``batch_get_image`` call, each checked against its digest.

        Returns (found, gone: not in the repository, failures: digest -> reason); only a failed
        call raises, so callers that archive can tell "already deleted" from "unreadable". With
        ``tags``, the tags the answer names for each digest found are added to it (an entry per
        tag of the image; moto names the most recent one): retention's look before deleting uses
        them to skip an image tagged since the plan without listing the repository again.
        """
        found: dict[str, Manifest] = {}
        gone: set[str] = set()
        failures: dict[str, str] = {}
        for batch in chunks(digests, BATCH):
            try:
                resp = self.client.batch_get_image(
                    repositoryName=repository,
                    imageIds=[{"imageDigest": d} for d in batch],
                    acceptedMediaTypes=list(ACCEPT_ALL),
                    **self.ids(),
                )
            except (ClientError, BotoCoreError) as exc:
                raise self.error(f"batch_get_image failed: {aws_problem(exc)}", repository) from exc
            for image in resp["images"]:  # one entry per tag of the same digest
                digest = image["imageId"]["imageDigest"]
                if tags is not None:
                    seen = tags.setdefault(digest, set())
                    if image["imageId"].get("imageTag"):
                        seen.add(image["imageId"]["imageTag"])
                raw = image["imageManifest"].encode()
                if digest_of(raw) != digest:
                    failures[digest] = (
                        f"the manifest ECR returned hashes to {digest_of(raw)}, not to its digest"
                    )
                    continue
                found[digest] = Manifest(
                    digest, image.get("imageManifestMediaType") or media_type_of(raw), raw
                )
            codes = {
                f["imageId"].get("imageDigest"): f.get("failureCode", "") for f in resp.get("failures", [])
            }
            for digest in set(batch) - set(found) - set(failures):
                code = codes.get(digest) or next(iter(codes.values()), "ImageNotFound")
                if code == "ImageNotFound":
                    gone.add(digest)
                else:
                    failures[digest] = f"batch_get_image: {code}"
        return found, gone, failures

    def get_manifests(self, repository: str, digests: list[str]) -> list[Manifest]:
        """Manifests by digest (see :meth:`fetch_manifests`); a missing or bad one raises."""
        found, gone, failures = self.fetch_manifests(repository, digests)
        if gone:
            raise self.error(f"batch_get_image: {sorted(gone)[0]}: ImageNotFound", repository)
        if failures:
            digest, why = sorted(failures.items())[0]
            raise self.error(f"batch_get_image: {digest}: {why}", repository)
        return [found[d] for d in dict.fromkeys(digests)]

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        if reference.startswith("sha256:"):
            return self.get_manifests(repository, [reference])[0]
        try:
            resp = self.client.batch_get_image(
                repositoryName=repository,
                imageIds=[{"imageTag": reference}],
                acceptedMediaTypes=list(ACCEPT_ALL),
                **self.ids(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self.error(f"batch_get_image failed: {aws_problem(exc)}", repository) from exc
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
            **self.ids(),
        }
        if tag:
            kwargs["imageTag"] = tag
        try:
            resp = self.client.put_image(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageAlreadyExistsException":
                return manifest.digest
            raise self.error(f"put_image failed: {aws_problem(exc)}", repository) from exc
        return resp["image"]["imageId"]["imageDigest"]

    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        result = DeleteResult()
        for batch in chunks(digests, BATCH):
            try:
                resp = self.client.batch_delete_image(
                    repositoryName=repository,
                    imageIds=[{"imageDigest": d} for d in batch],
                    **self.ids(),
                )
            except (ClientError, BotoCoreError) as exc:
                for d in batch:
                    result.failures[d] = aws_problem(exc)
                continue
            result.deleted.extend(
                sorted({i["imageDigest"] for i in resp.get("imageIds", []) if "imageDigest" in i})
            )
            for f in resp.get("failures", []):
                digest = f["imageId"].get("imageDigest", "?")
                result.failures[digest] = f"{f['failureCode']}: {f.get('failureReason', '')}"
        return result
