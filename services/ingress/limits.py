"""Limits per client IP address: open connections and messages per minute.

Clients in `trusted_networks` (the organisation's own mail servers) are exempt,
because all internal mail arrives from a handful of addresses.
"""

from __future__ import annotations

import ipaddress
import time
from collections import defaultdict, deque
from collections.abc import Callable

from smimegw.settings import Settings

_WINDOW_SECONDS = 60.0


class ClientLimits:
    """Counters shared by every SMTP session of one ingress process."""

    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        smtp = settings.smtp
        self.max_connections = smtp.max_connections_per_ip
        self.max_messages_per_minute = smtp.max_messages_per_ip_per_minute
        self.trusted_networks = settings.trusted_ip_networks
        self.connections: dict[str, int] = defaultdict(int)
        self._messages: dict[str, deque[float]] = defaultdict(deque)
        self._clock = clock

    def is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_networks)

    def open_connection(self, address: str) -> bool:
        """Count a new connection; False (and not counted) when over the limit."""
        if self.is_exempt(address):
            return True
        if self.connections[address] >= self.max_connections:
            return False
        self.connections[address] += 1
        return True

    def close_connection(self, address: str) -> None:
        """Release a connection that `open_connection` counted."""
        if self.is_exempt(address):
            return
        self.connections[address] -= 1
        if self.connections[address] <= 0:
            del self.connections[address]

    def start_message(self, address: str) -> bool:
        """Count a MAIL command; False when the address sent too many this minute."""
        if self.is_exempt(address):
            return True
        now = self._clock()
        stamps = self._messages[address]
        while stamps and stamps[0] <= now - _WINDOW_SECONDS:
            stamps.popleft()
        if len(stamps) >= self.max_messages_per_minute:
            return False
        stamps.append(now)
        return True
