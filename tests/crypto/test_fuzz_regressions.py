"""Inputs that fuzzing the CMS and MIME parsers found, kept as regression tests.

Each finding is stored under fuzz/regressions/TARGET/ and replayed here through
the parser it crashed, with the outcome it should have had.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fuzz.cms_corpus import trust_anchors
from services.crypto.cms.errors import MalformedCmsError
from services.crypto.cms.signed import verify
from tests.harness import REPO

REGRESSIONS = REPO / "fuzz" / "regressions"
TARGETS = ("cms_envelope", "cms_signed", "mime_outgoing")


def _findings() -> list[object]:
    return [
        pytest.param(target, path, id=f"{target}/{path.name}")
        for target in TARGETS
        for path in sorted((REGRESSIONS / target).glob("*"))
    ]


@pytest.mark.parametrize(("target", "path"), _findings())
def test_finding_raises_only_project_errors(target: str, path: Path) -> None:
    # Each target suppresses the parser's own error tree and nothing else.
    module = importlib.import_module(f"fuzz.{target}")
    module.test_one_input(path.read_bytes())


def test_duplicate_extension_certificate_is_skipped() -> None:
    # A certificate in SignedData.certificates repeats keyUsage, which made
    # cryptography raise DuplicateExtension. It is skipped like any undecodable
    # certificate, so the signer is reported as not found.
    der = (REGRESSIONS / "cms_signed" / "duplicate-extension").read_bytes()
    verification = verify(
        der,
        detached_content=None,
        trust_anchors=trust_anchors(),
        now=datetime(2026, 12, 4, tzinfo=UTC),
    )
    assert len(verification.signers) == 1
    signer = verification.signers[0]
    assert signer.signature == "invalid"
    assert signer.signer is None
    assert signer.certificate_reason == "signer certificate not found"


def test_issuer_attribute_of_wrong_type_is_malformed() -> None:
    # A SignerInfo whose issuer name contains an attribute value of the wrong type
    # made asn1crypto raise AttributeError while comparing names.
    der = (REGRESSIONS / "cms_signed" / "issuer-attribute-value-type").read_bytes()
    with pytest.raises(MalformedCmsError, match="SignedData is not valid DER/BER"):
        verify(
            der,
            detached_content=None,
            trust_anchors=trust_anchors(),
            now=datetime(2026, 12, 4, tzinfo=UTC),
        )
