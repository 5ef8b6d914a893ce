"""The outgoing gateway fixture, shared with tests/outgoing."""

from tests.outgoing.conftest import outgoing

__all__ = ["outgoing"]
