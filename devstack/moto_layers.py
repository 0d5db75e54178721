"""Test-only shim: answer ECR's ``GetDownloadUrlForLayer`` on moto, with the bytes uploaded.

What AWS does: ``GetDownloadUrlForLayer(repositoryName, layerDigest)`` answers a pre-signed
URL (S3, valid for about an hour) from which the layer's bytes are read with a plain GET; it
answers ``LayersNotFoundException`` for a digest the repository does not hold and
``RepositoryNotFoundException`` for an unknown repository.

What moto 5 lacks: the call raises ``NotImplementedError`` (HTTP 500), and moto does not keep
layer bytes: ``CompleteLayerUpload`` records only the digest and size
(``Repository.layers``) and drops the parts it received.

What this shim does, in this process only (moto runs in-process, see ``services.MotoService``):

- wraps moto's ``CompleteLayerUpload`` to keep the bytes it assembled, on moto's own
  ``Repository`` object (``layer_blobs``), so a moto reset or a repository delete drops them
  exactly as it drops the layer;
- answers ``GetDownloadUrlForLayer`` with a URL on :class:`LayerServer`, a tiny HTTP server on
  127.0.0.1 started with moto, which serves those bytes (404 once they are gone), or raises the
  two errors above like AWS.

Other gaps of moto 5 that the adapter meets, documented here and not faked: ``CompleteLayerUpload``
neither compares the digest sent with the bytes (AWS: ``InvalidLayerException``) nor refuses a
layer the repository already has (``LayerAlreadyExistsException``); ``PutImage`` does not check
that the layers exist (``LayersNotFoundException``) nor record ``subjectManifestDigest`` and
``artifactMediaType`` from the manifest; ``ListImageReferrers`` is missing. The adapter checks
digests itself before and after an upload, so the tests of those checks do not lean on moto.

Images seeded straight into moto's backend (``seed.seed_ecr``) have their layers recorded the
same way (``Repository.layers`` and ``layer_blobs``) unless seeded with ``layers=False``; then they
answer ``LayersNotFoundException``, as a layer an image does not hold would on AWS. It is
test-only because it patches moto's classes and serves bytes without signing; production code
talks to AWS, whose pre-signed URLs need nothing from us.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

_PATCHED = False
_SERVER: LayerServer | None = None
_LOCK = threading.Lock()


def _layers_not_found(registry_id: str, repository: str, digest: str) -> Exception:
    from moto.ecr.exceptions import ServiceException

    class LayersNotFoundException(ServiceException):
        code = "LayersNotFoundException"

    return LayersNotFoundException(
        f"The image with digest {digest} does not exist within the repository with name '{repository}' "
        f"in the registry with id '{registry_id}'"
    )


def _backend(account: str, region: str) -> Any:
    from moto.ecr.models import ecr_backends

    return ecr_backends[account][region]


def enable_layer_downloads() -> None:
    """Patch moto's ECR in this process (idempotent): keep uploaded bytes, answer the URL call."""
    global _PATCHED
    with _LOCK:
        if _PATCHED:
            return
        from moto.core.responses import ActionResult
        from moto.ecr.models import ECRBackend
        from moto.ecr.responses import ECRResponse

        original_complete = ECRBackend.complete_layer_upload

        def complete_layer_upload(
            self: Any, repository_name: str, upload_id: str, *args: Any, **kw: Any
        ) -> Any:
            repository = self._get_repository(repository_name, kw.get("registry_id"))
            upload = repository.uploads.get(upload_id)
            data = bytes(upload.layer_parts) if upload is not None else None
            result = original_complete(self, repository_name, upload_id, *args, **kw)
            if data is not None:
                if not hasattr(repository, "layer_blobs"):
                    repository.layer_blobs = {}
                repository.layer_blobs[result["layerDigest"]] = data
            return result

        def get_download_url_for_layer(self: Any) -> Any:
            name = self._get_param("repositoryName")
            digest = self._get_param("layerDigest")
            repository = self.ecr_backend._get_repository(name, self._get_param("registryId"))
            if digest not in getattr(repository, "layer_blobs", {}):
                raise _layers_not_found(repository.registry_id, name, digest)
            if _SERVER is None:
                raise RuntimeError("moto_layers: the layer server is not running (MotoService.start)")
            url = _SERVER.url_for(self.current_account, self.region, name, digest)
            return ActionResult({"downloadUrl": url, "layerDigest": digest})

        ECRBackend.complete_layer_upload = complete_layer_upload
        ECRResponse.get_download_url_for_layer = get_download_url_for_layer
        _PATCHED = True


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/")]
        data = None
        if len(parts) >= 5 and parts[0] == "layers":
            account, region, digest = parts[1], parts[2], parts[-1]
            name = "/".join(parts[3:-1])
            try:
                repository = _backend(account, region).repositories.get(name)
            except KeyError:
                repository = None
            data = getattr(repository, "layer_blobs", {}).get(digest) if repository else None
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:  # quiet, like werkzeug's access log
        return


class LayerServer:
    """The stand-in for S3 behind pre-signed layer URLs, on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    def url_for(self, account: str, region: str, repository: str, digest: str) -> str:
        return f"{self.url}/layers/{account}/{region}/{quote(repository, safe='/')}/{quote(digest)}"

    def start(self) -> LayerServer:
        global _SERVER
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, name="moto-layers", daemon=True).start()
        _SERVER = self
        return self

    def stop(self) -> None:
        global _SERVER
        if _SERVER is self:
            _SERVER = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
