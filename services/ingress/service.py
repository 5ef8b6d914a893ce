"""Ingress entry point: the SMTP listener on `smtp.listen`."""

from __future__ import annotations

import asyncio
import logging
import ssl

from services.ingress.handlers import IngressHandler, smtp_kwargs
from services.ingress.limits import ClientLimits
from services.ingress.smtp import GatewaySMTP
from smimegw.runtime import Runtime
from smimegw.settings import Settings, parse_host_port

log = logging.getLogger("smimegw.ingress")

# How long a stopping ingress waits for DATA hand-offs in progress.
_DRAIN_SECONDS = 30.0


class TlsSetupError(ValueError):
    """The STARTTLS certificate or key cannot be loaded."""


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    smtp = settings.smtp
    if smtp.tls_cert is None and smtp.tls_key is None:
        return None
    if smtp.tls_cert is None or smtp.tls_key is None:
        raise TlsSetupError(
            "smtp.tls_cert and smtp.tls_key go together: set both to offer "
            "STARTTLS, or neither"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise TlsSetupError(
            f"cannot load smtp.tls_cert {str(smtp.tls_cert)!r} with smtp.tls_key "
            f"{str(smtp.tls_key)!r}: {err}; give a PEM certificate and its key"
        ) from err
    return context


class IngressService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.handler = IngressHandler(runtime)
        self.limits = ClientLimits(runtime.settings)
        self.server: asyncio.Server | None = None
        self.sessions: set[GatewaySMTP] = set()
        # Loaded once, here: a bad file stops the service at start with the
        # reason, instead of dropping every connection later.
        self.tls = tls_context(runtime.settings)

    def _session(self) -> GatewaySMTP:
        session = GatewaySMTP(
            self.handler,
            tls_context=self.tls,
            require_starttls=False,
            on_close=self.sessions.discard,
            limits=self.limits,
            **smtp_kwargs(self.runtime),
        )
        self.sessions.add(session)
        return session

    async def start(self) -> None:
        host, port = parse_host_port(self.runtime.settings.smtp.listen, "smtp.listen")
        self.server = await asyncio.get_running_loop().create_server(
            self._session, host, port
        )
        bound = self.server.sockets[0].getsockname()
        log.info("SMTP listening on %s:%d", bound[0], bound[1])

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        """Stop accepting connections, finish the hand-offs in flight, then close."""
        if self.server is not None:
            self.server.close()
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                await self.handler.idle.wait()
        except TimeoutError:
            log.error(
                "%d SMTP transactions still storing after %.0f s; closing anyway",
                self.handler.in_flight,
                _DRAIN_SECONDS,
            )
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        self.sessions.clear()


def build(runtime: Runtime) -> IngressService:
    return IngressService(runtime)
