"""Test-only shim: make moto's GetAccountAuthorizationDetails page like AWS.

moto 5 answers every call with everything and ``IsTruncated: false``, ignoring ``MaxItems``
and ``Marker``, so paging code would go untested and a request count would look better than
AWS allows. AWS defaults to 100 items and accepts up to 1,000 per call; it does not document how
the four lists share a page. This shim counts every user, group, role and managed policy as one
item of one sequence (users, then groups, roles, policies) and cuts it at ``MaxItems``.
"""

from __future__ import annotations

import base64
from typing import Any

LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")
_PATCHED = False


def _marker(offset: int) -> str:
    return base64.urlsafe_b64encode(f"gaad:{offset}".encode()).decode()


def _offset(marker: str | None) -> int:
    return int(base64.urlsafe_b64decode(marker.encode()).decode().split(":", 1)[1]) if marker else 0


def enable_gaad_paging() -> None:
    """Patch moto's IAM response in this process (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.core.responses import ActionResult
    from moto.iam.responses import IamResponse

    original = IamResponse.get_account_authorization_details

    def paged(self: Any) -> Any:
        result = original(self).result
        size = int(self._get_param("MaxItems") or 100)
        start = _offset(self._get_param("Marker"))
        items = [(key, item) for key in LISTS for item in result[key]]
        page = items[start : start + size]
        body: dict[str, Any] = {key: [item for k, item in page if k == key] for key in LISTS}
        body["IsTruncated"] = start + size < len(items)
        if body["IsTruncated"]:
            body["Marker"] = _marker(start + size)
        return ActionResult(body)

    IamResponse.get_account_authorization_details = paged
    _PATCHED = True
