"""The Registry page's FastAPI app, mounted by ``plugins/registry_page`` inside Airflow's API
server (``fastapi_apps``) and shown in Airflow's nav as an iframe (``external_views``).

Routes (all read-only, all behind ``auth.signed_in``: 401 without a valid Airflow session):

* ``GET /``                          the page (HTML with its CSS and script inlined);
* ``GET /restore?digest=…``          the ``registry_restore`` trigger form, filled in;
* ``GET /api/sections``              the sections and their JSON paths;
* ``GET /api/sections/{id}``         one section (``model.Section``) read from S3;
* ``GET /api/retention/deleted?q=``  the deleted-image search;
* ``GET /api/health``                our DAGs' state from Airflow's REST API (viewer's token).

The one other route is for registries, not people: ``POST /api/events/{registry}`` takes a
distribution registry's notification envelope with a bearer token (``events/receiver.py``).

Sections are read in a worker thread each (boto3 blocks) and never fail the request: a loader
that raises becomes an error section naming the problem (``model.guard``). The config is read
again when its file changes; a broken config shows in every section, the page still loads.
"""

from __future__ import annotations

import asyncio
import html
import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from ..events.receiver import Receiver
from . import health
from .auth import Viewer, signed_in
from .context import Memo, PageContext
from .model import Section, guard

log = logging.getLogger(__name__)
PREFIX = "/registry-page"
STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True)
class SectionSpec:
    id: str
    title: str
    module: str  # ``include.registry_ops.page.<module>``, imported on first use


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("fleet", "Fleet", "fleet"),
    SectionSpec("vulns", "Vulnerabilities", "vulns"),
    SectionSpec("retention", "Retention", "retention"),
    SectionSpec("backups", "Backups and drills", "backups"),
    SectionSpec("slo", "SLOs", "slo"),
    SectionSpec("audit", "Access audit", "audit"),
    SectionSpec("reports", "Reports", "reports"),
)
BY_ID = {s.id: s for s in SECTIONS}
SignedIn = Annotated[Viewer, Depends(signed_in)]


