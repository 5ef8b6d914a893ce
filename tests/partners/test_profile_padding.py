"""A profile's RSA padding end to end: RSA-PSS signatures that OpenSSL verifies."""

from __future__ import annotations

import email
import email.policy

import pytest
from asn1crypto import cms

from tests.outgoing.conftest import Outgoing, verify
from tests.outgoing.test_outgoing import TEXT, entity_sent


def signature_algorithm(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    der = parsed.get_payload(decode=True)
    assert isinstance(der, bytes)
    (signer,) = cms.ContentInfo.load(der)["content"]["signer_infos"]
    name: str = signer["signature_algorithm"]["algorithm"].native
    return name


@pytest.mark.parametrize(
    ("padding", "expected"), [("pss", "rsassa_pss"), ("pkcs1v15", "rsassa_pkcs1v15")]
)
async def test_profile_rsa_padding(
    outgoing: Outgoing, padding: str, expected: str
) -> None:
    await outgoing.use_profile(
        "p", action="sign", signature="opaque", rsa_padding=padding
    )
    await outgoing.send(["bob@example.com"], TEXT)
    (arrived,) = await outgoing.sink.wait_for(1)

    assert verify(outgoing.keys, arrived.content) == entity_sent(TEXT)
    assert signature_algorithm(arrived.content) == expected
