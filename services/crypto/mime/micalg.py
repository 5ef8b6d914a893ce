"""The micalg parameter of multipart/signed (RFC 8551 section 3.5.3.2)."""

from .errors import UnsupportedMimeError

# hashlib names, keyed by every spelling seen from senders once lower-cased: the
# RFC 8551 names ("sha-256"), the RFC 3851 era names without hyphen ("sha256") and
# upper-case variants ("SHA1", as in the RFC 4134 examples).
_DIGESTS = {
    "md5": "md5",
    "sha-1": "sha1",
    "sha1": "sha1",
    "sha-224": "sha224",
    "sha224": "sha224",
    "sha-256": "sha256",
    "sha256": "sha256",
    "sha-384": "sha384",
    "sha384": "sha384",
    "sha-512": "sha512",
    "sha512": "sha512",
}

# The names RFC 8551 section 3.5.3.2 defines for the parameter, by hashlib name.
_PARAMETERS = {
    "md5": "md5",
    "sha1": "sha-1",
    "sha224": "sha-224",
    "sha256": "sha-256",
    "sha384": "sha-384",
    "sha512": "sha-512",
}


def normalize_micalg(value: str) -> str:
    """Return the hashlib name ("sha256", "sha1", ...) of a micalg value.

    Raises UnsupportedMimeError for a value that names no known digest.
    """
    name = _DIGESTS.get(value.strip().strip('"').lower())
    if name is None:
        raise UnsupportedMimeError(
            f"micalg {value[:40]!r} names no known digest; expected one of "
            f"{', '.join(_PARAMETERS.values())}"
        )
    return name


def micalg_parameter(value: str) -> str:
    """Return the RFC 8551 spelling ("sha-256") of a digest name in any spelling."""
    return _PARAMETERS[normalize_micalg(value)]
