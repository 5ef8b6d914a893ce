"""Delivery status notifications (RFC 3464) for bounced recipients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

# Header fields of the original message copied into the DSN; RFC 3462 allows
# the headers only, and the body stays out of the report on purpose.
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class FailedRecipient:
    address: str
    status: str  # enhanced status code, RFC 3463, e.g. "5.1.1"
    diagnostic: str  # the next hop's reply, or the gateway's reason
    remote_mta: str | None = None


def original_headers(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    headers = message if end < 0 else message[: end + 2]
    return headers[:_MAX_HEADER_BYTES]


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    queue_id: str,
    arrival: datetime,
    recipients: Sequence[FailedRecipient],
    message: bytes,
) -> bytes:
    """Return a multipart/report DSN telling `original_sender` of the failures."""
    boundary = f"=_dsn_{queue_id}"
    explanation = [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
        *(f"<{r.address}>: {_one_line(r.diagnostic)}" for r in recipients),
    ]
    status_blocks = [
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"X-Smimegw-Queue-ID: {queue_id}\r\n"
        f"Arrival-Date: {format_datetime(arrival)}\r\n"
    ]
    for r in recipients:
        block = (
            f"Final-Recipient: rfc822; {r.address}\r\n"
            "Action: failed\r\n"
            f"Status: {r.status}\r\n"
        )
        if r.remote_mta:
            block += f"Remote-MTA: dns; {r.remote_mta}\r\n"
        block += f"Diagnostic-Code: smtp; {_one_line(r.diagnostic)}\r\n"
        status_blocks.append(block)

    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{original_sender}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        f"\r\n--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        + "\r\n".join(explanation)
        + f"\r\n\r\n--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        + "\r\n".join(status_blocks)
        + f"\r\n--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n"
    return head.encode() + original_headers(message) + tail.encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]
