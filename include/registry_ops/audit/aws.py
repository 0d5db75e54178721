"""AWS calls of the audit: counted, and failures named by the IAM permission they need.

An AccessDenied answer (or any 403 that is not about the credentials themselves) to the
audit's own reads means its role lacks a permission: the error names it
(``iam:GetAccountAuthorizationDetails``, ``ecr:GetRepositoryPolicy``) so it can be granted.
For IAM, ECR and STS the permission is the service prefix and the API operation name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"})
# 403 answers that are about the credentials themselves, not a missing permission
REJECTED = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "MissingAuthenticationToken",
    }
)


class AuditError(RuntimeError):
    """A read the audit needs failed; the message names the call and the AWS answer."""


class AuditPermissionError(AuditError):
    """The audit's credentials lack ``permission``."""

    def __init__(self, permission: str, message: str) -> None:
        super().__init__(
            f"the audit's credentials lack {permission} (AWS answered: {message}); grant it to the "
            "audit's role (docs/access-audit.md lists every permission the audit needs)"
        )
        self.permission = permission


class Requests:
    """Requests sent, by ``service:Operation`` (botocore's before-send event per attempt)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-send.{service}.*", self._count)
        return client

    def _count(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.counts[f"{service}:{operation}"] += 1

    def total(self, prefix: str = "") -> int:
        return sum(n for k, n in self.counts.items() if k.startswith(prefix))


def permission(client: Any, operation: str) -> str:
    """``iam:GetAccountAuthorizationDetails`` for the client's ``get_account_authorization_details``."""
    name = client.meta.method_to_api_mapping.get(operation, operation)
    return f"{client.meta.service_model.signing_name}:{name}"


def _failure(client: Any, operation: str, exc: Exception) -> AuditError:
    """The error naming the permission; botocore's text is redacted here, where it enters ours:
    an endpoint's ``user:secret@`` in it would reach every traceback that prints the error."""
    from .report import redact

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in DENIED or (status == 403 and code not in REJECTED):
            return AuditPermissionError(permission(client, operation), f"{code}: {err.get('Message', '')}")
        detail = f"{code}: {err.get('Message', exc)}"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return AuditError(redact(f"{permission(client, operation)} failed: {detail}"))


def call(client: Any, operation: str, absent: Collection[str] = (), **kwargs: Any) -> dict[str, Any] | None:
    """The operation's answer; None when AWS answers with a code in ``absent``."""
    try:
        return getattr(client, operation)(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in absent:
            return None
        raise _failure(client, operation, exc) from None
    except BotoCoreError as exc:
        raise _failure(client, operation, exc) from None


def pages(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every page of a paginated operation, errors as :func:`call`'s."""
    it = iter(client.get_paginator(operation).paginate(**kwargs))
    while True:
        try:
            page = next(it)
        except StopIteration:
            return
        except (ClientError, BotoCoreError) as exc:
            raise _failure(client, operation, exc) from None
        yield page
