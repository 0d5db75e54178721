"""Credentials out of text copied from errors (a registry's, S3's, botocore's, an SMTP server's)
before it reaches a log line, an email, a report or the Registry page: the one set of patterns
every writer uses, so a form one of them masks is masked by all.

What it recognises:

* URL user-info, with or without a password (``https://user:secret@host``, ``https://token@host``);
* ``Bearer ...`` and ``Basic ...`` credentials;
* ``key=value`` and ``key: value`` (also quoted, as in JSON) for keys that name a credential:
  password, passwd, pwd, secret, token (``X-Amz-Security-Token``), api key, access key, secret
  key, private key, client secret, authorization, and a presigned URL's ``X-Amz-Signature`` and
  ``X-Amz-Credential``.

Secrets known by value (a connection's password) are for the caller to replace too: patterns
cannot see a password printed alone.
"""

from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY_VALUE = re.compile(
    r"""(?ix)
    ( (?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key
       |client[_-]?secret|authorization|x-amz-signature|x-amz-credential)
      ["']?\s*[=:]\s*["']? )
    ( (?!\*\*\*|bearer\s|basic\s)[^\s"',;}&]+ )
    """
)


def text(value: str) -> str:
    """``value`` with every credential the patterns above recognise replaced by ``***``."""
    value = _USERINFO.sub(rf"\1{MASK}@", value)
    value = _BEARER.sub(rf"\1 {MASK}", value)
    return _KEY_VALUE.sub(rf"\1{MASK}", value)
