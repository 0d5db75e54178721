"""OCI distribution API adapter (CNCF distribution, Harbor, Docker Hub, any OCI registry).

A small client of our own on ``requests``: oras-py, the maintained Python OCI library, is
built for pushing and pulling artifacts; it does not list the catalog, does not follow
``Link`` pages for catalog and tags with a configurable page size, and does not expose request
counts, which the bench and the "one request per digest" goal need. Small body-less requests
(the HEAD per tag of an incremental inventory) take a fast path on kept-alive ``http.client``
connections (``transport``: a third of the CPU per call). What this client does:

- catalog and tag listing, following ``Link: <...>; rel="next"`` until the last page;
- manifests by tag or digest with ``Accept`` for OCI and Docker manifests, indexes and manifest
  lists, digests taken from ``Docker-Content-Digest`` and checked against the bytes;
- one GET per tag (it yields both the tag's digest and the manifest), then one GET per child
  digest of an index not already seen, issued concurrently on a bounded thread pool;
- with ``known`` (what an earlier listing read, ``registries.known``): one HEAD per tag it
  knows, a GET only for a digest it has not seen, no GET for a config it has;
- referrers: the OCI referrers API where the registry has it (probed once per registry),
  else the tag schema and cosign-style ``sha256-<hex>.sig|att|sbom`` tags;
- delete by digest (202), blobs streamed out (hashed while read) and in (checked before the
  upload starts), cross-repository mounts, blob deletes;
- basic auth and bearer tokens (``WWW-Authenticate: Bearer realm=..,service=..,scope=..``),
  tokens cached per scope; 429, 5xx and connection errors retried with exponential backoff;
- failures as typed errors (``base.error_class``: distribution error code, else HTTP status).

**Deleting a tag.** The distribution API deletes manifests by digest only; distribution 2.8
refuses ``DELETE /v2/<name>/manifests/<tag>`` and deleting the digest would take every other tag
of the image with it. :meth:`OciRegistry.delete_tag` therefore does what regclient does
(``scheme/reg/tag.go``): push a unique throwaway manifest (an empty config carrying the tag and
a nonce as labels, one ``{}`` layer) to the tag, which moves the tag off the image, then delete
that throwaway manifest by digest, which removes the tag. Safeguards: deletes must be enabled
(checked first with a DELETE of the throwaway's digest before it exists: 404 means enabled, 405
means not, and nothing has changed yet); the tag is read again just before the push and left
alone if it moved meanwhile; if the final delete fails, the original manifest is put back under
the tag. Caveats: for a moment the tag names the throwaway image (a pull in that window gets an
empty image); a push of the same tag in the last milliseconds before ours is overwritten; the
two small throwaway blobs stay until garbage collection; webhooks see a push and a delete. The
image itself stays, untagged, until garbage collection with ``--delete-untagged``. Registries
that implement tag deletion (OCI distribution-spec 1.1, distribution 3) can use it instead with
``tag_delete_api=True``; it is off by default because some registries answer such a DELETE by
deleting the whole manifest, with all its tags.

Credentials are never logged or put in exception messages.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from .base import (
    ACCEPT_ALL,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    OCI_MANIFEST,
    BlobData,
    Capabilities,
    DeleteResult,
    Descriptor,
    Invalid,
    Manifest,
    ManifestHead,
    NotFound,
    Page,
    Registry,
    RegistryError,
    RepositorySettings,
    Unauthorized,
    Unavailable,
    Unsupported,
    add_tagged_referrers,
    descriptor_of_entry,
    digest_of,
    error_class,
    index_size,
    link_graph,
    media_type_of,
    platform_of,
    referrer_tags,
    referrers_of_type,
)
from .known import KnownContent
from .records import IMAGE_CONFIG_TYPES, config_digests, index_created, manifest_record, parse_configs
from .streams import CHUNK, BlobStream, spool
from .transport import FastPath

log = logging.getLogger(__name__)

__all__ = ["IMAGE_CONFIG_TYPES", "OciRegistry"]

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
EMPTY_JSON = b"{}"  # the OCI empty descriptor's content (image-spec "empty" guidance)


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@`` part, and that part (decoded) when there was one."""
    parts = urlsplit(url)
    if parts.username is None and "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    creds = (unquote(parts.username or ""), unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=host)), creds if creds[0] else None


