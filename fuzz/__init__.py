"""Coverage-guided fuzzing of the parsers that read hostile input (atheris).

Run every target with `python -m fuzz.run`; each target module has a
`test_one_input(data)` that raises only on a finding, so the regression tests
under tests/security replay saved inputs through the same function.
"""
