"""Shared by the fault tests: the fault-free accuracy of the common run, computed once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def clean_accuracy_cache() -> dict[tuple[int, bool], float]:
    return {}
