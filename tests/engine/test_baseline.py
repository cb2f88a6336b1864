"""The classical baseline of benchmarks/baseline.py on synthetic nuclei: right count, split pairs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.baseline import classical_segment, estimate_diameter

from napari_unet.engine.synthetic import synthetic_nuclei


def _n(labels: np.ndarray) -> int:
    return len(np.unique(labels[labels > 0]))


@pytest.mark.parametrize("seed", [1, 4, 5])
def test_finds_about_the_right_number_of_nuclei(seed):
    image, truth = synthetic_nuclei((256, 256), n_cells=20, diameter=20.0, touching=0.3, rng=seed)
    labels = classical_segment(image, diameter=20.0)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert abs(_n(labels) - _n(truth)) <= 2  # 20 nuclei, a few of them touching
    assert set(np.unique(labels)) == set(range(_n(labels) + 1))  # ids 1..n


def test_two_touching_discs_are_split():
    rows, cols = np.mgrid[0:64, 0:96]
    truth = np.zeros((64, 96), np.int32)
    truth[(rows - 32) ** 2 + (cols - 34) ** 2 <= 12**2] = 1
    truth[((rows - 32) ** 2 + (cols - 56) ** 2 <= 12**2) & (truth == 0)] = 2
    image = (1000 + 3000 * (truth > 0)).astype(np.uint16)
    labels = classical_segment(image, diameter=24.0)
    assert _n(labels) == 2  # Otsu alone gives one blob; the watershed splits it
    assert labels[32, 30] != labels[32, 60]


def test_diameter_is_estimated_when_missing():
    image, truth = synthetic_nuclei((256, 256), n_cells=20, diameter=20.0, touching=0.3, rng=4)
    assert 15.0 < estimate_diameter(image) < 25.0
    assert abs(_n(classical_segment(image)) - _n(truth)) <= 2


def test_dark_objects_and_empty_image():
    image, truth = synthetic_nuclei((128, 128), n_cells=8, diameter=16.0, touching=0.0, rng=5)
    inverted = image.max() - image
    labels = classical_segment(inverted, diameter=16.0, bright_objects=False)
    assert abs(_n(labels) - _n(truth)) <= 1
    assert not classical_segment(np.zeros((64, 64), np.uint16), diameter=10.0).any()
    with pytest.raises(ValueError, match="2-D"):
        classical_segment(np.zeros((2, 8, 8)), diameter=4.0)
