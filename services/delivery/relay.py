"""SMTP hand-off to the next hop, with a reply per recipient.

Sessions to the next hop are kept open after a completed transaction and used
again, as an MTA's connection cache does (Postfix's smtp_connection_cache_*):
each reuse saves the TCP handshake, the greeting, EHLO, STARTTLS and QUIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
from aiosmtplib.typing import Default

log = logging.getLogger("smimegw.delivery")

# DATA goes to the socket in pieces of about this size. aiosmtplib 5.1's
# sendmail converts the whole message with re.sub three times (for SIZE, line
# ends, leading periods), and each pass keeps a list of every line: delivery
# of a 30 MB message peaked at about 200 MB above idle.
_DATA_PIECE = 256 * 1024
_LINE_ENDING = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_PERIOD = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def enhanced_status(self) -> str:
        """Return the RFC 3463 code of the reply text, or one the reply code implies."""
        first = self.text.split(" ", 1)[0]
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return first
        return "5.0.0" if self.permanent else "4.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


def data_pieces(message: bytes) -> Iterator[bytes]:
    """Yield the DATA payload of `message` in pieces that end at line ends.

    Lone CR and LF become CRLF, a period that starts a line is doubled (RFC 5321
    section 4.5.2), and the payload ends with CRLF . CRLF: the bytes that
    aiosmtplib's own DATA sends, without building them as one copy.
    """
    size = len(message)
    start = 0
    while start < size:
        newline = message.find(b"\n", min(start + _DATA_PIECE, size) - 1)
        end = size if newline < 0 else newline + 1
        yield _to_wire(message[start:end])
        start = end
    if not message.endswith((b"\n", b"\r")):
        yield b"\r\n"
    yield b".\r\n"


def _to_wire(piece: bytes) -> bytes:
    """Convert one piece that starts at a line start; most need no conversion.

    The counts and the search run in C over the bytes, while re.sub builds a
    list of every line even when nothing changes.
    """
    crlf = piece.count(b"\r\n")
    if piece.count(b"\n") != crlf or piece.count(b"\r") != crlf:
        piece = _LINE_ENDING.sub(b"\r\n", piece)
    if piece.startswith(b".") or b"\n." in piece:
        piece = _LEADING_PERIOD.sub(b"..", piece)
    return piece


class StreamingSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client with DATA written in pieces, under flow control."""

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> aiosmtplib.SMTPResponse:
        protocol = self.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        if isinstance(message, str):
            message = message.encode("ascii")
        wait = self.timeout if timeout is Default.token else timeout
        try:
            start = await protocol.execute_command(b"DATA", timeout=wait)
            if start.code != aiosmtplib.SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            for piece in data_pieces(message):
                # aiosmtplib 5.1 has no public drain; its protocol carries the
                # stdlib's flow control, which waits until the transport's
                # buffer is below its low-water mark.
                async with asyncio.timeout(wait):
                    await protocol._drain_helper()
                protocol.write(piece)
            # No await between the last write and read_response: the protocol
            # drops a reply that arrives before read_response waits for one.
            response = await protocol.read_response(timeout=wait)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        except TimeoutError as err:
            self.close()
            raise aiosmtplib.SMTPTimeoutError("Timed out writing DATA") from err
        if response.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response


def payload_size(message: bytes) -> int:
    """Count the RFC 1870 SIZE of `message`, its octets once line ends are CRLF.

    The count needs no converted copy, unlike aiosmtplib's sendmail.
    """
    crlf = message.count(b"\r\n")
    lone_lf = message.count(b"\n") - crlf
    lone_cr = message.count(b"\r") - crlf
    ending = 0 if message.endswith((b"\n", b"\r")) else 2
    return len(message) + lone_lf + lone_cr + ending


