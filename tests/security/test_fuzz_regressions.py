"""Inputs that the fuzz targets found, replayed through the same targets.

An input that still raises a finding listed in `fuzz.known` (not fixed yet) is
marked xfail; once its fix lands, it runs as an ordinary test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fuzz.known import is_known
from tests.harness import REPO

REGRESSIONS = REPO / "fuzz" / "regressions"


def _cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(REGRESSIONS.glob("*/*")):
        target = path.parent.name
        case_id = f"{target}/{path.name}"
        if _raises_known(target, path):
            reason = "known finding listed in fuzz/known.py, fixed by its owner"
            mark = pytest.mark.xfail(strict=True, reason=reason)
            cases.append(pytest.param(target, path, id=case_id, marks=mark))
        else:
            cases.append(pytest.param(target, path, id=case_id))
    return cases


def _raises_known(target: str, path: Path) -> bool:
    try:
        _run(target, path)
    except Exception as err:
        return is_known(err)
    return False


def _run(target: str, path: Path) -> None:
    module = importlib.import_module(f"fuzz.{target}")
    module.test_one_input(path.read_bytes())


def test_every_target_has_regressions() -> None:
    targets = {p.parent.name for p in REGRESSIONS.glob("*/*")}
    assert {"cms_signed", "pem_import", "pkcs12_import", "smtp_session"} <= targets


@pytest.mark.parametrize(("target", "path"), _cases())
def test_regression(target: str, path: Path) -> None:
    _run(target, path)
