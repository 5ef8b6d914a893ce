"""One atheris process: `python -m fuzz.engine TARGET [libFuzzer options] CORPUS...`.

An input that raises a finding listed in `fuzz.known` is counted, and the count
is printed at 1, 10, 100, ... inputs (libFuzzer ends the process without
running Python's exit handlers); any other exception stops the run with a
crash file.
"""

from __future__ import annotations

import collections
import importlib
import logging
import sys
from collections.abc import Callable

import atheris

from fuzz.known import is_known, signature

known_counts: collections.Counter[tuple[str, str]] = collections.Counter()


def _report_known(key: tuple[str, str]) -> None:
    count = known_counts[key]
    if str(count).strip("0") == "1":
        error, frame = key
        print(f"known finding {error} in {frame}: {count} inputs", flush=True)


def tolerate_known(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        try:
            target(data)
        except Exception as err:
            if not is_known(err):
                raise
            key = signature(err)
            known_counts[key] += 1
            _report_known(key)

    return run


def main() -> None:
    target = sys.argv.pop(1)
    # The services log every rejected input; the fuzzer's output would drown.
    logging.disable(logging.CRITICAL)
    with atheris.instrument_imports(include=["services", "smimegw", "schemas"]):
        module = importlib.import_module(f"fuzz.{target}")
    atheris.Setup(sys.argv, tolerate_known(module.test_one_input))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
