"""Resizing a window of a plane on the whole plane's pixel grid gives what resizing the whole
plane gives (block-wise segmentation depends on it)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.diameter import scaled_shape
from napari_unet.engine.resample import (
    PlaneWindow,
    resize_from_plane_grid,
    resize_stack,
    resize_to_plane_grid,
)

SHAPE = (203, 187)
REGIONS = [(0, 90, 0, 100), (50, 203, 40, 187), (30, 150, 20, 170)]


def _inside(region, margin):
    """Slices of a window's values that lie ``margin`` pixels from the cut edges (the plane's
    own edges are kept)."""
    r0, r1, c0, c1 = region
    rows = slice(0 if r0 == 0 else margin, None if r1 == SHAPE[0] else -margin)
    cols = slice(0 if c0 == 0 else margin, None if c1 == SHAPE[1] else -margin)
    return (slice(None), slice(None), rows, cols)


@pytest.mark.parametrize("factor", [0.41, 0.63, 1.37, 2.2])
@pytest.mark.parametrize("region", REGIONS)
def test_window_resizing_equals_whole_plane_resizing(factor, region):
    rng = np.random.default_rng(0)
    image = rng.random((1, 2, *SHAPE)).astype(np.float32)
    scaled = scaled_shape(SHAPE, factor)
    window = PlaneWindow(SHAPE, scaled, region)
    r0, r1, c0, c1 = region
    j0, j1, k0, k1 = window.window

    whole = resize_stack(image, scaled, mode="reflect")
    part = resize_to_plane_grid(image[..., r0:r1, c0:c1], window, mode="reflect")
    expected = whole[..., j0:j1, k0:k1]
    assert part.shape == expected.shape
    np.testing.assert_allclose(part[_inside(region, 8)], expected[_inside(region, 8)], atol=1e-6)

    back_whole = resize_stack(whole, SHAPE, mode="edge")[..., r0:r1, c0:c1]
    back = resize_from_plane_grid(expected, window, mode="edge")
    assert back.shape == back_whole.shape
    inside = _inside(region, 24)
    np.testing.assert_allclose(back[inside], back_whole[inside], atol=1e-6)


def test_window_start_is_aligned_to_the_pooling_grid():
    window = PlaneWindow((500, 500), (750, 750), (101, 400, 0, 333), align=16)
    j0, j1, k0, _ = window.window
    assert j0 % 16 == 0 and k0 == 0
    # every scaled pixel of the window sits inside the region
    assert (j0 + 0.5) * 500 / 750 - 0.5 >= 101 and (j1 - 0.5) * 500 / 750 - 0.5 <= 399


def test_shape_mismatch_is_refused():
    window = PlaneWindow(SHAPE, (100, 100), (0, 50, 0, 50))
    with pytest.raises(ValueError, match="region of shape"):
        resize_to_plane_grid(np.zeros((1, 1, 40, 50), np.float32), window, mode="reflect")
