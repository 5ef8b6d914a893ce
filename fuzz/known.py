"""Findings that are reported but not fixed yet, so a fuzz run can go on past them.

Each entry is the exception type and the innermost frame of the project's code
that it passed through. `fuzz.engine` counts inputs that match an entry instead
of stopping, and the regression test of the finding stays marked xfail until
the fix lands; remove the entry in the same change as the fix.
"""

from __future__ import annotations

from types import TracebackType

# (exception type name, "module.function" of the innermost project frame). No
# finding is open.
KNOWN_FINDINGS: frozenset[tuple[str, str]] = frozenset()

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
