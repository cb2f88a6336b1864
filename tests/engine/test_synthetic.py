"""The synthetic nuclei generator behind the sample data and most unit tests."""

import numpy as np
import pytest

from napari_unet.engine.synthetic import synthetic_nuclei


def test_seeded_and_labels_consistent():
    a_image, a_labels = synthetic_nuclei((96, 96), n_cells=10, diameter=14.0, rng=1)
    b_image, b_labels = synthetic_nuclei((96, 96), n_cells=10, diameter=14.0, rng=1)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert a_labels.dtype == np.int32
    ids = np.unique(a_labels)[1:]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    # nuclei are brighter than the background
    assert a_image[a_labels > 0].mean() > 2 * a_image[a_labels == 0].mean()


def test_ellipsoid_profile_is_dimmer_at_the_rim():
    image, labels = synthetic_nuclei(
        (128, 128), n_cells=6, diameter=30.0, touching=0.0, noise=0.0, profile="ellipsoid", rng=2
    )
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(labels > 0, iterations=6)
    rim = (labels > 0) & ~ndi.binary_erosion(labels > 0, iterations=2)
    assert image[inner].mean() > 1.3 * image[rim].mean()
    _, flat_labels = synthetic_nuclei(
        (128, 128), n_cells=6, diameter=30.0, touching=0.0, noise=0.0, profile="flat", rng=2
    )
    np.testing.assert_array_equal(labels, flat_labels)  # the profile changes only intensities


def test_bad_profile():
    with pytest.raises(ValueError, match="profile"):
        synthetic_nuclei((32, 32), profile="cube")
