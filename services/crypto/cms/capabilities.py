"""SMIMECapabilities signed attribute (RFC 8551 section 2.5.2).

A signer lists the algorithms it can decrypt, most preferred first, so that a partner
can choose the content-encryption algorithm of its reply. Names follow the gateway's
configuration vocabulary ("aes256-cbc", "aes128-gcm"). An identifier without a name
here is reported by its dotted OID.
"""

from __future__ import annotations

from asn1crypto import cms, core

# Content-encryption algorithms (RFC 3565, RFC 5084, RFC 8103, RFC 3370).
_NAMES_BY_OID = {
    "2.16.840.1.101.3.4.1.46": "aes256-gcm",
    "2.16.840.1.101.3.4.1.26": "aes192-gcm",
    "2.16.840.1.101.3.4.1.6": "aes128-gcm",
    "2.16.840.1.101.3.4.1.42": "aes256-cbc",
    "2.16.840.1.101.3.4.1.22": "aes192-cbc",
    "2.16.840.1.101.3.4.1.2": "aes128-cbc",
    "1.2.840.113549.1.9.16.3.18": "chacha20-poly1305",
    "1.2.840.113549.3.7": "3des-cbc",
    "1.3.14.3.2.7": "des-cbc",
    "1.2.840.113549.3.2": "rc2-cbc",
    # Key transport and key agreement, which some clients announce as well.
    "1.2.840.113549.1.1.1": "rsa-pkcs1v15",
    "1.2.840.113549.1.1.7": "rsa-oaep",
    "1.3.132.1.11.1": "ecdh-stddh-sha256",
    "1.3.132.1.11.2": "ecdh-stddh-sha384",
    "1.3.132.1.11.3": "ecdh-stddh-sha512",
}
_OIDS_BY_NAME = {name: oid for oid, name in _NAMES_BY_OID.items()}

# Algorithms the gateway announces when it signs, most preferred first. AES-GCM comes
# first because it authenticates the content (AuthEnvelopedData, RFC 5083 and RFC 5084)
# and the gateway decrypts it. AES-CBC follows for clients that cannot send AES-GCM.
GATEWAY_CAPABILITIES: tuple[str, ...] = (
    "aes256-gcm",
    "aes128-gcm",
    "aes256-cbc",
    "aes192-cbc",
    "aes128-cbc",
)


def encode_capabilities(names: tuple[str, ...]) -> cms.SMIMECapabilites:
    """Build the attribute value that announces `names`, in that order.

    Raises ValueError for a name that has no known object identifier.
    """
    unknown = [name for name in names if name not in _OIDS_BY_NAME]
    if unknown:
        raise ValueError(
            f"SMIMECapabilities names {unknown} are unknown; "
            f"use names from {sorted(_OIDS_BY_NAME)}"
        )
    # AES identifiers are written without parameters, as OpenSSL writes them.
    return cms.SMIMECapabilites(
        [{"capability_id": _OIDS_BY_NAME[name]} for name in names]
    )


def decode_capabilities(value: cms.SMIMECapabilites) -> tuple[str, ...]:
    """Return the algorithm names that a parsed attribute value announces, in order.

    An RC2 capability carries its key size in bits as an INTEGER parameter and is
    reported as "rc2-40-cbc", "rc2-128-cbc" and so on.
    """
    names: list[str] = []
    for capability in value:
        oid = capability["capability_id"].dotted
        name = _NAMES_BY_OID.get(oid, oid)
        parameters = capability["parameters"]
        if name == "rc2-cbc" and isinstance(parameters, core.Any):
            key_bits = parameters.parse(core.Integer).native
            name = f"rc2-{key_bits}-cbc"
        names.append(name)
    return tuple(names)
