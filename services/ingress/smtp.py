"""The aiosmtpd session, adjusted for a gateway that must not lose or alter mail.

- DATA lines may be as long as the maximum message size: aiosmtpd's default limit
  of 1,001 octets rejects mail with long lines, and a message with bare LF line
  ends arrives as one "line" up to the final CRLF.
- An address that Python 3.11's email parser fails on is a syntax error:
  "MAIL FROM:<" raises IndexError and "RCPT TO:<x@[a>" AttributeError, which
  aiosmtpd would turn into a 421 and a dropped connection.
- AUTH is neither advertised nor accepted unless an authenticator is configured:
  aiosmtpd 1.4.6 advertises AUTH after STARTTLS even without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP


class GatewaySMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        max_line: int,
        on_close: Callable[[GatewaySMTP], None],
        **kwargs: Any,
    ) -> None:
        # Read by SMTP.__init__ to size the stream reader, so set it first.
        self.line_length_limit = max_line
        self._on_close = on_close
        super().__init__(handler, **kwargs)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._on_close(self)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        try:
            return super()._getaddr(arg)
        except (IndexError, AttributeError, ValueError):
            return None, None

    async def smtp_AUTH(self, arg: str) -> None:
        if self._authenticator is None:
            await self.push("502 5.5.1 AUTH is not available on this server")
            return
        await super().smtp_AUTH(arg)
