"""Shared fixtures: a results directory per test and paths of the deliberately bad plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def bad_plugins() -> Path:
    return PLUGINS / "bad_optimizers.py"
