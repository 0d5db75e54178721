"""One notifier for every capability: email (plain text and HTML, inline PNG images, attachments)
through the SMTP provider's hook, and Slack through an incoming webhook. It knows nothing of what
a message says: each capability builds its own :class:`Message` (the scan gate in
``scan/notify.py``, retention in ``retention/report_mail.py``) and calls :func:`notify`.

| module | what |
|---|---|
| ``message`` | ``Message``, ``InlineImage``, ``Attachment``, ``NotifyError``; the MIME tree |
| ``smtp`` | ``send_email``: the hook's session, our MIME (why: its docstring) |
| ``slack`` | ``send_slack``: incoming webhook from a connection |
| ``send`` | ``notify``: both channels per the config's ``notifications:`` section |

Secrets (the SMTP password, the webhook URL) are never logged nor put into an error.
"""

from .message import Attachment, InlineImage, Message, NotifyError, to_bytes, to_mime
from .send import notify
from .slack import send_slack, webhook_url
from .smtp import EmailSent, send_email

__all__ = [
    "Attachment",
    "EmailSent",
    "InlineImage",
    "Message",
    "NotifyError",
    "notify",
    "send_email",
    "send_slack",
    "to_bytes",
    "to_mime",
    "webhook_url",
]