async def _transaction(
    client: StreamingSMTP,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    mail_options: Sequence[str],
    *,
    reused: bool = False,
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """Send MAIL, RCPT and DATA as aiosmtplib's sendmail does, with SIZE counted.

    Raises SMTPRecipientsRefused when every recipient is refused, and
    SMTPResponseException when MAIL or DATA is. On a `reused` session, a
    connection lost or a 421 in reply to MAIL raises _StaleSession: nothing of
    this transaction reached the next hop yet.
    """
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()
    options = list(mail_options)
    if client.supports_extension("size"):
        options.insert(0, f"SIZE={payload_size(message)}")
    utf8 = any(option.lower() == "smtputf8" for option in options)
    encoding = "utf-8" if utf8 else "ascii"
    try:
        await client.mail(sender, options=options, encoding=encoding)
    except (aiosmtplib.SMTPServerDisconnected, OSError) as err:
        if reused:
            raise _StaleSession from err
        raise
    except aiosmtplib.SMTPResponseException as err:
        if reused and err.code == 421:
            raise _StaleSession from err
        raise
    refused: list[aiosmtplib.SMTPRecipientRefused] = []
    for recipient in recipients:
        try:
            await client.rcpt(recipient, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as err:
            refused.append(err)
    if len(refused) == len(recipients):
        raise aiosmtplib.SMTPRecipientsRefused(refused)
    response = await client.data(message)
    errors = {e.recipient: aiosmtplib.SMTPResponse(e.code, e.message) for e in refused}
    return errors, response.message


class _StaleSession(Exception):
    """A cached session that the next hop closed while it was idle."""


@dataclass
class Session:
    """One SMTP connection to the next hop and what it has done so far."""

    client: StreamingSMTP
    opened: float
    transactions: int = 0
    idle_since: float = 0.0


@dataclass
class ConnectionCache:
    """Idle sessions per next hop, taken newest first and closed when too old.

    A session is cached only after a transaction that ended with the reply to
    DATA, so it is in the state after RSET. A session idle for `idle_limit`
    seconds, or open for `reuse_limit` seconds, is closed with QUIT. A cached
    session that the next hop closed meanwhile fails on MAIL, before any part
    of the message was sent, and the transaction runs again on a new one.
    """

    idle_limit: float = 2.0
    reuse_limit: float = 300.0
    max_idle: int = 32
    clock: Callable[[], float] = time.monotonic
    _idle: dict[tuple[str, int], list[Session]] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    _closed: bool = False

    @property
    def enabled(self) -> bool:
        return self.idle_limit > 0

    @property
    def keeps_sessions(self) -> bool:
        """Whether give may keep a session: enabled and not closed."""
        return self.enabled and not self._closed

    def idle_count(self, host: str, port: int) -> int:
        return len(self._idle.get((host, port), []))

    def take(self, host: str, port: int) -> Session | None:
        """Return the most recently used live session to host:port, if any."""
        sessions = self._idle.get((host, port), [])
        now = self.clock()
        while sessions:
            session = sessions.pop()
            if session.client.is_connected and not self._expired(session, now):
                return session
            self._quit(session)
        return None

    def give(self, host: str, port: int, session: Session) -> None:
        """Keep `session` for the next transaction to host:port, or close it."""
        now = self.clock()
        sessions = self._idle.setdefault((host, port), [])
        session.idle_since = now
        if (
            self._closed
            or not self.enabled
            or len(sessions) >= self.max_idle
            or not session.client.is_connected
            or now - session.opened >= self.reuse_limit
        ):
            self._quit(session)
            return
        sessions.append(session)
        asyncio.get_running_loop().call_later(
            self.idle_limit, self._expire, host, port, session
        )

    async def close(self) -> None:
        """Quit every idle session and wait up to 5 seconds for the replies.

        Sessions given back later, by transactions still in flight while the
        service stops, are closed at once.
        """
        self._closed = True
        for sessions in self._idle.values():
            while sessions:
                self._quit(sessions.pop())
        if self._closing:
            _, pending = await asyncio.wait(set(self._closing), timeout=5)
            # A next hop that does not reply to QUIT in time: its socket is
            # closed without the reply, so that no task outlives the service.
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.idle_since >= self.idle_limit
            or now - session.opened >= self.reuse_limit
        )

    def _expire(self, host: str, port: int, session: Session) -> None:
        sessions = self._idle.get((host, port), [])
        if session in sessions and self._expired(session, self.clock()):
            sessions.remove(session)
            self._quit(session)

    def _quit(self, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(_finish(session.client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _finish(client: StreamingSMTP) -> None:
    """Send QUIT if the session is still connected, then close the socket."""
    try:
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit(timeout=5)
    finally:
        client.close()


async def send(
    *,
    host: str,
    port: int,
    helo: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    mail_options: Sequence[str],
    timeout: float,
    cache: ConnectionCache | None = None,
) -> dict[str, Reply]:
    """Send one transaction; return the reply that decides each recipient.

    Connection failures and timeouts are reported as a 4xx reply for every
    recipient, so the caller defers them. STARTTLS is used when the next hop
    offers it, without certificate checks, like an MTA's opportunistic TLS
    (RFC 7435): a failed check would only make the hop fall back to plain text.
    With a cache, a session left open by an earlier transaction is used first.
    """
    arguments = (sender, recipients, message, mail_options)
    cached = cache.take(host, port) if cache is not None else None
    if cached is not None:
        try:
            return await _send_on(cached, cache, host, port, *arguments, reused=True)
        except _StaleSession:
            log.debug("cached session to %s:%d was closed; opening one", host, port)
    client = StreamingSMTP(
        hostname=host,
        port=port,
        local_hostname=helo,
        timeout=timeout,
        start_tls=None,
        validate_certs=False,
    )
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        client.close()
        return _connection_failed(host, port, recipients, err)
    opened = cache.clock() if cache is not None else time.monotonic()
    session = Session(client, opened=opened)
    return await _send_on(session, cache, host, port, *arguments, reused=False)


def _connection_failed(
    host: str, port: int, recipients: Sequence[str], err: BaseException
) -> dict[str, Reply]:
    reason = f"connection to {host}:{port} failed: {type(err).__name__}: {err}"
    return dict.fromkeys(recipients, Reply(451, f"4.4.1 {reason}"))


async def _send_on(
    session: Session,
    cache: ConnectionCache | None,
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    mail_options: Sequence[str],
    *,
    reused: bool,
) -> dict[str, Reply]:
    """Run one transaction on an open session, then cache or close it."""
    client = session.client
    try:
        refused, data_reply = await _transaction(
            client, sender, recipients, message, mail_options, reused=reused
        )
    except _StaleSession:
        client.close()
        raise
    except aiosmtplib.SMTPRecipientsRefused as err:
        await _finish(client)
        return {r.recipient: Reply(r.code, r.message) for r in err.recipients}
    except aiosmtplib.SMTPResponseException as err:
        # MAIL FROM or DATA rejected: the same reply for every recipient.
        await _finish(client)
        return dict.fromkeys(recipients, Reply(err.code, err.message))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        client.close()
        return _connection_failed(host, port, recipients, err)
    session.transactions += 1
    if cache is not None and cache.keeps_sessions:
        cache.give(host, port, session)
    else:
        # Closed here rather than by a task of the cache: after close, no one
        # would wait for that task when the service stops.
        await _finish(client)
    replies = {r: Reply(250, data_reply) for r in recipients}
    for recipient, response in refused.items():
        replies[recipient] = Reply(response.code, response.message)
    return replies
