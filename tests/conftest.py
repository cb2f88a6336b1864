"""Shared fixtures: small synthetic images, built in layers."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def nuclei():
    """A small (96, 128) uint16 image of touching nuclei and its int32 instance labels."""
    from napari_unet.engine.synthetic import synthetic_nuclei

    return synthetic_nuclei((96, 128), n_cells=12, diameter=16.0, rng=1)
