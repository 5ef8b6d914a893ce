"""JetStream streams and key-value buckets, created idempotently at start.

Retention per stream:
- MAIL (`mail.>`): the message lifecycle, kept for `bus.mail_max_age`.
- CONFIG (`config.>`): the configuration history, kept forever; the policy
  service's view is rebuilt by replaying it.
- BODIES (`body.>`): message bytes by reference, deleted by delivery once the
  message is finished, so no age limit: a parked message keeps its body.
- PARKED (`parked.>`): bus messages a service gave up on, kept until an operator
  retries or drops them.
- KV delivery_state: what delivery handed to the next hop, kept for
  `bus.mail_max_age` like the events it is about.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from smimegw.settings import Settings

log = logging.getLogger("smimegw.streams")

MAIL: Final = "MAIL"
CONFIG: Final = "CONFIG"
BODIES: Final = "BODIES"
PARKED: Final = "PARKED"

DELIVERY_BUCKET: Final = "delivery_state"
# Private keys sealed under the KEK; only the crypto service reads it.
KEYS_BUCKET: Final = "keys"
# Copies that wait for a recipient certificate (profiles with on_failure hold).
HELD_BUCKET: Final = "held"
# SMIMECapabilities that partners announced in trusted signed mail, per address.
PARTNERS_BUCKET: Final = "partners"

# JetStream drops a publish whose Nats-Msg-Id it has seen within this window.
DUPLICATE_WINDOW_SECONDS: Final = 120.0


def stream_configs(settings: Settings) -> list[StreamConfig]:
    def stream(name: str, subject: str, **extra: Any) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject],
            storage=StorageType.FILE,
            num_replicas=settings.nats.replicas,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            **extra,
        )

    return [
        stream(MAIL, "mail.>", max_age=settings.bus.mail_max_age.total_seconds()),
        stream(CONFIG, "config.>"),
        # Direct get lets any replica serve a body without the stream leader.
        stream(BODIES, "body.>", allow_direct=True),
        stream(PARKED, "parked.>"),
    ]


def released_key(body_key: str) -> str:
    """Return the delivery_state key that marks body `body_key` as deleted on purpose.

    Delivery writes it before it deletes the body of a finished message, so a
    stage that gets a stale redelivery of that message (its ack was lost) can
    tell a released body from one that was never stored.
    """
    return f"released.{body_key}"


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream and bucket; safe to run from every replica."""
    for config in stream_configs(settings):
        try:
            await js.add_stream(config)
        except BadRequestError as err:
            # Code 10058: the stream exists with another configuration. Update
            # it, so that a changed setting takes effect on the next start.
            if err.err_code != 10058:
                raise
            await js.update_stream(config)
    for bucket in (DELIVERY_BUCKET, KEYS_BUCKET, HELD_BUCKET, PARTNERS_BUCKET):
        try:
            await js.key_value(bucket)
        except NotFoundError:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    storage=StorageType.FILE,
                    replicas=settings.nats.replicas,
                    # Delivery state matters while its mail.processed event can
                    # be redelivered, which ends when MAIL drops the event.
                    # NOTE: applied when the bucket is created, not to an
                    # existing one.
                    ttl=(
                        settings.bus.mail_max_age.total_seconds()
                        if bucket == DELIVERY_BUCKET
                        else None
                    ),
                )
            )
    log.debug("streams provisioned")
