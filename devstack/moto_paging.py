"""Test-only shim: make moto's ECR listing calls page like AWS.

moto 5 ignores ``maxResults`` on ``describe_repositories``, ``describe_images`` and
``list_images`` and never returns ``nextToken``, so paging code would go untested and request
counts would look better than AWS allows. AWS pages at 100 by default and accepts 1 to 1,000;
this shim applies exactly that (only when no explicit id list is given, as AWS does).
"""

from __future__ import annotations

import base64
from typing import Any

_PATCHED = False
LISTS = {
    "describe_repositories": ("repositories", "repositoryNames"),
    "describe_images": ("imageDetails", "imageIds"),
    "list_images": ("imageIds", None),
}


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    return int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])


def _paged(original: Any, key: str, ids_param: str | None) -> Any:
    def method(self: Any) -> Any:
        from moto.core.responses import ActionResult
        from moto.ecr.exceptions import InvalidParameterException

        result = original(self)
        if ids_param and self._get_param(ids_param):
            return result
        max_results = self._get_param("maxResults")
        size = int(max_results) if max_results is not None else 100
        if not 1 <= size <= 1000:
            raise InvalidParameterException(
                f"Invalid parameter at 'maxResults' failed to satisfy constraint: '{size}'"
            )
        items = list(result.result[key])
        start = _offset(self._get_param("nextToken"))
        body = {**result.result, key: items[start : start + size]}
        if start + size < len(items):
            body["nextToken"] = _token(start + size)
        return ActionResult(body)

    return method


def enable_aws_paging() -> None:
    """Patch moto's ECR responses in this process (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.ecr.responses import ECRResponse

    for name, (key, ids_param) in LISTS.items():
        setattr(ECRResponse, name, _paged(getattr(ECRResponse, name), key, ids_param))
    _PATCHED = True
