"""The one set of credential patterns (``redact.py``) and every writer that uses it: a form one
of them masks is masked by all (the page, the audit report, the failure notice)."""

from __future__ import annotations

import pytest

from include.registry_ops import redact
from include.registry_ops.audit.report import redact as audit_redact
from include.registry_ops.notify.failure import mask
from include.registry_ops.page.model import redact as page_redact

CASES = [
    (
        "GET https://ops:s3cr3t-PW@registry.example.com/v2/ failed",
        "s3cr3t-PW",
        "https://***@registry.example.com",
    ),
    ("clone oci://ghp_TOKENONLY123@host/repo", "ghp_TOKENONLY123", "oci://***@host"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9", "Bearer ***"),
    ("header Basic dXNlcjpwYXNzd29yZA== refused", "dXNlcjpwYXNzd29yZA", "Basic ***"),
    ("connect(host=db, password=hunter2, port=5432)", "hunter2", "password=***"),
    ('{"secret_key": "wJalrXUtnFEMI/K7MDENG", "region": "eu"}', "wJalrXUtnFEMI", '"secret_key": "***"'),
    ("token: abc.def.ghi expired", "abc.def.ghi", "token: ***"),
    ("client_secret=Zx9-k", "Zx9-k", "client_secret=***"),
    (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAEXAMPLE%2F20261129&X-Amz-Signature=9f86d08&X-Amz-Security-Token=FQoG",
        ("AKIAEXAMPLE", "9f86d08", "FQoG"),
        "X-Amz-Signature=***",
    ),
    ("api-key=k-123456 pwd=pw1", ("k-123456", "pw1"), "api-key=***"),
]


@pytest.mark.parametrize(
    "writer", [redact.text, page_redact, audit_redact, mask], ids=["redact", "page", "audit", "notice"]
)
@pytest.mark.parametrize(("text", "secret", "shown"), CASES)
def test_every_writer_masks_every_form(writer, text, secret, shown):
    out = writer(text)
    for s in (secret,) if isinstance(secret, str) else secret:
        assert s not in out, out
    assert shown in out, out


def test_what_is_not_a_credential_stays():
    text = "repository team/api (403 Forbidden) at https://registry.example.com:5000/v2/; tokens left: 3"
    assert redact.text(text) == text
    assert page_redact(None) is None and page_redact(42) == 42  # the page passes values through


def test_a_secret_known_by_value_is_masked_by_the_notice():
    assert mask("login failed for p4ss alone", ["p4ss"]) == "login failed for *** alone"
