"""Findings that are reported but not fixed yet, so a fuzz run can go on past them.

Each entry is the exception type and the innermost frame of the project's code
that it passed through. `fuzz.engine` counts inputs that match an entry instead
of stopping, and the regression test of the finding stays marked xfail until
the fix lands; remove the entry in the same change as the fix.
"""

from __future__ import annotations

from types import TracebackType

# (exception type name, "module.function" of the innermost project frame)
KNOWN_FINDINGS: frozenset[tuple[str, str]] = frozenset(
    {
        # asn1crypto raises KeyError for a public key algorithm OID it does not
        # know while smimegw.x509 names the algorithm of an undecodable
        # certificate.
        ("KeyError", "smimegw.x509._public_key_algorithm"),
        # cryptography raises DuplicateExtension, which is not a ValueError, when
        # check_readable reads the extensions of a certificate that repeats one.
        ("DuplicateExtension", "smimegw.x509.check_readable"),
        # cryptography raises TypeError from Name.rfc4514_string for an issuer
        # attribute whose type its OID does not allow.
        ("TypeError", "smimegw.x509.check_readable"),
        # cryptography raises InvalidVersion, which is not a ValueError, for a
        # certificate whose version field is not v1, v2 or v3.
        ("InvalidVersion", "smimegw.x509._load_pem_certificate"),
        # cryptography raises ValueError from Name.rfc4514_string for a subject
        # with an invalid value, while keymaterial lists the candidate subjects
        # of a PKCS#12 file whose key matches no certificate.
        ("ValueError", "services.crypto.keymaterial._pair_key.<locals>.<genexpr>"),
    }
)

_PROJECT_PACKAGES = ("smimegw", "services", "schemas")


def signature(error: BaseException) -> tuple[str, str]:
    """The exception type and the innermost project frame that `error` passed."""
    frame_name = ""
    trace: TracebackType | None = error.__traceback__
    while trace is not None:
        module = trace.tb_frame.f_globals.get("__name__", "")
        if module.split(".")[0] in _PROJECT_PACKAGES:
            frame_name = f"{module}.{trace.tb_frame.f_code.co_qualname}"
        trace = trace.tb_next
    return type(error).__name__, frame_name


def is_known(error: BaseException) -> bool:
    return signature(error) in KNOWN_FINDINGS
