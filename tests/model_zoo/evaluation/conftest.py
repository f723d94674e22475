"""Fixtures of the evaluation tests: the tiny COCO set of ``tiny_coco.py`` on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_coco import TinyCoco, write_coco_root


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> TinyCoco:
    """The tiny set on disk (shared by the session: treat as read-only)."""
    return TinyCoco(write_coco_root(tmp_path_factory.mktemp("coco")))


@pytest.fixture
def fresh_coco_root(tmp_path: Path) -> Path:
    """The tiny set in a per-test directory, for tests that damage it."""
    return write_coco_root(tmp_path / "coco")