class ConfigSource:
    """The validated config, read again only when the file's mtime changes."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._seen: tuple[str, float] | None = None
        self._config: Any = None

    def __call__(self) -> Any:
        from ..config import config_path, load_config

        file = config_path(self.path)
        try:
            stamp = (str(file), file.stat().st_mtime)
        except OSError:
            stamp = (str(file), -1.0)
        if stamp != self._seen:
            self._config = load_config(file)  # ConfigError names the file and the problem
            self._seen = stamp
        return self._config


def _default_s3(config: Any) -> Any:
    from ..clients import s3_client

    return s3_client(config)


def _airflow_base() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")


def listing() -> list[dict[str, str]]:
    """Every section the page shows and the path of its JSON (Health last: it asks Airflow)."""
    listed = [{"id": s.id, "title": s.title, "path": f"api/sections/{s.id}"} for s in SECTIONS]
    return [*listed, {"id": health.SECTION, "title": health.TITLE, "path": "api/health"}]


def _page(template: str, request: Request, extra: dict[str, Any] | None = None) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")  # where Airflow mounted us (+ its base path)
    airflow_root = root[: -len(PREFIX)] if root.endswith(PREFIX) else ""
    boot = {"base": root + "/", "airflow": airflow_root, "sections": listing(), **(extra or {})}
    # ``</`` cannot end the script element from inside the JSON (S3 content never goes here, but
    # the mount path might be odd)
    boot_js = json.dumps(boot).replace("</", "<\\/")
    body = (
        (STATIC / template)
        .read_text(encoding="utf-8")
        .replace("/*CSS*/", (STATIC / "page.css").read_text(encoding="utf-8"))
        .replace("/*BOOT*/", f"window.REGISTRY_PAGE = {boot_js};")
        .replace("/*SCRIPT*/", (STATIC / template.replace(".html", ".js")).read_text(encoding="utf-8"))
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def create_app(
    config_source: Callable[[], Any] | None = None,
    s3_factory: Callable[[Any], Any] = _default_s3,
    airflow_base: Callable[[], str] = _airflow_base,
    airflow_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_stored: Callable[[str, dict[str, Any]], None] | None = None,
) -> FastAPI:
    """The page's app. Tests pass their own config source, S3 client factory and a transport to
    an in-process Airflow API; the plugin takes the defaults (the config file of
    ``REGISTRY_OPS_CONFIG``, the storage connection's client, ``[api] base_url``).
    ``on_stored(registry, envelope)``: called for each notification envelope once it is stored."""
    app = FastAPI(title="Registry page", docs_url=None, redoc_url=None, openapi_url=None)
    config_of = config_source or ConfigSource(os.environ.get("REGISTRY_OPS_CONFIG"))
    memo = Memo()
    app.state.memo = memo

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Any:
        """A person opening the page signed out gets a link to sign in; scripts get JSON."""
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_html:
            root = request.scope.get("root_path", "").rstrip("/")
            airflow_root = root[: -len(PREFIX)] if root.endswith(PREFIX) else ""
            login = f"{airflow_root}/auth/login?next={quote(root + '/', safe='')}"
            body = (
                "<!doctype html><title>Sign in</title><p>The Registry page is for signed-in Airflow users. "
                f'<a href="{html.escape(login)}" target="_top">Sign in to Airflow</a>, then open it again.'
                "</p>"
            )
            return HTMLResponse(body, status_code=401)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def context() -> PageContext:
        config = config_of()
        return PageContext(config=config, s3=s3_factory(config), now=clock(), memo=memo)

    def section(spec: SectionSpec) -> dict[str, Any]:
        started = time.perf_counter()

        def load() -> Section:
            module = importlib.import_module(f"{__package__}.{spec.module}")
            return module.load(context())

        result = guard(spec.id, spec.title, load).to_json()
        log.debug("registry page: %s in %.0f ms", spec.id, (time.perf_counter() - started) * 1000)
        return result

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, _viewer: SignedIn) -> HTMLResponse:
        return _page("index.html", request)

    @app.get("/restore", response_class=HTMLResponse)
    def restore_form(request: Request, _viewer: SignedIn) -> HTMLResponse:
        return _page("restore.html", request)

    @app.get("/api/sections")
    def sections(_viewer: SignedIn) -> list[dict[str, str]]:
        return listing()

    @app.get("/api/sections/{section_id}")
    async def one_section(section_id: str, _viewer: SignedIn) -> JSONResponse:
        spec = BY_ID.get(section_id)
        if spec is None:
            known = ", ".join([*BY_ID, "health"])
            raise HTTPException(404, f"no section {section_id!r}; the sections are {known}")
        return JSONResponse(await asyncio.to_thread(section, spec))

    @app.get("/api/retention/deleted")
    async def deleted(
        _viewer: SignedIn,
        q: Annotated[str, Query(max_length=200)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JSONResponse:
        def search() -> dict[str, Any]:
            from dataclasses import asdict

            from .model import jsonable
            from .retention import search_deleted

            return jsonable(asdict(search_deleted(context(), q, limit=limit, offset=offset)))

        try:
            return JSONResponse(await asyncio.to_thread(search))
        except Exception as exc:  # shown by the page next to the search box, never a 500
            log.warning("registry page: deleted-image search failed: %s", exc)
            return JSONResponse({"detail": f"{type(exc).__name__}: {exc}"}, status_code=502)

    @app.get("/api/health")
    async def health_section(viewer: SignedIn) -> JSONResponse:
        async def load() -> Section:
            async with httpx.AsyncClient(
                base_url=airflow_base(),
                transport=airflow_transport,
                headers={"Authorization": f"Bearer {viewer.token}"},
                timeout=10,
                trust_env=False,
            ) as client:
                return await health.load(client, clock())

        try:
            result = await load()
        except Exception as exc:  # Airflow's API down or refusing: the section says so
            log.warning("registry page: health failed: %s", exc)
            message = f"{type(exc).__name__}: {exc}"
            result = Section(health.SECTION, health.TITLE, status="error", message=message)
        return JSONResponse(result.to_json())

    receiver = Receiver(config_of, s3_factory, clock, on_stored)

    @app.post("/api/events/{registry}")
    async def registry_events(registry: str, request: Request) -> JSONResponse:
        """A registry's notification envelope: bearer token, not a session (events/receiver.py)."""
        peer = request.client.host if request.client else "?"
        answer = await receiver.receive(registry, request.headers, request.stream(), peer)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    return app
