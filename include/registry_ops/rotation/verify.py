"""Proving a credential works, against the very endpoint the deployment uses.

An access key is proven by ``sts:GetCallerIdentity`` signed with it (no permission needed,
AWS answers for any valid key) at the STS endpoint of the rotation's own connection, and the
answer must name the account's IAM user. AWS takes a few seconds to accept a new key, so a
rejection is retried until ``timeout``. A registry password is proven by an authenticated
``GET /v2/`` (200), retried the same way (the registry rereads its htpasswd file when the
file's modification time changes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from .common import RotationError, Secret

# answers meaning "this key is not (yet) accepted", as opposed to "cannot ask"
REJECTED = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
    }
)

Identity = Callable[[str, Secret], str]  # (access key id, secret) -> the ARN AWS answers


def sts_identity(sts: Any) -> Identity:
    """``GetCallerIdentity`` with the given key, at the endpoint and region of ``sts`` (the
    rotation's own STS client, built from its Airflow connection)."""
    import boto3
    from botocore.config import Config as BotoConfig

    endpoint, region = sts.meta.endpoint_url, sts.meta.region_name

    def identity(key_id: str, secret: Secret) -> str:
        client = boto3.session.Session().client(
            "sts",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret.reveal(),
            region_name=region,
            endpoint_url=endpoint,
            config=BotoConfig(retries={"mode": "standard", "max_attempts": 3}),
        )
        return str(client.get_caller_identity()["Arn"])

    return identity


def key_works(
    identity: Identity,
    key_id: str,
    secret: Secret,
    expected_arn: str,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """(True, "") when AWS answers for ``key_id`` as ``expected_arn``; else (False, why) once
    ``timeout`` seconds of rejections have passed (0: one attempt). A failure to ask at all
    (network, endpoint) raises: it says nothing about the key."""
    deadline = time.monotonic() + timeout
    delay = 1.0
    while True:
        try:
            arn = identity(key_id, secret)
            if arn == expected_arn:
                return True, ""
            why = f"AWS answers for it as {arn}, not {expected_arn}"
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if err.get("Code") not in REJECTED:
                raise RotationError(
                    f"cannot prove key {key_id}: GetCallerIdentity failed ({err.get('Code')}: "
                    f"{err.get('Message')})"
                ) from None
            why = f"AWS rejects it ({err.get('Code')})"
        except BotoCoreError as exc:
            why = type(exc).__name__
            raise RotationError(f"cannot prove key {key_id}: STS unreachable ({why})") from None
        if time.monotonic() + delay > deadline:
            return False, why
        sleep(delay)
        delay = min(delay * 2, 10.0)


def basic_auth_works(
    url: str,
    user: str,
    password: Secret,
    timeout: float,
    verify_tls: bool | str = True,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """(True, "") when ``GET {url}/v2/`` with ``user`` and ``password`` answers 200; (False, why)
    after ``timeout`` seconds of 401s. Any other answer, or no answer, raises."""
    deadline = time.monotonic() + timeout
    delay = 0.5
    target = url.rstrip("/") + "/v2/"
    while True:
        try:
            answer = requests.get(target, auth=(user, password.reveal()), timeout=10, verify=verify_tls)
        except requests.RequestException as exc:
            why = f"{target} unreachable ({exc})"
            raise RotationError(f"cannot prove the password of {user!r}: {why}") from None
        if answer.status_code == 200:
            return True, ""
        if answer.status_code != 401:
            why = f"{target} answered {answer.status_code}"
            raise RotationError(f"cannot prove the password of {user!r}: {why}")
        why = f"{target} answers 401 to it"
        if time.monotonic() + delay > deadline:
            return False, why
        sleep(delay)
        delay = min(delay * 2, 5.0)
