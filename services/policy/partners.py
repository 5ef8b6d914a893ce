"""Partner capabilities: the content-encryption algorithms each correspondent reads.

A signed message may carry the SMIMECapabilities attribute (RFC 8551 section
2.5.2), in which the signer's client lists the algorithms it decrypts. Policy
records that list per address of the signer certificate, from `mail.verified`,
and planning uses it to pick a stronger algorithm for replies.

Only a valid signature that is not weak, made with a trusted certificate, counts.
Anyone can put the attribute into a message signed with a self-made certificate
that names a partner's address, so as to make the gateway choose an algorithm
the partner cannot read.

The records live in the `partners` bucket, one key per address: the SHA-256 hex of
its `address_key` form, because KV keys allow only `[-/_=.a-zA-Z0-9]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from schemas import MailVerified, SignerReport
from schemas.base import Model, Timestamp
from smimegw import streams
from smimegw.runtime import Attempt, Runtime
from smimegw.x509 import address_key

log = logging.getLogger("smimegw.policy")

# Durable consumer of `mail.verified` that records capabilities.
CONSUMER = "policy_capabilities"
# Bounds on what one signature can store. A certificate has a handful of addresses
# and a client announces about ten algorithms; more is not worth keeping.
MAX_ADDRESSES = 16
MAX_CAPABILITIES = 32
# Attempts at a compare-and-set update before the message is redelivered.
_UPDATE_ATTEMPTS = 3


class PartnerUpdateConflictError(Exception):
    """Other replicas kept changing a partner record during a compare-and-set."""


class PartnerCapabilities(Model):
    """The algorithms one address announced, as stored in the `partners` bucket."""

    address: str  # the address_key form
    capabilities: tuple[str, ...]  # as announced, most preferred first
    # SHA-256 of the signer certificate that announced them.
    fingerprint: str
    # Time of the mail.verified event: a record is replaced only by a newer one.
    announced: Timestamp


def partner_key(address: str) -> str:
    """Return the KV key of an address: SHA-256 hex of its case-folded form."""
    return hashlib.sha256(address_key(address).encode()).hexdigest()


def trusted_announcements(event: MailVerified) -> list[PartnerCapabilities]:
    """Return a record per address of each trusted signer that announced algorithms."""
    records: dict[str, PartnerCapabilities] = {}
    for layer in event.layers:
        for report in layer:
            if not _trusted(report) or not report.capabilities:
                continue
            for address in report.addresses[:MAX_ADDRESSES]:
                key = address_key(address)
                records[key] = PartnerCapabilities(
                    address=key,
                    capabilities=report.capabilities[:MAX_CAPABILITIES],
                    fingerprint=report.fingerprint,
                    announced=event.time,
                )
    return list(records.values())


def _trusted(report: SignerReport) -> bool:
    return (
        report.signature == "valid"
        and not report.weak
        and report.certificate_status == "trusted"
    )


class PartnerStore:
    """Reads and writes the `partners` bucket."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.runtime.js.key_value(streams.PARTNERS_BUCKET)
        return self._kv

    async def get(self, address: str) -> PartnerCapabilities | None:
        """Return the record of `address`, or None when it announced nothing."""
        entry = await self._entry(partner_key(address))
        return entry[0] if entry else None

    async def capabilities_of(
        self, addresses: Iterable[str]
    ) -> dict[str, tuple[str, ...]]:
        """Return the announced algorithms per `address_key`, for known addresses."""
        unique = sorted({address_key(address) for address in addresses})
        records = await asyncio.gather(*(self.get(address) for address in unique))
        return {
            address: record.capabilities
            for address, record in zip(unique, records, strict=True)
            if record is not None
        }

    async def record(self, new: PartnerCapabilities) -> bool:
        """Store `new` unless the stored record is as recent; return whether stored.

        The compare-and-set keeps a redelivered or late event from replacing a
        newer announcement that another replica stored meanwhile.
        """
        kv = await self.kv()
        key = partner_key(new.address)
        for _ in range(_UPDATE_ATTEMPTS):
            entry = await self._entry(key)
            if entry is not None and entry[0].announced >= new.announced:
                return False
            try:
                if entry is None:
                    await kv.create(key, new.model_dump_json().encode())
                else:
                    await kv.update(key, new.model_dump_json().encode(), last=entry[1])
            except KeyWrongLastSequenceError:
                continue
            return True
        raise PartnerUpdateConflictError(
            f"partner record {key} changed {_UPDATE_ATTEMPTS} times while it was "
            "updated; the mail.verified event is redelivered to try again"
        )

    async def _entry(self, key: str) -> tuple[PartnerCapabilities, int] | None:
        kv = await self.kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            record = PartnerCapabilities.model_validate_json(entry.value)
        except ValueError as err:
            # A record this version cannot read is replaced by the next one.
            log.warning("partner record %s is unreadable: %s", key, err)
            return None
        return record, entry.revision


class CapabilityRecorder:
    """Handles `mail.verified`: stores the announcements of trusted signers."""

    def __init__(self, runtime: Runtime) -> None:
        self.store = PartnerStore(runtime)
        runtime.consume(
            "mail.verified", MailVerified, self.on_verified, durable=CONSUMER
        )

    async def on_verified(self, event: MailVerified, attempt: Attempt) -> None:
        stored = 0
        for record in trusted_announcements(event):
            if await self.store.record(record):
                stored += 1
        if stored:
            log.info("recorded the capabilities of %d partner address(es)", stored)
