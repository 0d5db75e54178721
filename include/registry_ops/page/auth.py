"""Who may read the Registry page: a signed-in Airflow user, checked with Airflow's own token.

Airflow does not protect plugin endpoints: a FastAPI app in ``fastapi_apps`` answers anyone who
can reach the API server. So every route of the page depends on ``signed_in``: the JWT Airflow's
UI keeps in its ``_token`` cookie (sent with the iframe's requests, same origin), or an
``Authorization: Bearer`` token as the REST API takes, validated by the configured auth
manager (signature, expiry, revocation). Anything else is 401; the token is never logged and
never echoed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status

log = logging.getLogger(__name__)
COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN


@dataclass(frozen=True)
class Viewer:
    """The signed-in user and the token that proved it (forwarded to Airflow's REST API for the
    Health section and the restore form, so the user sees there only what Airflow lets them)."""

    name: str
    token: str

    def __repr__(self) -> str:  # never the token, in a log line or a traceback
        return f"Viewer(name={self.name!r})"


def token_of(request: Request) -> str | None:
    """The bearer token when one is sent (it wins, as in Airflow), else the session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import create_auth_manager, get_auth_manager

    try:
        return get_auth_manager()
    except RuntimeError:  # not initialised: a process that is not the API server (tests, bench)
        manager = create_auth_manager()
        manager.init()
        return manager


async def signed_in(request: Request) -> Viewer:
    """FastAPI dependency: the signed-in Airflow user, or 401."""
    token = token_of(request)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in to Airflow to see the Registry page")
    from jwt.exceptions import InvalidTokenError

    try:
        user = await _auth_manager().get_user_from_token(token)
    except (InvalidTokenError, HTTPException) as exc:  # expired, bad signature, revoked, malformed
        log.info("registry page: refused a token (%s)", type(exc).__name__)
        detail = "your Airflow session is not valid: sign in again"
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail) from None
    except Exception as exc:  # the check itself failed (metadata DB down): refuse, and say so
        log.warning("registry page: cannot check a session token: %s", type(exc).__name__)
        detail = f"cannot check your Airflow session right now ({type(exc).__name__}); try again"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None
    return Viewer(name=str(user.get_name()), token=token)
