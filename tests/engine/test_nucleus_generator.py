"""The procedural nucleus generator: reproducible, exact labels, the ranges it promises."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_unet.engine.nucleus_generator import (
    NucleusStyle,
    generate_nuclei,
    random_style,
    with_diameter,
)


def _diameters(labels: np.ndarray) -> np.ndarray:
    areas = np.bincount(labels.ravel())[1:]
    return 2 * np.sqrt(areas[areas > 0] / np.pi)


def test_same_seed_same_image_and_labels():
    a = generate_nuclei((96, 96), rng=7)
    b = generate_nuclei((96, 96), rng=7)
    c = generate_nuclei((96, 96), rng=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_dtype_and_consecutive_ids(bit_depth):
    style = NucleusStyle(diameter=16, coverage=0.4, bit_depth=bit_depth)
    image, labels = generate_nuclei((128, 128), style, rng=1)
    assert image.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, ids.size))
    assert ids.size > 10


def test_nuclei_are_brighter_than_the_background():
    image, labels = generate_nuclei((160, 160), NucleusStyle(diameter=20, dim_fraction=0), rng=2)
    inside = image[labels > 0].astype(float).mean()
    outside = image[labels == 0].astype(float).mean()
    assert inside > 1.5 * outside


@pytest.mark.parametrize("diameter", [8.0, 24.0, 80.0])
def test_the_median_diameter_follows_the_style(diameter):
    side = int(diameter * 12)
    _, labels = generate_nuclei((side, side), NucleusStyle(diameter=diameter, overlap=0.0), rng=3)
    median = float(np.median(_diameters(labels)))
    # occlusion by neighbours and the image edge make visible nuclei a little smaller
    assert 0.7 * diameter <= median <= 1.15 * diameter


def test_clusters_touch_and_random_styles_span_the_promised_ranges():
    style = NucleusStyle(diameter=20, clustering=0.95, coverage=0.45)
    _, labels = generate_nuclei((200, 200), style, rng=4)
    # touching: some pixel of one nucleus has a 4-neighbour of another nucleus
    right = (labels[:, :-1] > 0) & (labels[:, 1:] > 0) & (labels[:, :-1] != labels[:, 1:])
    assert right.sum() > 50
    styles = [random_style(seed) for seed in range(200)]
    diameters = np.array([s.diameter for s in styles])
    assert diameters.min() >= 8 and diameters.max() <= 80
    assert diameters.min() < 10 and diameters.max() > 60
    assert {s.bit_depth for s in styles} == {8, 16}
    hard = [random_style(seed, hard=True) for seed in range(50)]
    assert np.mean([s.photons for s in hard]) < np.mean([s.photons for s in styles])
    assert random_style(5, diameter=30.0).diameter == 30.0
    assert with_diameter(replace(style, blur=1.0), 80).blur == pytest.approx(2.0)


def test_too_small_an_image_is_refused():
    with pytest.raises(ValueError, match="at least 8"):
        generate_nuclei((4, 64))
