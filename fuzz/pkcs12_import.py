"""Fuzz target: PKCS#12 import with the password of the Thunderbird seed files."""

from __future__ import annotations

import contextlib

from services.crypto.keymaterial import load_pkcs12
from smimegw.x509 import MaterialImportError


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(MaterialImportError):
        load_pkcs12(data, b"nss", "fuzz.p12")
