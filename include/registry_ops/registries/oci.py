"""OCI distribution API adapter (CNCF distribution, Harbor, Docker Hub, any OCI registry).

A small client of our own on ``requests``: oras-py, the maintained Python OCI library, is
built for pushing and pulling artifacts; it does not list the catalog, does not follow
``Link`` pages for catalog and tags with a configurable page size, and does not expose request
counts, which the bench and the "one request per digest" goal need. What this client does:

- catalog and tag listing, following ``Link: <...>; rel="next"`` until the last page;
- manifests by tag or digest with ``Accept`` for OCI and Docker manifests, indexes and manifest
  lists, digests taken from ``Docker-Content-Digest`` and checked against the bytes;
- one GET per tag (it yields both the tag's digest and the manifest), then one GET per child
  digest of an index not already seen, issued concurrently on a bounded thread pool;
- referrers: the OCI referrers API where the registry has it (probed once per registry),
  else the tag schema and cosign-style ``sha256-<hex>.sig|att|sbom`` tags;
- delete by digest (202), blob upload/download for archives and restores;
- basic auth and bearer tokens (``WWW-Authenticate: Bearer realm=..,service=..,scope=..``),
  tokens cached per scope; 429, 5xx and connection errors retried with exponential backoff.

Credentials are never logged or put in exception messages.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urljoin

import pandas as pd
import requests
from requests.adapters import HTTPAdapter

from .base import (
    ACCEPT_ALL,
    INDEX_TYPES,
    DeleteResult,
    Manifest,
    Registry,
    RegistryError,
    classify,
    digest_of,
    index_size,
    link_graph,
    media_type_of,
    platform_of,
    referrer_subject,
)

log = logging.getLogger(__name__)

IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


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
    ) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self._creds = (username, password) if username else None
        self.concurrency = concurrency
        self.read_configs = read_configs
        self.page_size = page_size
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        self.session.verify = verify
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(concurrency, 4))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        self._referrers_api: bool | None = None

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
            raise self.error(f"token service {realm} unreachable: {type(exc).__name__}", repository) from None
        if resp.status_code != 200:
            raise self.error(f"token service {realm} refused: HTTP {resp.status_code}", repository)
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
        """One API call with auth, retries and counting; raises RegistryError unless status in ok."""
        url = path if path.startswith("http") else self.url + path
        scope = scope or (f"repository:{repository}:pull" if repository else "registry:catalog:*")
        headers = dict(kwargs.pop("headers", {}))
        authed = False
        attempt = 0
        while True:
            hdrs = {**headers, **self._auth_header(scope)}
            auth = self._creds if self._basic else None
            self.requests.add(op)
            try:
                resp = self.session.request(
                    method, url, headers=hdrs, auth=auth, timeout=self.timeout, **kwargs
                )
            except requests.RequestException as exc:
                if attempt < self.retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                raise self.error(
                    f"{method} {path}: cannot reach {self.url}: {type(exc).__name__}", repository
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
                raise self.error(f"{method} {path}: unauthorized (no usable credentials)", repository)
            if resp.status_code in RETRY_STATUS and attempt < self.retries:
                self._sleep(attempt, resp.headers.get("Retry-After"))
                attempt += 1
                continue
            if resp.status_code not in ok:
                raise self.error(f"{method} {path}: HTTP {resp.status_code} {_api_error(resp)}", repository)
            return resp

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))

    def _pages(self, path: str, op: str, key: str, repository: str | None = None) -> list[str]:
        items: list[str] = []
        next_url: str | None = f"{path}?n={self.page_size}"
        while next_url:
            resp = self.request("GET", next_url, op, repository=repository)
            items.extend(resp.json().get(key) or [])
            link = resp.links.get("next", {}).get("url")
            next_url = urljoin(self.url + "/", link) if link else None
        return items

    # -- listing ---------------------------------------------------------------------------
    def list_repositories(self) -> list[str]:
        return sorted(self._pages("/v2/_catalog", "catalog", "repositories"))

    def list_tags(self, repository: str) -> list[str]:
        try:
            return sorted(self._pages(f"/v2/{repository}/tags/list", "tags_list", "tags", repository))
        except RegistryError as exc:
            if "HTTP 404" in exc.problem:
                return []
            raise

    def list_images(self, repository: str) -> list[dict[str, Any]]:
        tags = self.list_tags(repository)
        manifests: dict[str, Manifest] = {}
        tags_of: dict[str, list[str]] = {}
        with ThreadPoolExecutor(self.concurrency) as pool:
            for tag, m in zip(tags, pool.map(lambda t: self.get_manifest(repository, t), tags), strict=False):
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
                pending = list(pool.map(lambda d: self.get_manifest(repository, d), wanted))
                manifests.update((m.digest, m) for m in pending)
            pending = self._referrers(repository, manifests, pool)
            while pending:
                manifests.update((m.digest, m) for m in pending)
                pending = self._referrers(repository, {m.digest: m for m in pending}, pool)
            configs = self._configs(repository, manifests.values(), pool)
        records = [
            self._record(repository, m, sorted(tags_of.get(d, [])), platforms.get(d), configs)
            for d, m in manifests.items()
        ]
        link_graph(records, children)
        index_size(records)
        _index_created(records)
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
        return list(pool.map(lambda d: self.get_manifest(repository, d), sorted(new)))

    def _has_referrers_api(self, repository: str, digest: str) -> bool:
        if self._referrers_api is None:
            try:
                self.referrers(repository, digest)
                self._referrers_api = True
            except RegistryError as exc:
                if "HTTP 404" not in exc.problem and "HTTP 405" not in exc.problem:
                    raise
                self._referrers_api = False
        return self._referrers_api

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        resp = self.request("GET", f"/v2/{repository}/referrers/{digest}", "referrers", repository=repository)
        return resp.json().get("manifests", [])

    def _configs(
        self, repository: str, manifests: Any, pool: ThreadPoolExecutor
    ) -> dict[str, dict[str, Any]]:
        if not self.read_configs:
            return {}
        wanted = sorted(
            {
                m.body["config"]["digest"]
                for m in manifests
                if m.media_type not in INDEX_TYPES
                and m.body.get("config", {}).get("mediaType") in IMAGE_CONFIG_TYPES
                and m.body["config"].get("size", 0) > 2
            }
        )
        blobs = pool.map(lambda d: self.get_blob(repository, d), wanted)
        out: dict[str, dict[str, Any]] = {}
        for digest, blob in zip(wanted, blobs, strict=False):
            try:
                out[digest] = json.loads(blob)
            except ValueError:
                raise self.error(f"config blob {digest} is not valid JSON", repository) from None
        return out

    def _record(
        self,
        repository: str,
        m: Manifest,
        tags: list[str],
        platform: str | None,
        configs: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        body = m.body
        subject = (body.get("subject") or {}).get("digest") or referrer_subject(tags)
        config = body.get("config") or {}
        layers = body.get("layers") or []
        is_index = m.media_type in INDEX_TYPES
        cfg = configs.get(config.get("digest", ""), {})
        kind = classify(m.media_type, subject, tags)
        artifact = body.get("artifactType")
        if not artifact and kind == "referrer" and config.get("mediaType") not in IMAGE_CONFIG_TYPES:
            artifact = config.get("mediaType")
        return {
            "registry_kind": self.kind,
            "repository": repository,
            "digest": m.digest,
            "tags": tags,
            "kind": kind,
            "media_type": m.media_type,
            "artifact_type": artifact,
            "size_bytes": None
            if is_index
            else int(config.get("size", 0)) + sum(int(x.get("size", 0)) for x in layers),
            "pushed_at": None,
            "created_at": _parse_time(cfg.get("created")),
            "last_pulled_at": None,
            "platform": platform or (platform_of(cfg) if kind == "image" else None),
            "subject_digest": subject,
            "config_digest": config.get("digest"),
            "layer_digests": [x["digest"] for x in layers] if not is_index else None,
        }

    # -- manifests and blobs ---------------------------------------------------------------
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
            )
        if reference.startswith("sha256:") and reference != digest:
            raise self.error(f"manifest {reference}: bytes hash to {digest}", repository)
        try:
            json.loads(raw)
        except ValueError:
            raise self.error(f"manifest {reference} is not valid JSON", repository) from None
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media not in ACCEPT_ALL:
            media = media_type_of(raw)
        manifest = Manifest(digest, media, raw)
        return manifest

    def head_manifest(self, repository: str, reference: str) -> str | None:
        """Digest of a tag or digest, or None when it does not exist."""
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            "manifest_head",
            repository=repository,
            ok=(200, 404),
            headers={"Accept": ", ".join(ACCEPT_ALL)},
        )
        return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None

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

    def delete_images(self, repository: str, digests: list[str]) -> DeleteResult:
        result = DeleteResult()
        for digest in digests:
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
                result.failures[digest] = exc.problem
                continue
            if resp.status_code == 202:
                result.deleted.append(digest)
            elif resp.status_code == 404:
                result.failures[digest] = "not found (already deleted?)"
            else:
                result.failures[digest] = "deletes are disabled (storage.delete.enabled: false)"
        return result

    def get_blob(self, repository: str, digest: str) -> bytes:
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", "blob_get", repository=repository)
        if digest_of(resp.content) != digest:
            raise self.error(f"blob {digest}: content does not match its digest", repository)
        return resp.content

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", "blob_head", repository=repository, ok=(200, 404)
        )
        return resp.status_code == 200

    def upload_blob(self, repository: str, data: bytes, mount_from: str | None = None) -> str:
        """Monolithic upload (POST then PUT with the digest); skipped when the blob exists.

        With ``mount_from`` (a repository known to hold the blob) the registry is first asked
        to mount it across repositories, which moves no bytes; it falls back to an upload.
        """
        digest = digest_of(data)
        scope = f"repository:{repository}:pull,push"
        if self.blob_exists(repository, digest):
            return digest
        query = f"?mount={quote(digest)}&from={quote(mount_from)}" if mount_from else ""
        start = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/{query}",
            "blob_upload",
            repository=repository,
            scope=scope,
            ok=(201, 202),
        )
        if start.status_code == 201:  # mounted
            return digest
        location = urljoin(self.url + "/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{sep}digest={quote(digest)}",
            "blob_upload",
            repository=repository,
            scope=scope,
            ok=(201,),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest


def _index_created(records: list[dict[str, Any]]) -> None:
    """An index has no config of its own: its build time is its newest child's."""
    created = {r["digest"]: r["created_at"] for r in records if r.get("created_at") is not None}
    for r in records:
        if r["kind"] == "index" and r.get("created_at") is None:
            times = [created[c] for c in r["child_digests"] if c in created]
            r["created_at"] = max(times) if times else None


def _api_error(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
    except ValueError:
        return ""
    return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:300]


def _parse_time(value: Any) -> Any:
    """Image config ``created`` (RFC 3339, Go writes nanoseconds) as a UTC timestamp, or None."""
    if not value:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