class OciRegistry(Registry):
    kind = "oci"

    def __init__(
        self,
        name: str,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        verify: bool | str = True,
        concurrency: int = 8,
        read_configs: bool = True,
        page_size: int = 1000,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
        tag_delete_api: bool = False,
    ) -> None:
        super().__init__(name)
        # Credentials written into the URL (``https://user:pass@host``) are taken out of it: the
        # URL is quoted in every error message, and those reach logs, S3 reports and emails.
        url, in_url = _split_userinfo(url)
        if in_url and not username:
            username, password = in_url
        self.url = url.rstrip("/")
        self._creds = (username, password) if username else None
        self.concurrency = concurrency
        self.read_configs = read_configs
        self.page_size = page_size
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.tag_delete_api = tag_delete_api
        self.session = requests.Session()
        self.session.verify = verify
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(concurrency, 4))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # small body-less requests (the inventory's HEAD per tag) skip requests' per-call work
        self._fast = FastPath(
            self.session, adapter, self.url, self._creds is not None, max(concurrency, 4), timeout
        )
        self._basic_header = {"Authorization": _basic_auth(username, password)} if username else {}
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        self._referrers_api: bool | None = None
        # What an earlier listing read (the inventory sets it): known digests cost no GET.
        self.known: KnownContent | None = None

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities(
            lists_untagged_manifests=False,
            deletes_tags=True,
            untag_keeps_manifest=True,
            referrers_api=self._referrers_api,
            records_push_time=False,
            records_pull_time=False,
            blob_reads_cheap=True,
            deletes_blobs=True,
            mounts_blobs=True,
            repository_settings=False,
            explicit_repositories=False,
        )

    # -- transport -----------------------------------------------------------------------
    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _fetch_token(self, challenge: str, scope: str, repository: str | None) -> None:
        challenge_params = dict(_CHALLENGE.findall(challenge))
        realm = challenge_params.get("realm")
        if not realm:
            raise self.error("bearer challenge without realm", repository)
        # only service and scope go to the token service (not e.g. error="invalid_token")
        params = {k: challenge_params[k] for k in ("service", "scope") if k in challenge_params}
        params.setdefault("scope", scope)
        self.requests.add("token")
        try:
            resp = self.session.get(realm, params=params, auth=self._creds, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self.error(
                f"token service {realm} unreachable: {type(exc).__name__}", repository, Unavailable
            ) from None
        if resp.status_code != 200:
            raise self.error(
                f"token service {realm} refused: HTTP {resp.status_code}",
                repository,
                error_class(resp.status_code),
            )
        try:
            body = resp.json()
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise self.error(f"token service {realm} returned no token", repository)
        with self._lock:
            self._tokens[scope] = token

    def request(
        self,
        method: str,
        path: str,
        op: str,
        *,
        repository: str | None = None,
        scope: str | None = None,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """One API call with auth, retries and counting; raises a typed RegistryError unless the
        status is in ``ok``. A file given as ``data`` is rewound before every attempt."""
        url = path if path.startswith("http") else self.url + path
        scope = scope or (f"repository:{repository}:pull" if repository else "registry:catalog:*")
        headers = dict(kwargs.pop("headers", {}))
        body = kwargs.get("data")
        authed = False
        attempt = 0
        while True:
            hdrs = {**headers, **self._auth_header(scope)}
            auth = self._creds if self._basic else None
            if hasattr(body, "seek"):
                body.seek(0)
            self.requests.add(op)
            try:
                resp = self._send(method, url, hdrs, auth, kwargs)
            except requests.RequestException as exc:
                if attempt < self.retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                raise self.error(
                    f"{method} {path}: cannot reach {self.url}: {type(exc).__name__}", repository, Unavailable
                ) from None
            if resp.status_code == 401 and not authed:
                authed = True
                challenge = resp.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer"):
                    self._fetch_token(challenge, scope, repository)
                    continue
                if challenge.lower().startswith("basic") and self._creds:
                    self._basic = True
                    continue
                raise self.error(
                    f"{method} {path}: unauthorized (no usable credentials)", repository, Unauthorized
                )
            if resp.status_code in RETRY_STATUS and attempt < self.retries:
                self._sleep(attempt, resp.headers.get("Retry-After"))
                attempt += 1
                continue
            if resp.status_code not in ok:
                codes, text = _api_error(resp)
                raise self.error(
                    f"{method} {path}: HTTP {resp.status_code} {text}",
                    repository,
                    error_class(resp.status_code, codes),
                )
            return resp

    def _send(self, method: str, url: str, headers: dict[str, str], auth: Any, kwargs: dict[str, Any]) -> Any:
        """One HTTP exchange: on the fast path where it applies (``transport``), else requests."""
        if self._fast.usable(url, method, kwargs):
            if auth:
                headers = {**headers, **self._basic_header}
            resp = self._fast.send(method, url, headers)
            if resp is not None:
                return resp
        return self.session.request(method, url, headers=headers, auth=auth, timeout=self.timeout, **kwargs)

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))

    def _pages(
        self, path: str, op: str, key: str, repository: str | None = None, query: str | None = None
    ) -> list[str]:
        items: list[str] = []
        next_url: str | None = f"{path}?{query or f'n={self.page_size}'}"
        while next_url:
            resp = self.request("GET", next_url, op, repository=repository)
            items.extend(resp.json().get(key) or [])
            if query:  # one page asked for
                break
            link = resp.links.get("next", {}).get("url")
            next_url = urljoin(self.url + "/", link) if link else None
        return items

    # -- repositories ------------------------------------------------------------------------
    def list_repositories(self) -> list[str]:
        return sorted(self._pages("/v2/_catalog", "catalog", "repositories"))

    def create_repository(self, repository: str, settings: RepositorySettings | None = None) -> bool:
        """Nothing to do: the distribution API creates a repository on its first push."""
        return False

    def describe_repository(self, repository: str) -> RepositorySettings:
        """The distribution API keeps no repository settings."""
        return RepositorySettings()

    def apply_repository_settings(self, repository: str, settings: RepositorySettings) -> list[str]:
        return sorted(settings.given())

    # -- listing ---------------------------------------------------------------------------
    def list_tags(self, repository: str, page: Page | None = None) -> list[str]:
        """Tags, sorted. Distribution answers 404 both for an unknown repository and for one whose
        tags are all gone, so both list nothing. With ``page``, one request with ``n``/``last``
        (distribution 2.8 ignores ``n`` for tags; the page is cut here either way)."""
        query = None
        if page is not None:
            params = []
            if page.limit is not None:
                params.append(f"n={page.limit}")
            if page.last is not None:
                params.append(f"last={quote(page.last)}")
            query = "&".join(params) or f"n={self.page_size}"
        try:
            tags = self._pages(f"/v2/{repository}/tags/list", "tags_list", "tags", repository, query)
        except NotFound:
            return []
        return page.apply(tags) if page is not None else sorted(tags)

    def list_images(self, repository: str) -> list[dict[str, Any]]:
        tags = self.list_tags(repository)
        manifests: dict[str, Manifest] = {}
        tags_of: dict[str, list[str]] = {}
        with ThreadPoolExecutor(self.concurrency) as pool:
            for tag, m in zip(tags, pool.map(lambda t: self._tagged(repository, t), tags), strict=False):
                manifests[m.digest] = m
                tags_of.setdefault(m.digest, []).append(tag)
            children: dict[str, list[str]] = {}
            platforms: dict[str, str] = {}
            pending = list(manifests.values())
            while pending:  # walk indexes (nested ones too) down to their children
                wanted: list[str] = []
                for m in pending:
                    if m.media_type in INDEX_TYPES:
                        entries = m.body.get("manifests", [])
                        children[m.digest] = [e["digest"] for e in entries]
                        for e in entries:
                            if p := platform_of(e.get("platform")):
                                platforms[e["digest"]] = p
                            if e["digest"] not in manifests and e["digest"] not in wanted:
                                wanted.append(e["digest"])
                pending = list(pool.map(lambda d: self._by_digest(repository, d), wanted))
                manifests.update((m.digest, m) for m in pending)
            pending = self._referrers(repository, manifests, pool)
            while pending:
                manifests.update((m.digest, m) for m in pending)
                pending = self._referrers(repository, {m.digest: m for m in pending}, pool)
            configs = self._configs(repository, manifests.values(), pool)
        records = [
            manifest_record(self.kind, repository, m, sorted(tags_of.get(d, [])), platforms.get(d), configs)
            for d, m in manifests.items()
        ]
        link_graph(records, children)
        index_size(records)
        index_created(records)
        return records

    def _referrers(
        self, repository: str, found: dict[str, Manifest], pool: ThreadPoolExecutor
    ) -> list[Manifest]:
        """Untagged referrers of ``found`` through the referrers API, where the registry has it."""
        subjects = list(found)
        if not subjects or not self._has_referrers_api(repository, subjects[0]):
            return []
        lists = pool.map(lambda d: self.referrers(repository, d), subjects)
        new = {e["digest"] for entries in lists for e in entries} - set(found)
        return list(pool.map(lambda d: self._by_digest(repository, d), sorted(new)))

    def _tagged(self, repository: str, tag: str) -> Manifest:
        """The manifest a tag points at: one GET, or with a cache one HEAD (plus a GET by digest
        only when the digest is new)."""
        known = self.known
        if known is None:
            return self.get_manifest(repository, tag)
        # a tag gone between the list and the HEAD falls through: the GET names it as a full listing does
        if (repository, tag) in known.tags and (head := self.head_manifest(repository, tag)) is not None:
            return self._by_digest(repository, str(head))
        m = self.get_manifest(repository, tag)
        known.saw_manifest(m)
        return m

    def _by_digest(self, repository: str, digest: str) -> Manifest:
        known = self.known
        if known is None:
            return self.get_manifest(repository, digest)
        return known.manifest(digest, lambda: self.get_manifest(repository, digest))

    def _has_referrers_api(self, repository: str, digest: str) -> bool:
        if self._referrers_api is None:
            try:
                self.referrers(repository, digest)
                self._referrers_api = True
            except (NotFound, Unsupported):
                self._referrers_api = False
        return self._referrers_api

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[dict[str, Any]]:
        """The raw entries of ``GET /v2/<name>/referrers/<digest>`` (NotFound where there is no API)."""
        query = f"?artifactType={quote(artifact_type)}" if artifact_type else ""
        resp = self.request(
            "GET", f"/v2/{repository}/referrers/{digest}{query}", "referrers", repository=repository
        )
        return resp.json().get("manifests", [])

    def list_referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """The referrers API where the registry has it, plus the tag schema's index and cosign's
        ``.sig``/``.att``/``.sbom`` tags (one HEAD each: cosign's own signatures carry no subject)."""
        self.check_digest(digest, repository)
        found: dict[str, Descriptor] = {}
        if self._has_referrers_api(repository, digest):
            for e in self.referrers(repository, digest, artifact_type):
                found[e["digest"]] = descriptor_of_entry(e)
        for tag in referrer_tags(digest):
            if self.head_manifest(repository, tag) is None:
                continue
            add_tagged_referrers(found, self.get_manifest(repository, tag))
        return referrers_of_type(found, artifact_type)

    def _configs(
        self, repository: str, manifests: Any, pool: ThreadPoolExecutor
    ) -> dict[str, dict[str, Any]]:
        if not self.read_configs:
            return {}
        wanted = config_digests(manifests)
        known = self.known
        cached = {} if known is None else {d: c for d in wanted if (c := known.config(d)) is not None}
        missing = [d for d in wanted if d not in cached]
        blobs = pool.map(lambda d: self.get_blob(repository, d), missing)
        configs = parse_configs(
            zip(missing, blobs, strict=False), lambda p: self.error(p, repository, Invalid)
        )
        if known is not None:
            for digest, config in configs.items():
                known.saw_config(digest, config)
        return {**configs, **cached}

    # -- manifests ---------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str) -> Manifest:
        resp = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            "manifest_get",
            repository=repository,
            headers={"Accept": ", ".join(ACCEPT_ALL)},
        )
        raw = resp.content
        digest = digest_of(raw)
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise self.error(
                f"manifest {reference}: registry says {claimed} but the bytes hash to {digest}",
                repository,
                Invalid,
            )
        if reference.startswith("sha256:") and reference != digest:
            raise self.error(f"manifest {reference}: bytes hash to {digest}", repository, Invalid)
        try:
            json.loads(raw)
        except ValueError:
            raise self.error(f"manifest {reference} is not valid JSON", repository, Invalid) from None
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media not in ACCEPT_ALL:
            media = media_type_of(raw)
        return Manifest(digest, media, raw)

    def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """Digest, media type and size of a tag or digest, or None when it does not exist."""
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            "manifest_head",
            repository=repository,
            ok=(200, 404),
            headers={"Accept": ", ".join(ACCEPT_ALL)},
        )
        if resp.status_code != 200:
            return None
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest:  # registries must send it; without it only a GET can tell
            digest = self.get_manifest(repository, reference).digest
        length = resp.headers.get("Content-Length")
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestHead(digest, media, int(length) if length and length.isdigit() else None)

    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str:
        resp = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag or manifest.digest}",
            "manifest_put",
            repository=repository,
            scope=f"repository:{repository}:pull,push",
            ok=(201,),
            data=manifest.raw,
            headers={"Content-Type": manifest.media_type},
        )
        return resp.headers.get("Docker-Content-Digest") or manifest.digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.check_digest(digest, repository)
        self.request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            "manifest_delete",
            repository=repository,
            scope=f"repository:{repository}:delete",
            ok=(202,),
        )

    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        """One DELETE per digest, ``concurrency`` at a time (the API has no bulk delete and
        distribution does not refuse a child its index still lists); 404 is typed ``gone``."""
        result = DeleteResult()

        def one(digest: str) -> tuple[str, int | str]:
            try:
                resp = self.request(
                    "DELETE",
                    f"/v2/{repository}/manifests/{digest}",
                    "manifest_delete",
                    repository=repository,
                    scope=f"repository:{repository}:delete",
                    ok=(202, 404, 405),
                )
            except RegistryError as exc:
                return digest, exc.problem
            return digest, resp.status_code

        wanted = list(dict.fromkeys(digests))
        with ThreadPoolExecutor(max(1, min(self.concurrency, len(wanted) or 1))) as pool:
            for digest, got in pool.map(one, wanted):
                if got == 202:
                    result.deleted.append(digest)
                elif got == 404:
                    result.failures[digest] = "not found (already deleted?)"
                    result.gone.add(digest)
                elif got == 405:
                    result.failures[digest] = "deletes are disabled (storage.delete.enabled: false)"
                else:
                    result.failures[digest] = str(got)
        return result

    # -- tags --------------------------------------------------------------------------------
    def delete_tag(self, repository: str, tag: str) -> None:
        """Remove one tag and nothing else (see the module docstring for how and its caveats)."""
        if tag.startswith("sha256:"):
            raise self.error(f"delete_tag takes a tag, not a digest ({tag})", repository, Invalid)
        head = self.head_manifest(repository, tag)
        if head is None:
            raise self.error(f"tag {tag!r} not found", repository, NotFound)
        if self.tag_delete_api:
            self.request(
                "DELETE",
                f"/v2/{repository}/manifests/{quote(tag)}",
                "tag_delete",
                repository=repository,
                scope=f"repository:{repository}:delete",
                ok=(202,),
            )
            return
        original = self.get_manifest(repository, head.digest)
        throwaway, blobs = _throwaway(tag, head.media_type or original.media_type)
        # Deletes must work before anything changes: the throwaway does not exist yet, so an
        # enabled registry answers 404 and one with deletes disabled 405 (Unsupported).
        with contextlib.suppress(NotFound):
            self.delete_manifest(repository, throwaway.digest)
        for blob in blobs:
            self.upload_blob(repository, blob)
        now = self.head_manifest(repository, tag)
        if now is None or now.digest != head.digest:
            raise self.error(
                f"tag {tag!r} moved from {head.digest} to {now.digest if now else 'nowhere'} while it was "
                "being deleted; left as it is",
                repository,
                Invalid,
            )
        self.put_manifest(repository, throwaway, tag)
        try:
            self.delete_manifest(repository, throwaway.digest)
        except RegistryError as exc:
            with contextlib.suppress(RegistryError):
                self.put_manifest(repository, original, tag)
            raise self.error(
                f"tag {tag!r}: deleting the throwaway manifest {throwaway.digest} failed ({exc.problem}); "
                f"the tag was put back on {head.digest}",
                repository,
                type(exc),
            ) from None

    # -- blobs -------------------------------------------------------------------------------
    def open_blob(self, repository: str, digest: str) -> IO[bytes]:
        self.check_digest(digest, repository)
        resp = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", "blob_get", repository=repository, stream=True
        )
        length = resp.headers.get("Content-Length")
        return BlobStream(
            resp.iter_content(CHUNK),
            digest,
            int(length) if length and length.isdigit() else None,
            lambda p, cls: self.error(p, repository, cls),
            resp.close,
        )

    def head_blob(self, repository: str, digest: str) -> int | None:
        self.check_digest(digest, repository)
        resp = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", "blob_head", repository=repository, ok=(200, 404)
        )
        if resp.status_code != 200:
            return None
        length = resp.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else 0

    def put_blob(self, repository: str, data: BlobData, digest: str, size: int | None = None) -> str:
        """Monolithic upload (POST, then PUT with the digest) of content checked beforehand."""
        self.check_digest(digest, repository)
        scope = f"repository:{repository}:pull,push"
        with spool(data, digest, size, lambda p, cls: self.error(p, repository, cls)) as content:
            start = self.request(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                "blob_upload",
                repository=repository,
                scope=scope,
                ok=(202,),
            )
            location = urljoin(self.url + "/", start.headers["Location"])
            sep = "&" if "?" in location else "?"
            self.request(
                "PUT",
                f"{location}{sep}digest={quote(digest)}",
                "blob_upload",
                repository=repository,
                scope=scope,
                ok=(201,),
                data=content.body(),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(content.size)},
            )
        return digest

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """``POST ?mount=&from=``: 201 is mounted; 202 is an upload session instead, cancelled here."""
        self.check_digest(digest, repository)
        resp = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?mount={quote(digest)}&from={quote(from_repository)}",
            "blob_mount",
            repository=repository,
            scope=f"repository:{repository}:pull,push repository:{from_repository}:pull",
            ok=(201, 202),
        )
        if resp.status_code == 202 and resp.headers.get("Location"):
            with contextlib.suppress(RegistryError):
                self.request(
                    "DELETE",
                    urljoin(self.url + "/", resp.headers["Location"]),
                    "blob_upload_cancel",
                    repository=repository,
                    scope=f"repository:{repository}:pull,push",
                    ok=(204, 404),
                )
        return resp.status_code == 201

    def delete_blob(self, repository: str, digest: str) -> None:
        """``DELETE /v2/<name>/blobs/<digest>`` (unlinks it from this repository; space comes back
        with garbage collection). Deleting a blob a manifest still uses breaks that manifest."""
        self.check_digest(digest, repository)
        self.request(
            "DELETE",
            f"/v2/{repository}/blobs/{digest}",
            "blob_delete",
            repository=repository,
            scope=f"repository:{repository}:delete",
            ok=(202,),
        )


