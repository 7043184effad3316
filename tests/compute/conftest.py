"""Fixtures shared by the compute tests (the tiny workload itself: tests/support/compute.py)."""

from __future__ import annotations

import pytest
from tests.support.compute import CORPUS_BYTES

from tessera.compute.corpus import build_stdlib_corpus


@pytest.fixture(scope="session")
def corpus() -> bytes:
    """The training text every compute test uses: deterministic, built once per session."""
    return build_stdlib_corpus(CORPUS_BYTES)
