"""Elastic deformation and the Augmenter: aligned arrays, label-preserving, seedable."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.augment import Augmenter, displacement_field, elastic_deform
from napari_unet.engine.weights import training_targets


@pytest.fixture
def sample(nuclei):
    image, labels = nuclei
    image = (image.astype(np.float32) / 4000.0).astype(np.float32)
    _, weights, _ = training_targets(labels)
    mask = np.zeros(labels.shape, bool)
    mask[:, :80] = True
    return image, labels, weights, mask


def test_elastic_keeps_labels_integer_and_ids(sample):
    image, labels, weights, mask = sample
    out = elastic_deform([image, labels, weights, mask], sigma=10.0, rng=3)
    img2, lab2, w2, m2 = out
    assert img2.dtype == np.float32 and lab2.dtype == labels.dtype and m2.dtype == bool
    assert all(a.shape == labels.shape for a in out)
    ids = set(np.unique(labels).tolist())
    new_ids = set(np.unique(lab2).tolist())
    assert new_ids <= ids  # nearest interpolation invents no id
    assert len(new_ids) >= len(ids) - 2  # and loses at most cells pushed off the edge
    assert set(np.unique(w2).tolist()) <= set(np.unique(weights).tolist())
    assert not np.array_equal(lab2, labels)  # it did deform


def test_elastic_keeps_image_and_labels_aligned(sample):
    _, labels, _, _ = sample
    cells = (labels > 0).astype(np.float32)
    img2, lab2 = elastic_deform([cells, labels], sigma=10.0, rng=5)
    agree = (img2 > 0.5) == (lab2 > 0)
    assert agree.mean() > 0.98
    # and a shifted label image would agree clearly less: the check can fail
    assert ((img2 > 0.5) == (np.roll(lab2, 3, axis=1) > 0)).mean() < agree.mean() - 0.03


def test_elastic_identity_at_zero_strength(sample):
    arrays = list(sample)
    out = elastic_deform(arrays, sigma=0.0, rng=1)
    for a, b in zip(arrays, out, strict=True):
        np.testing.assert_array_equal(a, b)
        assert b is not a
    # a vanishing deformation resamples at the pixel centres: labels exact, image nearly so
    img2, lab2 = elastic_deform(arrays[:2], sigma=1e-4, rng=1)
    np.testing.assert_array_equal(lab2, arrays[1])
    np.testing.assert_allclose(img2, arrays[0], atol=1e-4)


def test_elastic_reproducible_from_seed(sample):
    a = elastic_deform(list(sample), rng=11)
    b = elastic_deform(list(sample), rng=np.random.default_rng(11))
    c = elastic_deform(list(sample), rng=12)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_displacement_field_statistics():
    rng = np.random.default_rng(0)
    corners = np.array([displacement_field((9, 9), sigma=10.0, rng=rng)[:, 0, -1] for _ in range(400)])
    assert corners.std() == pytest.approx(10.0, rel=0.1)  # the knots carry N(0, 10 px) vectors
    field = displacement_field((64, 64), sigma=10.0, rng=1)
    assert np.abs(np.diff(field, axis=-1)).max() < 2.0  # smooth: no pixel-to-pixel jumps


def test_augmenter_identity_at_zero_strength(sample):
    image, labels, weights, mask = sample
    out = Augmenter(strength=0.0, rng=0)(image, labels, weights, mask)
    for a, b in zip((image, labels, weights, mask), out, strict=True):
        np.testing.assert_array_equal(a, b)
    img, lab, w, m = Augmenter(strength=0.0)(image, labels, out_shape=(64, 64))
    np.testing.assert_array_equal(img, image[16:80, 32:96])
    np.testing.assert_array_equal(lab, labels[16:80, 32:96])
    assert w is None and m is None


def test_augmenter_full_keeps_everything_consistent(sample):
    image, labels, weights, mask = sample
    aug = Augmenter(rng=4)
    for _ in range(3):
        img, lab, w, m = aug(image, labels, weights, mask)
        assert img.dtype == np.float32 and lab.dtype == labels.dtype
        assert w.dtype == np.float32 and m.dtype == bool
        assert img.shape == image.shape and lab.shape == labels.shape
        assert set(np.unique(lab).tolist()) <= set(np.unique(labels).tolist())
        assert set(np.unique(w).tolist()) <= set(np.unique(weights).tolist())
        assert np.isfinite(img).all()


def test_augmenter_geometry_is_shared(sample):
    """Without gray-value changes, image, labels, weights and mask all move together."""
    _, labels, _, _ = sample
    cells = (labels > 0).astype(np.float32)
    aug = Augmenter(intensity=0.0, noise=0.0, rng=8)
    for _ in range(3):
        img, lab, w, m = aug(cells, labels, cells.copy(), labels > 0)
        assert not np.array_equal(lab, labels)
        # nearest-interpolated arrays are sampled at exactly the same pixels
        np.testing.assert_array_equal(m, lab > 0)
        np.testing.assert_array_equal(w, (lab > 0).astype(np.float32))
        # the bicubic image agrees with them up to the interpolated edges
        assert ((img > 0.5) == (lab > 0)).mean() > 0.97


def test_augmenter_flips_and_rot90_are_exact_permutations(sample):
    image, labels, weights, mask = sample
    square = [a[:96, :96] for a in (image, labels, weights, mask)]
    aug = Augmenter(elastic_sigma=0.0, rotate_deg=0.0, scale=0.0, intensity=0.0, noise=0.0, rng=2)
    seen = set()
    for _ in range(12):
        out = aug(*square)
        # find which of the 8 symmetries of the square was applied to the labels ...
        matches = [
            (k, flip)
            for k in range(4)
            for flip in (False, True)
            if np.array_equal(out[1], np.rot90(square[1][:, ::-1] if flip else square[1], k))
        ]
        assert matches
        k, flip = matches[0]
        seen.add((k, flip))
        # ... and check that image, weights and mask got exactly the same one
        for a, b in zip(square, out, strict=True):
            np.testing.assert_array_equal(b, np.rot90(a[:, ::-1] if flip else a, k))
    assert len(seen) >= 3


def test_augmenter_reproducible_and_multichannel(sample):
    image, labels, weights, _ = sample
    stack = np.stack([image, 2 * image])
    a = Augmenter(rng=21)(stack, labels, weights)
    b = Augmenter(rng=21)(stack, labels, weights)
    for x, y in zip(a, b, strict=True):
        if x is None:
            assert y is None
        else:
            np.testing.assert_array_equal(x, y)
    assert a[0].shape == stack.shape and a[3] is None
    c = Augmenter(rng=22)(stack, labels, weights)
    assert not np.array_equal(a[1], c[1])


def test_augmenter_out_shape(sample):
    image, labels, weights, mask = sample
    img, lab, w, m = Augmenter(rng=0)(image, labels, weights, mask, out_shape=(48, 64))
    assert img.shape == lab.shape == w.shape == m.shape == (48, 64)


def test_spline_upsampling_interpolates_the_knots():
    from napari_unet.engine.augment import _spline_matrix

    m = _spline_matrix(9, 3)  # knots at pixels 0, 4 and 8
    np.testing.assert_allclose(m[[0, 4, 8]], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)  # constants stay constant
    np.testing.assert_allclose(m @ np.array([0.0, 1.0, 2.0]), np.linspace(0, 2, 9))  # and lines
    curved = m @ np.array([0.0, 1.0, 0.0])
    assert curved[2] > 0.5  # a spline, not linear interpolation