def _throwaway(tag: str, media_type: str) -> tuple[Manifest, list[bytes]]:
    """A unique minimal image of the tagged manifest's family (Docker or OCI), and its two blobs."""
    docker = media_type in (DOCKER_MANIFEST, DOCKER_LIST)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "config": {
                "Labels": {"org.registry-ops.delete-tag": tag, "org.registry-ops.nonce": uuid.uuid4().hex}
            },
            "rootfs": {"type": "layers", "diff_ids": [digest_of(EMPTY_JSON)]},
        },
        sort_keys=True,
    ).encode()
    body = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json"
            if docker
            else "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"
                if docker
                else "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(EMPTY_JSON),
                "size": len(EMPTY_JSON),
            }
        ],
    }
    raw = json.dumps(body, sort_keys=True).encode()
    return Manifest(digest_of(raw), body["mediaType"], raw), [EMPTY_JSON, config]


def _basic_auth(username: str, password: str | None) -> str:
    """The ``Authorization`` value of HTTP basic auth, encoded as ``requests`` encodes it."""
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode("latin1")).decode()


def _api_error(resp: requests.Response) -> tuple[list[str], str]:
    """(codes, 'CODE: message; ...') of a distribution error body."""
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return [], ""
    codes = [str(e.get("code")) for e in errors if isinstance(e, dict)]
    text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))[:300]
    return codes, text
