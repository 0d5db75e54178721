"""AWS ECR adapter over a boto3 ECR client (from the Amazon provider's ``EcrHook``).

Listing uses the fewest calls AWS allows: ``describe_repositories`` pages of 1,000 and
``describe_images`` pages of 1,000 (one call per 1,000 images). Manifests are read with
``batch_get_image`` only for image indexes (to link their children), 100 ids per call, unless
``read_manifests`` asks for every image's (config digest, layer digests and sizes in the
inventory): then every manifest is read once, 100 per call, the indexes' reads among them.
That option is off by default because ECR counts ``BatchGetImage`` as a pull (see
``config.RegistryConfig.read_manifests``). The config blobs (platform, created time) are not
read: on ECR they need ``GetDownloadUrlForLayer`` and a download each, so ``created_at`` stays
null and ``platform`` comes from the indexes only.
Deletes go 100 ids per ``batch_delete_image`` and per-image ``failures[]`` are reported, not
ignored. Throttling and 5xx answers are retried by botocore's ``standard`` retry mode, set
where the client is built (``clients.py``); what still fails raises a typed error chosen from
the botocore error code (:func:`aws_error_class`).

Blobs (layers and configs) go through the ECR API, never the Docker registry endpoint:

- put: ``InitiateLayerUpload``, ``UploadLayerPart`` (parts of the size ECR advises, at least
  5 MiB but the last), ``CompleteLayerUpload``; the content is checked against its digest
  before the upload starts and ECR's computed digest is checked after;
- head: ``BatchCheckLayerAvailability``; get: ``GetDownloadUrlForLayer`` and a GET of the
  pre-signed URL, streamed and hashed (moto lacks that call: tests use ``devstack.moto_layers``);
- no mount (the ECR API has none: callers put instead) and no blob delete (ECR removes layers
  no image uses by itself).

Manifest heads use ``DescribeImages`` (digest and media type; the manifest's byte size is not
known without reading it) rather than ``BatchGetImage``, which ECR records as a pull and would
move ``lastRecordedPullTime``. Referrers come from the repository listing (the image's
``subjectManifestDigest`` and cosign-style tags); their manifests are then read with
``BatchGetImage`` for exact descriptors. ``ListImageReferrers`` is not used: moto lacks it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator
from typing import IO, Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from . import ecr_settings
from .base import (
    ACCEPT_ALL,
    INDEX_TYPES,
    BlobData,
    Capabilities,
    DeleteResult,
    Descriptor,
    ImageRead,
    Invalid,
    Manifest,
    ManifestHead,
    NotFound,
    Page,
    Registry,
    RegistryError,
    RepositorySettings,
    Unavailable,
    Unsupported,
    classify,
    descriptor_of,
    digest_of,
    error_class,
    index_size,
    link_graph,
    media_type_of,
    platform_of,
    referrer_subject,
    referrer_tags,
)
from .ecr_errors import aws_code_class, aws_error_class, aws_problem
from .records import blob_columns
from .streams import CHUNK, BlobStream, spool

log = logging.getLogger(__name__)

__all__ = ["BATCH", "MIN_PART", "PAGE", "EcrRegistry", "aws_problem"]

PAGE = 1000
BATCH = 100
MIN_PART = 5 * 1024 * 1024  # ECR refuses smaller parts (LayerPartTooSmallException) but the last
DEFAULT_PART = 10 * 1024 * 1024


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class EcrRegistry(Registry):
    kind = "ecr"
    capabilities = Capabilities(
        lists_untagged_manifests=True,
        deletes_tags=True,
        untag_keeps_manifest=False,
        referrers_api=True,
        records_push_time=True,
        records_pull_time=True,
        blob_reads_cheap=False,
        deletes_blobs=False,
        mounts_blobs=False,
        repository_settings=True,
        explicit_repositories=True,
        reads_report_tags=True,
    )

    def __init__(
        self,
        name: str,
        client: Any,
        registry_id: str | None = None,
        page_size: int = PAGE,
        part_size: int | None = None,
        download_timeout: float = 60.0,
        read_manifests: bool = False,
    ) -> None:
        super().__init__(name)
        if part_size is not None and part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (ECR's minimum), got {part_size}")
        self.client = client
        self.registry_id = registry_id
        self.page_size = page_size
        self.part_size = part_size
        self.download_timeout = download_timeout
        self.read_manifests = read_manifests
        self.http = requests.Session()
        client.meta.events.register("before-send.ecr.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.requests.add(event_name.rsplit(".", 1)[-1])

    def ids(self) -> dict[str, str]:
        """The ``registryId`` argument, when the registry is another account's."""
        return {"registryId": self.registry_id} if self.registry_id else {}

    def aws_error(self, problem: str, exc: Exception, repository: str | None = None) -> RegistryError:
        """A typed error whose problem text ends with the AWS code and message."""
        return self.error(f"{problem}: {aws_problem(exc)}", repository, aws_error_class(exc))

    def call(
        self, operation: str, repository: str | None, absent: Collection[str] = (), **kwargs: Any
    ) -> dict[str, Any] | None:
        """The client's ``operation`` with ``registryId``; None when AWS answers with an error code
        in ``absent`` (the thing is not there, or already is); any other failure as a typed error."""
        try:
            return getattr(self.client, operation)(**kwargs, **self.ids())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in absent:
                return None
            raise self.aws_error(f"{operation} failed", exc, repository) from exc
        except BotoCoreError as exc:
            raise self.aws_error(f"{operation} failed", exc, repository) from exc

    def _call(self, operation: str, repository: str | None, **kwargs: Any) -> dict[str, Any]:
        return self.call(operation, repository, **kwargs) or {}

    # -- repositories ------------------------------------------------------------------------
    def list_repositories(self) -> list[str]:
        try:
            pages = self.client.get_paginator("describe_repositories").paginate(
                **self.ids(), PaginationConfig={"PageSize": self.page_size}
            )
            return sorted(r["repositoryName"] for p in pages for r in p["repositories"])
        except (ClientError, BotoCoreError) as exc:
            raise self.aws_error("describe_repositories failed", exc) from exc

    def create_repository(self, repository: str, settings: RepositorySettings | None = None) -> bool:
        return ecr_settings.create(self, repository, settings or RepositorySettings())

    def describe_repository(self, repository: str) -> RepositorySettings:
        return ecr_settings.describe(self, repository)

    def delete_repository(
        self, repository: str, digests: Iterable[str] = (), blobs: Iterable[str] = ()
    ) -> None:
        """``DeleteRepository`` with ``force``: the images go with it (ECR keeps no blobs apart)."""
        self.call(
            "delete_repository",
            repository,
            ("RepositoryNotFoundException",),
            repositoryName=repository,
            force=True,
        )

    def apply_repository_settings(self, repository: str, settings: RepositorySettings) -> list[str]:
        return ecr_settings.apply(self, repository, settings)

    def describe_registry_settings(self) -> dict[str, Any]:
        return ecr_settings.describe_registry(self)

    def apply_registry_settings(self, settings: dict[str, Any]) -> list[str]:
        return ecr_settings.apply_registry(self, settings)

    def _repository(self, repository: str) -> dict[str, Any]:
        """The ``DescribeRepositories`` entry of one repository (NotFound if absent)."""
        resp = self._call("describe_repositories", repository, repositoryNames=[repository])
        return resp["repositories"][0]

    # -- listing -------------------------------------------------------------------------------
    def describe(self, repository: str) -> list[dict[str, Any]]:
        """Raw ``imageDetails`` of a repository, all pages."""
        try:
            pages = self.client.get_paginator("describe_images").paginate(
                repositoryName=repository, **self.ids(), PaginationConfig={"PageSize": self.page_size}
            )
            return [d for p in pages for d in p["imageDetails"]]
        except (ClientError, BotoCoreError) as exc:
            raise self.aws_error("describe_images failed", exc, repository) from exc

    def list_images(self, repository: str) -> list[dict[str, Any]]:
        details = self.describe(repository)
        records = [self._record(repository, d) for d in details]
        indexes = [r["digest"] for r in records if r["kind"] == "index"]
        if self.read_manifests:
            manifests = self._read_every_manifest(repository, [r["digest"] for r in records], indexes)
        else:
            manifests = {m.digest: m for m in self.get_manifests(repository, indexes)}
        children: dict[str, list[str]] = {}
        platforms: dict[str, str] = {}
        for digest in dict.fromkeys(indexes):
            entries = manifests[digest].body.get("manifests", [])
            children[digest] = [e["digest"] for e in entries]
            for e in entries:
                p = platform_of(e.get("platform"))
                if p:
                    platforms[e["digest"]] = p
        for r in records:
            r["platform"] = platforms.get(r["digest"])
            if self.read_manifests:
                m = manifests.get(r["digest"])
                r.update(blob_columns(m) if m is not None else {})
        link_graph(records, children)
        index_size(records)
        return records

    def _read_every_manifest(
        self, repository: str, digests: list[str], indexes: list[str]
    ) -> dict[str, Manifest]:
        """Every listed manifest, 100 per ``BatchGetImage`` (the indexes' reads among them).

        An index that cannot be read fails the repository, as without ``read_manifests`` (its
        children would be unlinked). Another image deleted since ``DescribeImages`` or unreadable
        keeps its row with the blob columns null (what a listing without manifests gives), and a
        warning names it."""
        found, gone, failures = self.fetch_manifests(repository, digests)
        index_set = set(indexes)
        self._refuse_unread(repository, gone & index_set, {d: failures[d] for d in index_set & set(failures)})
        for digest in sorted(gone):
            log.warning(
                "inventory: %s/%s: %s: deleted while listed; layers left unknown",
                self.name,
                repository,
                digest,
            )
        for digest, why in sorted(failures.items()):
            log.warning(
                "inventory: %s/%s: %s: manifest unreadable (%s); layers left unknown",
                self.name,
                repository,
                digest,
                why,
            )
        return found

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

    def list_tags(self, repository: str, page: Page | None = None) -> list[str]:
        """Every tag (``ListImages``, tagged only, all pages); ECR has no 'after this tag' paging,
        so ``page`` is cut from the full list."""
        try:
            pages = self.client.get_paginator("list_images").paginate(
                repositoryName=repository,
                filter={"tagStatus": "TAGGED"},
                **self.ids(),
                PaginationConfig={"PageSize": self.page_size},
            )
            tags = {i["imageTag"] for p in pages for i in p["imageIds"] if i.get("imageTag")}
        except (ClientError, BotoCoreError) as exc:
            raise self.aws_error("list_images failed", exc, repository) from exc
        return (page or Page()).apply(tags)

    def tag_map(self, repository: str) -> tuple[dict[str, set[str]], bool]:
        """``ListImages`` (one entry per digest and tag, untagged images too): complete."""
        out: dict[str, set[str]] = {}
        try:
            pages = self.client.get_paginator("list_images").paginate(
                repositoryName=repository, **self.ids(), PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                for image in page["imageIds"]:
                    tags = out.setdefault(image["imageDigest"], set())
                    if image.get("imageTag"):
                        tags.add(image["imageTag"])
        except (ClientError, BotoCoreError) as exc:
            raise self.aws_error("list_images failed", exc, repository) from exc
        return out, True

    def delete_tags(self, repository: str, tags: list[str]) -> DeleteResult:
        """``BatchDeleteImage`` by tag, 100 per call (ids carry no digest, which would delete the
        image); ECR deletes an image together with its last tag."""
        result = DeleteResult()
        for tag in tags:  # a digest here would delete the image: refused, like delete_tag does
            if tag.startswith("sha256:"):
                result.failures[tag] = f"delete_tags takes tags, not digests ({tag})"
        wanted = [t for t in dict.fromkeys(tags) if t not in result.failures]
        for batch in chunks(wanted, BATCH):
            try:
                resp = self.client.batch_delete_image(
                    repositoryName=repository, imageIds=[{"imageTag": t} for t in batch], **self.ids()
                )
            except (ClientError, BotoCoreError) as exc:
                result.failures.update(dict.fromkeys(batch, aws_problem(exc)))
                continue
            self._sort_failures(resp, "imageTag", result)
            result.deleted.extend(t for t in batch if t not in result.failures)
        return result

    def _sort_failures(self, resp: dict[str, Any], key: str, result: DeleteResult) -> None:
        """``failures[]`` of a BatchDeleteImage answer into the result, typed by their code."""
        for f in resp.get("failures", []):
            item = f["imageId"].get(key, "?")
            code = f.get("failureCode", "")
            result.failures[item] = f"{code}: {f.get('failureReason', '')}"
            if code == "ImageNotFound":
                result.gone.add(item)
            elif code == "ImageReferencedByManifestList":
                result.refused_by_index.add(item)

    def delete_tag(self, repository: str, tag: str) -> None:
        """``BatchDeleteImage`` by tag: removes the tag; ECR deletes the image with its last tag."""
        if tag.startswith("sha256:"):
            raise self.error(f"delete_tag takes a tag, not a digest ({tag})", repository, Invalid)
        resp = self._call(
            "batch_delete_image", repository, repositoryName=repository, imageIds=[{"imageTag": tag}]
        )
        for f in resp.get("failures", []):
            code = f.get("failureCode")
            cls = aws_code_class(code)
            raise self.error(
                f"batch_delete_image {tag}: {code}: {f.get('failureReason', '')}",
                repository,
                cls,
            )

    # -- manifests -----------------------------------------------------------------------------
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
                raise self.aws_error("batch_get_image failed", exc, repository) from exc
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

    def read_images(self, repository: str, digests: list[str]) -> ImageRead:
        """``BatchGetImage``, 100 ids a call, which also names each image's tags (a look before
        acting needs no listing; see :meth:`fetch_manifests`)."""
        tags: dict[str, set[str]] = {}
        wanted = list(dict.fromkeys(digests))
        found, gone, failures = self.fetch_manifests(repository, wanted, tags) if wanted else ({}, set(), {})
        return ImageRead(found, gone, failures, tags)

    def get_manifests(self, repository: str, digests: list[str]) -> list[Manifest]:
        """Manifests by digest (see :meth:`fetch_manifests`); a missing or bad one raises."""
        found, gone, failures = self.fetch_manifests(repository, digests)
        self._refuse_unread(repository, gone, failures)
        return [found[d] for d in dict.fromkeys(digests)]

    def _refuse_unread(self, repository: str, gone: set[str], failures: dict[str, str]) -> None:
        """A typed error for the first manifest not found (NotFound) or not readable."""
        if gone:
            raise self.error(f"batch_get_image: {sorted(gone)[0]}: ImageNotFound", repository, NotFound)
        if failures:
            digest, why = sorted(failures.items())[0]
            code = why.rsplit(": ", 1)[-1] if why.startswith("batch_get_image: ") else ""
            cls = aws_code_class(code) if code else Invalid
            raise self.error(f"batch_get_image: {digest}: {why}", repository, cls)

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
            raise self.aws_error("batch_get_image failed", exc, repository) from exc
        if not resp["images"]:
            raise self.error(f"tag {reference!r} not found", repository, NotFound)
        image = resp["images"][0]
        raw = image["imageManifest"].encode()
        return Manifest(
            image["imageId"]["imageDigest"],
            image.get("imageManifestMediaType") or media_type_of(raw),
            raw,
        )

    def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """``DescribeImages`` by tag or digest: no pull is recorded, and no size (None)."""
        image_id = {"imageDigest" if reference.startswith("sha256:") else "imageTag": reference}
        resp = self.call(
            "describe_images",
            repository,
            ("ImageNotFoundException", "RepositoryNotFoundException"),
            repositoryName=repository,
            imageIds=[image_id],
        )
        details = (resp or {}).get("imageDetails") or []
        if not details:
            return None
        d = details[0]
        return ManifestHead(d["imageDigest"], d.get("imageManifestMediaType") or "", None)

    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        kwargs: dict[str, Any] = {
            "repositoryName": repository,
            "imageManifest": manifest.raw.decode(),
            "imageManifestMediaType": manifest.media_type,
            "imageDigest": manifest.digest,
        }
        if tag:
            kwargs["imageTag"] = tag
        resp = self.call("put_image", repository, ("ImageAlreadyExistsException",), **kwargs)
        return manifest.digest if resp is None else resp["image"]["imageId"]["imageDigest"]

    def delete_manifest(self, repository: str, digest: str) -> None:
        """``BatchDeleteImage`` by digest (the image and all its tags)."""
        self.check_digest(digest, repository)
        resp = self._call(
            "batch_delete_image", repository, repositoryName=repository, imageIds=[{"imageDigest": digest}]
        )
        for f in resp.get("failures", []):
            code = f.get("failureCode")
            raise self.error(
                f"batch_delete_image {digest}: {code}: {f.get('failureReason', '')}",
                repository,
                aws_code_class(code),
            )

    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        """``BatchDeleteImage``, 100 ids a call. Every refusal is in ``failures[]``, so what was
        asked for and not refused counts as deleted (moto leaves untagged images out of
        ``imageIds``). ``ImageNotFound`` is typed ``gone``, ``ImageReferencedByManifestList``
        ``refused_by_index``."""
        result = DeleteResult()
        for batch in chunks(list(dict.fromkeys(digests)), BATCH):
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
            self._sort_failures(resp, "imageDigest", result)
            result.deleted.extend(d for d in batch if d not in result.failures)
        return result

    # -- referrers -------------------------------------------------------------------------------
    def list_referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[Descriptor]:
        self.check_digest(digest, repository)
        by_tag = set(referrer_tags(digest))
        candidates = sorted(
            {
                d["imageDigest"]
                for d in self.describe(repository)
                if d.get("subjectManifestDigest") == digest or by_tag & set(d.get("imageTags") or [])
            }
        )
        found: dict[str, Descriptor] = {}
        for m in self.get_manifests(repository, candidates) if candidates else []:
            if m.media_type in INDEX_TYPES:  # the tag schema: an index listing the referrers
                for e in m.body.get("manifests", []):
                    found.setdefault(
                        e["digest"],
                        Descriptor(
                            e.get("mediaType", ""),
                            e["digest"],
                            int(e.get("size", 0)),
                            e.get("artifactType"),
                            dict(e.get("annotations") or {}),
                        ),
                    )
            else:
                found[m.digest] = descriptor_of(m)
        return sorted(
            (d for d in found.values() if artifact_type is None or d.artifact_type == artifact_type),
            key=lambda d: d.digest,
        )

    # -- blobs -----------------------------------------------------------------------------------
    def head_blob(self, repository: str, digest: str) -> int | None:
        self.check_digest(digest, repository)
        resp = self.call(
            "batch_check_layer_availability",
            repository,
            ("RepositoryNotFoundException",),
            repositoryName=repository,
            layerDigests=[digest],
        )
        if resp is None:
            return None
        for layer in resp.get("layers", []):
            if layer.get("layerDigest") == digest and layer.get("layerAvailability") == "AVAILABLE":
                return int(layer.get("layerSize") or 0)
        for f in resp.get("failures", []):
            code = f.get("failureCode")
            if code not in ("MissingLayerDigest", None):
                raise self.error(
                    f"batch_check_layer_availability {digest}: {code}: {f.get('failureReason', '')}",
                    repository,
                    Invalid if code == "InvalidLayerDigest" else aws_code_class(code),
                )
        return None

    def open_blob(self, repository: str, digest: str) -> IO[bytes]:
        """``GetDownloadUrlForLayer``, then the pre-signed URL, streamed and hashed."""
        self.check_digest(digest, repository)
        url = self._call(
            "get_download_url_for_layer", repository, repositoryName=repository, layerDigest=digest
        )["downloadUrl"]
        try:
            resp = self.http.get(url, stream=True, timeout=self.download_timeout)
        except requests.RequestException as exc:
            raise self.error(
                f"layer {digest}: download failed: {type(exc).__name__}", repository, Unavailable
            ) from None
        if resp.status_code != 200:
            resp.close()
            raise self.error(
                f"layer {digest}: download answered HTTP {resp.status_code}",
                repository,
                error_class(resp.status_code),
            )
        length = resp.headers.get("Content-Length")
        return BlobStream(
            resp.iter_content(CHUNK),
            digest,
            int(length) if length and length.isdigit() else None,
            lambda p, cls: self.error(p, repository, cls),
            resp.close,
        )

    def put_blob(self, repository: str, data: BlobData, digest: str, size: int | None = None) -> str:
        """Layer upload in parts; nothing is sent unless the content hashes to ``digest``."""
        self.check_digest(digest, repository)
        with spool(data, digest, size, lambda p, cls: self.error(p, repository, cls)) as content:
            start = self._call("initiate_layer_upload", repository, repositoryName=repository)
            upload_id = start["uploadId"]
            part = self.part_size or max(int(start.get("partSize") or DEFAULT_PART), MIN_PART)
            first = 0
            for chunk in content.chunks(part):
                self._call(
                    "upload_layer_part",
                    repository,
                    repositoryName=repository,
                    uploadId=upload_id,
                    partFirstByte=first,
                    partLastByte=first + len(chunk) - 1,
                    layerPartBlob=chunk,
                )
                first += len(chunk)
            done = self.call(
                "complete_layer_upload",
                repository,
                ("LayerAlreadyExistsException",),
                repositoryName=repository,
                uploadId=upload_id,
                layerDigests=[digest],
            )
            if done is None:
                return digest
        if done.get("layerDigest") != digest:
            raise self.error(
                f"complete_layer_upload: ECR computed {done.get('layerDigest')} for the layer sent "
                f"as {digest}",
                repository,
                Invalid,
            )
        return digest

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """The ECR API has no cross-repository mount: always False (put the blob instead)."""
        self.check_digest(digest, repository)
        return False

    def delete_blob(self, repository: str, digest: str) -> None:
        raise self.error(
            "ECR has no blob delete (it removes layers no image uses by itself)", repository, Unsupported
        )
