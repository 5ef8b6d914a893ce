"""Fuzz target: certificate files (PEM, DER, PKCS#7) and PEM private keys.

Each input goes to both parsers, so one seed corpus of PEM files serves both.
"""

from __future__ import annotations

import contextlib

from services.crypto.keymaterial import load_pem_key
from smimegw.x509 import MaterialImportError, load_certificates


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(MaterialImportError):
        load_certificates(data, "fuzz.pem")
    with contextlib.suppress(MaterialImportError):
        load_pem_key(data, b"fuzz", "fuzz.key")
