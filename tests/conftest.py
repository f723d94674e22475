"""Shared test helpers: small test-time scales keep a CPU forward well under a second."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model_zoo.registry import VariantEntry, load_registry

# Test-time scale (long, short) for fast forwards; parity fixtures use the same value.
SMALL_SCALE = (512, 320)


def at_scale(entry: VariantEntry, scale: tuple[int, int] = SMALL_SCALE) -> VariantEntry:
    """The same variant with its test-time resize target replaced."""
    preprocess = dataclasses.replace(entry.arch.preprocess, scale=scale)
    return dataclasses.replace(entry, arch=dataclasses.replace(entry.arch, preprocess=preprocess))


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def registry():
    return load_registry()
