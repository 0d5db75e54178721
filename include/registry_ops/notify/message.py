"""A message as every capability hands it to the notifier, and its MIME form.

The MIME tree is what common mail clients (Outlook, Gmail, Apple Mail, Thunderbird) render::

    multipart/mixed                  only with attachments
      multipart/alternative          the client shows the richest part it can
        text/plain                   the plain-text body
        multipart/related            only with inline images
          text/html                  references each image as src="cid:<content id>"
          image/png                  Content-ID: <content id>, Content-Disposition: inline
      <attachment>                   Content-Disposition: attachment; filename=...

Built with the stdlib ``email`` package (``EmailMessage``), not the SMTP provider's hook, which
only makes ``multipart/mixed`` with one HTML part and attachments read from files: no text
alternative, no ``multipart/related``, so no inline image could show (see ``smtp.py``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CID = re.compile(r"^[A-Za-z0-9._-]+(@[A-Za-z0-9.-]+)?$")
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")
_CID_REF = re.compile(r"""cid:([^"'\s)>]+)""")


class NotifyError(OSError):
    """Sending failed; the message names the channel's connection and the problem, never a secret.

    An ``OSError`` because delivery is I/O: callers that already treat a failed send as one (the
    scan gate keeps its violations new when the email fails) keep working unchanged."""


@dataclass(frozen=True)
class InlineImage:
    """A PNG shown inside the HTML body where it says ``<img src="cid:{cid}">``."""

    cid: str
    data: bytes
    filename: str | None = None

    def __post_init__(self) -> None:
        if not _CID.match(self.cid):
            raise ValueError(f"inline image content id {self.cid!r}: use letters, digits, '.', '_', '-'")
        if not self.data.startswith(PNG_SIGNATURE):
            raise ValueError(f"inline image {self.cid!r}: not PNG bytes (first bytes {self.data[:8]!r})")


@dataclass(frozen=True)
class Attachment:
    """A file attached to the email (bytes as given, base64 on the wire)."""

    name: str
    data: bytes
    mime_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name:
            raise ValueError(f"attachment name {self.name!r}: a plain file name is needed")
        if not _MIME_TYPE.match(self.mime_type):
            raise ValueError(f"attachment {self.name!r}: MIME type {self.mime_type!r} is not type/subtype")


@dataclass(frozen=True)
class Message:
    """What to say; the notifier decides nothing about the content.

    ``recipients`` empty: the config's ``notifications.recipients``. ``sender`` None: the config's
    ``notifications.sender``, else the SMTP connection's ``from_email``. ``chat_text`` is the
    short form for Slack (default: the subject); ``chat_blocks`` optional Block Kit blocks."""

    subject: str
    text: str
    html: str | None = None
    images: tuple[InlineImage, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    recipients: tuple[str, ...] = ()
    sender: str | None = None
    chat_text: str | None = None
    chat_blocks: tuple[dict, ...] | None = None

    def __post_init__(self) -> None:
        if not self.subject.strip() or "\n" in self.subject or "\r" in self.subject:
            raise ValueError(f"message subject {self.subject!r}: one non-empty line is needed")
        if self.images and not self.html:
            raise ValueError("inline images need an HTML body that references them (cid:...)")
        cids = [i.cid for i in self.images]
        dupes = sorted({c for c in cids if cids.count(c) > 1})
        if dupes:
            raise ValueError(f"inline image content ids repeated: {', '.join(dupes)}")
        referenced = set(_CID_REF.findall(self.html or ""))
        unused, unknown = sorted(set(cids) - referenced), sorted(referenced - set(cids))
        if unused or unknown:
            raise ValueError(
                "HTML and inline images disagree: "
                + "; ".join(
                    p
                    for p in (
                        f"never referenced as cid: {', '.join(unused)}" if unused else "",
                        f"referenced but not attached: {', '.join(unknown)}" if unknown else "",
                    )
                    if p
                )
            )


def to_mime(message: Message, sender: str, recipients: list[str]) -> EmailMessage:
    """The message as MIME (structure in the module docstring), with Date and Message-ID."""
    mime = EmailMessage(policy=policy.SMTP)
    mime["Subject"] = message.subject
    mime["From"] = sender
    mime["To"] = ", ".join(recipients)
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    domain = sender.rsplit("@", 1)[-1].strip("<> ") or None
    mime["Message-ID"] = make_msgid(idstring="registry-ops", domain=domain)
    mime.set_content(message.text, subtype="plain", charset="utf-8")
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html", charset="utf-8")
        html_part = mime.get_payload()[1]
        for image in message.images:
            html_part.add_related(
                image.data,
                maintype="image",
                subtype="png",
                cid=f"<{image.cid}>",
                disposition="inline",
                filename=image.filename or f"{image.cid}.png",
            )
    for att in message.attachments:
        maintype, subtype = att.mime_type.split("/", 1)
        mime.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=att.name)
    return mime


def to_bytes(mime: EmailMessage) -> bytes:
    """The wire form. Bodies are encoded at 78 columns (base64 and quoted-printable need it);
    ASCII headers are not folded unless longer than 998 (RFC 5322's limit; 78 is a SHOULD), so a
    long subject arrives as one line to readers that do not unfold (``compat32`` parsers);
    non-ASCII headers are folded at 78, as RFC 2047 encoded words must stay short."""
    plain = all(str(value).isascii() for value in mime.values())
    out = io.BytesIO()
    BytesGenerator(out, policy=mime.policy.clone(max_line_length=998) if plain else mime.policy).flatten(mime)
    return out.getvalue()
