"""The aiosmtpd session, adjusted for a gateway that must not lose or alter mail.

- DATA lines may be as long as the maximum message size: aiosmtpd's default limit
  of 1,001 octets rejects mail with long lines, and a message with bare LF line
  ends arrives as one "line" up to the final CRLF. DATA is read in pieces of at
  most 1 MiB instead of line by line.
- An address that Python 3.11's email parser fails on is a syntax error:
  "MAIL FROM:<" raises IndexError and "RCPT TO:<x@[a>" AttributeError, which
  aiosmtpd would turn into a 421 and a dropped connection.
- Limits per client (`ClientLimits`), per connection and per transaction, and
  a 421 before closing a connection that timed out.
- AUTH is refused before STARTTLS, and neither advertised nor accepted unless
  an authenticator is configured: aiosmtpd 1.4.6 advertises AUTH after
  STARTTLS even without one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP

from services.ingress.limits import ClientLimits

log = logging.getLogger("smimegw.ingress")

# Maximum bytes the stream reader buffers before DATA reading takes them.
_STREAM_LIMIT = 1024 * 1024
# The line that ends DATA, and the same with the end of the line before it.
_DOT_LINE_END = b".\r\n"
_END_OF_DATA = b"\r\n.\r\n"

REPLY_TOO_MANY_CONNECTIONS = (
    "421 4.7.0 Too many connections from your address; try again later"
)
REPLY_TOO_MANY_MESSAGES = (
    "421 4.7.0 Too many messages in this connection; reconnect to send more"
)
REPLY_RATE_LIMITED = "450 4.7.1 Too many messages from your address; try again later"
REPLY_TIMEOUT = "421 4.4.2 Timeout exceeded, closing connection"
REPLY_AUTH_NEEDS_TLS = (
    "538 5.7.11 Encryption required for requested authentication mechanism"
)


class GatewaySMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        max_line: int,
        on_close: Callable[[GatewaySMTP], None],
        data_timeout: float,
        max_messages: int,
        limits: ClientLimits | None = None,
        **kwargs: Any,
    ) -> None:
        # Read by SMTP.__init__ to size the stream reader, so set it first.
        # DATA is read in pieces of at most this size, whatever its line
        # lengths, so the reader never buffers a whole large message.
        self.line_length_limit = min(max_line, _STREAM_LIMIT)
        self._on_close = on_close
        self._data_timeout = data_timeout
        self._max_messages = max_messages
        self._messages = 0
        self._limits = limits
        self._counted_peer: str | None = None
        self._over_limit = False
        super().__init__(handler, **kwargs)

    @property
    def peer_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting = self.transport is None
        super().connection_made(transport)
        if not starting or self._limits is None:
            return
        if self._limits.open_connection(self.peer_ip):
            self._counted_peer = self.peer_ip
        else:
            self._over_limit = True

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self._limits is not None and self._counted_peer is not None:
            self._limits.close_connection(self._counted_peer)
            self._counted_peer = None
        self._on_close(self)

    async def _handle_client(self) -> None:
        if self._over_limit:
            log.info("too many connections from %s; replied 421", self.peer_ip)
            await self.push(REPLY_TOO_MANY_CONNECTIONS)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        # RFC 5321 section 4.5.3.2: close with 421 after a timeout.
        if self.transport is not None and not self.transport.is_closing():
            log.info("SMTP client %s timed out; replied 421", self.peer_ip)
            self._writer.write(REPLY_TIMEOUT.encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._messages >= self._max_messages:
            await self.push(REPLY_TOO_MANY_MESSAGES)
            if self.transport is not None:
                self.transport.close()
            return
        if self._limits is not None and not self._limits.start_message(self.peer_ip):
            log.info("message rate of %s over the limit; replied 450", self.peer_ip)
            await self.push(REPLY_RATE_LIMITED)
            return
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None:
            self._messages += 1

    async def smtp_DATA(self, arg: str) -> None:
        """Receive the message like aiosmtpd 1.4.6, reading it in large pieces.

        aiosmtpd reads DATA one line at a time, which was about half of the
        ingress service's CPU time for 100 KB messages under load. Unlike
        aiosmtpd, it accepts lines longer than the stream limit: only the
        message size is limited.
        """
        # aiosmtpd resets its timer at each command only, so this bounds the
        # whole transfer: a client sending one byte at a time is cut off.
        self._reset_timeout(self._data_timeout)
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        if content is None:
            # RFC 5321 section 4.2.5: the reply comes after the whole transfer.
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytes | None:
        """Read DATA up to CRLF . CRLF and undo dot-stuffing (RFC 5321 4.5.2).

        Returns None when the data exceeds `data_size_limit`; the rest is read
        and dropped so the session can go on. Each piece ends at the next
        ".<CRLF>", or after the stream limit when none comes first. DATA starts
        at a line start, so the data ends where the last two bytes before a
        piece and the piece itself end with "<CRLF>.<CRLF>".
        """
        limit = self.data_size_limit
        pieces: list[bytes] = []
        size = 0
        too_much = False
        before = b"\r\n"
        while True:
            try:
                piece = await self._reader.readuntil(_DOT_LINE_END)
            except asyncio.LimitOverrunError as err:
                # The stream limit came first: take the bytes scanned so far.
                # They hold no ".<CRLF>" and leave a partial one in the buffer.
                piece = await self._reader.readexactly(err.consumed)
            end = (before + piece[-len(_END_OF_DATA) :]).endswith(_END_OF_DATA)
            before = (before + piece)[-2:] if len(piece) < 2 else piece[-2:]
            size += len(piece)
            if limit and size - (len(_DOT_LINE_END) if end else 0) > limit:
                pieces.clear()
                too_much = True
            if not too_much:
                pieces.append(piece)
            if end:
                break
        if too_much:
            return None
        pieces[-1] = pieces[-1][: -len(_DOT_LINE_END)]
        data = b"".join(pieces)
        pieces.clear()
        if data.startswith(b"."):
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        try:
            return super()._getaddr(arg)
        except (IndexError, AttributeError, ValueError):
            return None, None

    async def smtp_AUTH(self, arg: str) -> None:
        if self._authenticator is None:
            await self.push("502 5.5.1 AUTH is not available on this server")
            return
        # RFC 4954 section 4: credentials never cross an unencrypted connection.
        if self.session is None or self.session.ssl is None:
            await self.push(REPLY_AUTH_NEEDS_TLS)
            return
        await super().smtp_AUTH(arg)
