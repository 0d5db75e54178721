"""Airflow's REST API (``/api/v2``) for code that has no ORM access (tasks, the page's receiver).

One client for every caller: the HTTP connection ``notifications.airflow_api_conn_id`` (default
``airflow_api``: host = the API server's base URL, login and password of an Airflow user) buys a
JWT from ``POST /auth/token``; a 401 on a call with a cached token buys a fresh one once (a
long-lived process outlives its token). Every failure is an :class:`ApiError` naming the
connection, the URL and the call, with the password and token masked.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .notify.failure import mask

TIMEOUT = 30


class ApiError(RuntimeError):
    """Airflow's API did not answer as expected; names the connection and the call, never a secret."""


class AirflowClient:
    """REST calls on an httpx-compatible client (``base_url`` set)."""

    def __init__(self, http: Any, username: str, password: str, where: str = "Airflow API") -> None:
        self.http, self.where = http, where
        self._login = (username, password)
        self._token: str | None = None

    def _masked(self, text: str) -> str:
        return mask(text, [self._login[1], self._token])

    def _fail(self, call: str, resp: Any) -> ApiError:
        text = self._masked(str(getattr(resp, "text", ""))[:200].strip())
        return ApiError(f"{self.where}: {call}: HTTP {resp.status_code} {text}".rstrip())

    def _send(self, method: str, path: str, call: str, **kwargs: Any) -> Any:
        """One request; a transport failure (refused, timed out) is an ApiError too."""
        import httpx

        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            problem = self._masked(f"{type(exc).__name__}: {exc}")
            raise ApiError(f"{self.where}: {call}: {problem}") from None

    def token(self) -> str:
        if self._token is None:
            username, password = self._login
            call = f"POST /auth/token as {username!r}"
            resp = self._send("POST", "/auth/token", call, json={"username": username, "password": password})
            if resp.status_code not in (200, 201):
                raise self._fail(call, resp)
            self._token = resp.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """``method path`` with the bearer token; the JSON answer, or ApiError."""
        call = f"{method} {path}"
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}"}
            resp = self._send(method, path, call, headers=headers, **kwargs)
            if resp.status_code == 401 and attempt == 1:
                self._token = None  # expired: one fresh token, then the answer stands
                continue
            if resp.status_code not in ok:
                raise self._fail(call, resp)
            return resp.json()
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, ok=(200, 201), json=body)

    def asset_id(self, name: str, uri: str) -> int:
        """The id of the asset ``name`` (with ``uri``): it exists once a DAG using it is parsed."""
        data = self.get("/api/v2/assets", name_pattern=name, limit=100)
        found = [a for a in data.get("assets", []) if a.get("name") == name and a.get("uri") == uri]
        if not found:
            raise ApiError(
                f"{self.where}: GET /api/v2/assets: no asset {name!r} ({uri}); Airflow knows it once "
                "a DAG that uses it (registry_scan) has been parsed"
            )
        return int(found[0]["id"])

    def create_asset_event(self, asset_id: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Record an asset event (``POST /api/v2/assets/events``): DAGs scheduled on it run."""
        return self.post("/api/v2/assets/events", {"asset_id": asset_id, "extra": extra})


C = TypeVar("C", bound=AirflowClient)


def connect(conn_id: str, cls: type[C] = AirflowClient) -> C:  # type: ignore[assignment]
    """A client for the HTTP connection ``conn_id``: host (``http://api:8080`` or a bare host with
    schema and port), login, password."""
    import httpx

    from .clients import get_connection

    conn = get_connection(conn_id)
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ApiError(f"connection {conn_id!r}: no host (the Airflow API server's base URL)")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
    if not conn.login or not conn.password:
        raise ApiError(f"connection {conn_id!r}: login and password of an Airflow user are needed")
    http = httpx.Client(base_url=host, timeout=TIMEOUT)
    return cls(http, conn.login, conn.password, f"Airflow API connection {conn_id!r} ({mask(host)})")
