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


@pytest.fixture
def segment_calls(monkeypatch):
    """The keyword arguments of every ``napari_unet.engine.segment.iter_segment`` call, in
    order (the real function still runs)."""
    import napari_unet.engine.segment as segment_module

    calls: list[dict] = []
    real = segment_module.iter_segment

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(segment_module, "iter_segment", spy)
    return calls
