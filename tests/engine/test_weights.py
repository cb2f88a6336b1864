"""Separation borders, class targets, annotation masks and the paper's weight map (eq. 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.engine.weights import (
    annotation_mask,
    border_distances,
    class_targets,
    separation_borders,
    training_targets,
    weight_map,
)


@pytest.fixture
def two_squares() -> np.ndarray:
    """Two touching 4 x 4 squares: cell 1 at rows 2-5, columns 2-5; cell 2 at columns 6-9."""
    lab = np.zeros((12, 14), np.int32)
    lab[2:6, 2:6] = 1
    lab[2:6, 6:10] = 2
    return lab


def _term(d1: float, d2: float, w0: float = 10.0, sigma: float = 5.0) -> float:
    return w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def test_separation_borders_two_squares(two_squares):
    expected = np.zeros_like(two_squares, bool)
    expected[2:6, 5:7] = True  # both sides of the contact
    np.testing.assert_array_equal(separation_borders(two_squares), expected)
    np.testing.assert_array_equal(separation_borders(two_squares, connectivity=1), expected)


def test_separation_borders_diagonal_contact_depends_on_connectivity():
    lab = np.zeros((6, 6), np.int32)
    lab[1:3, 1:3] = 1
    lab[3:5, 3:5] = 2  # touches cell 1 only at a corner
    assert not separation_borders(lab, connectivity=1).any()
    corner = separation_borders(lab, connectivity=2)
    assert np.argwhere(corner).tolist() == [[2, 2], [3, 3]]


def test_class_targets_two_squares(two_squares):
    target = class_targets(two_squares)
    assert target.dtype == np.int64
    expected = np.zeros_like(target)
    expected[2:6, 2:10] = 2  # rims and ridge
    expected[3:5, 3:5] = 1  # interior of cell 1
    expected[3:5, 7:9] = 1  # interior of cell 2
    np.testing.assert_array_equal(target, expected)
    # the interiors of touching cells are separate components, even with 8-connectivity
    _, n = ndi.label(target == 1, structure=np.ones((3, 3)))
    assert n == 2


def test_class_targets_ridge_only_and_two_classes(two_squares):
    ridge_only = class_targets(two_squares, border_width=0)
    assert set(np.unique(ridge_only[2:6, 5:7]).tolist()) == {2}
    assert (ridge_only[2:6, 2:5] == 1).all() and (ridge_only[2:6, 7:10] == 1).all()
    two = class_targets(two_squares, n_classes=2)
    expected = (two_squares > 0).astype(np.int64)
    expected[2:6, 5:7] = 0
    np.testing.assert_array_equal(two, expected)
    _, n = ndi.label(two == 1, structure=np.ones((3, 3)))
    assert n == 2


def test_weight_map_hand_computed(two_squares):
    wm = weight_map(two_squares)
    for field in (wm.total, wm.class_term, wm.border_term):
        assert field.dtype == np.float32 and field.shape == two_squares.shape
    # distances are to the cells without their ridge: cell 1 keeps columns 2-4, cell 2 columns 7-9
    assert wm.border_term[3, 5] == pytest.approx(_term(1, 2), rel=1e-5)  # ridge, d1=1, d2=2
    assert wm.border_term[3, 6] == pytest.approx(_term(1, 2), rel=1e-5)
    assert wm.border_term[1, 5] == pytest.approx(_term(math.sqrt(2), math.sqrt(5)), rel=1e-5)
    assert wm.border_term[3, 2] == pytest.approx(_term(0, 5), rel=1e-5)  # rim of cell 1, far side
    assert wm.border_term[7, 0] == pytest.approx(
        _term(math.hypot(2, 2), math.hypot(2, 7)), rel=1e-5
    )
    assert wm.border_term[3, 3] == 0  # cell interior: no border term
    # class term: 8 interior, 24 border, 136 background pixels out of 168
    n = two_squares.size
    assert wm.class_term[3, 3] == pytest.approx(n / (3 * 8))
    assert wm.class_term[2, 2] == pytest.approx(n / (3 * 24))
    assert wm.class_term[0, 0] == pytest.approx(n / (3 * 136))
    np.testing.assert_allclose(wm.total, wm.class_term + wm.border_term, rtol=1e-6)


def test_weight_map_w0_and_sigma_are_used(two_squares):
    wm = weight_map(two_squares, w0=3.0, sigma=2.0, class_balance=False)
    assert wm.border_term[3, 5] == pytest.approx(_term(1, 2, w0=3.0, sigma=2.0), rel=1e-5)
    assert (wm.class_term == 1).all()
    assert not weight_map(two_squares, w0=0.0).border_term.any()


def test_class_balance_equalises_classes(nuclei):
    _, labels = nuclei
    mask = np.zeros(labels.shape, bool)
    mask[10:80, 5:100] = True
    wm = weight_map(labels, mask=mask)
    target = class_targets(labels)
    inside = wm.class_term[mask]
    assert inside.mean() == pytest.approx(1.0, rel=1e-5)
    totals = [wm.class_term[mask & (target == k)].sum() for k in range(3)]
    np.testing.assert_allclose(totals, mask.sum() / 3, rtol=1e-4)
    assert not wm.class_term[~mask].any() and not wm.total[~mask].any()
    assert not wm.border_term[~mask].any()


def test_border_term_is_large_between_cells_and_small_elsewhere(nuclei):
    _, labels = nuclei
    wm = weight_map(labels)
    ridge = separation_borders(labels)
    assert ridge.any()
    far = ndi.distance_transform_edt(labels == 0) > 15
    assert wm.border_term[ridge].mean() > 5.0  # a 2-px ridge: d1 + d2 = 3 gives 8.35
    assert wm.border_term[far].max() < 0.2
    assert not wm.border_term[class_targets(labels) == 1].any()


def test_one_cell_and_no_cell():
    empty = np.zeros((20, 30), np.int32)
    wm = weight_map(empty)
    assert (wm.total == 1).all() and (wm.class_term == 1).all() and not wm.border_term.any()
    assert not class_targets(empty).any()

    one = empty.copy()
    one[5:12, 8:16] = 4
    wm = weight_map(one)
    assert not wm.border_term.any()  # no second cell: d2 is infinite
    assert np.isfinite(wm.total).all()
    assert wm.class_term.mean() == pytest.approx(1.0, rel=1e-5)


def _brute_force_border_term(labels, *, w0, sigma, target):
    cells = np.where(separation_borders(labels), 0, labels)
    ids = [i for i in np.unique(cells) if i]
    dist = np.stack([ndi.distance_transform_edt(cells != i) for i in ids])  # full image per cell
    dist.sort(axis=0)
    term = w0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * sigma**2))
    return np.where(target != 1, term, 0.0)


def test_weight_map_matches_brute_force_within_the_stated_bound(nuclei):
    _, labels = nuclei
    target = class_targets(labels)
    exact = _brute_force_border_term(labels, w0=10.0, sigma=5.0, target=target)
    default = weight_map(labels).border_term
    assert np.abs(default - exact).max() <= 10.0 * math.exp(-(4.0**2) / 2) + 1e-5
    full = weight_map(labels, truncate=math.inf).border_term
    np.testing.assert_allclose(full, exact, atol=1e-5)
    # a short cutoff really cuts (so this comparison can fail) and still keeps to its bound
    short = weight_map(labels, truncate=1.5).border_term
    error = np.abs(short - exact).max()
    assert 0.1 < error <= 10.0 * math.exp(-(1.5**2) / 2) + 1e-5


def test_border_distances_exact_within_cutoff(nuclei):
    _, labels = nuclei
    d1, d2 = border_distances(labels, cutoff=6.0)
    ids = [i for i in np.unique(labels) if i]
    dist = np.sort(np.stack([ndi.distance_transform_edt(labels != i) for i in ids]), axis=0)
    near = dist[1] <= 6.0
    np.testing.assert_allclose(d1[near], dist[0][near], atol=1e-5)
    np.testing.assert_allclose(d2[near], dist[1][near], atol=1e-5)
    assert (d2[~near] >= 6.0).all()


def test_sparse_ids_give_the_same_map(two_squares):
    sparse = np.where(two_squares == 2, 10**9, two_squares).astype(np.int64)
    np.testing.assert_allclose(weight_map(sparse).total, weight_map(two_squares).total)
    top = np.where(two_squares == 2, 65535, two_squares).astype(np.uint16)  # the dtype's maximum
    np.testing.assert_array_equal(separation_borders(top), separation_borders(two_squares))
    np.testing.assert_allclose(weight_map(top).total, weight_map(two_squares).total)


def test_annotation_mask():
    labels = np.zeros((30, 30), np.int32)
    labels[20:24, 20:24] = 3  # painted outside any region
    assert annotation_mask(labels).all()
    regions = np.zeros(labels.shape, np.uint8)
    regions[0:10, 0:10] = 1
    mask = annotation_mask(labels, regions)
    assert mask.dtype == bool
    assert mask[0:10, 0:10].all()
    assert mask[18:26, 18:26].all()  # the cell grown by 2 px
    assert not mask[17, 17] and not mask[26, 26] and not mask[15, 5]
    assert mask.sum() == 100 + 64


def test_training_targets_ignores_unannotated_pixels():
    labels = np.zeros((40, 40), np.int32)
    labels[5:12, 5:12] = 1
    labels[5:12, 12:19] = 2
    labels[30:35, 30:35] = 3
    regions = np.zeros(labels.shape, bool)
    regions[0:25, 0:25] = True
    target, weights, wm = training_targets(labels, regions)
    assert target.dtype == np.int64 and weights.dtype == np.float32
    assert weights is wm.total
    mask = annotation_mask(labels, regions)
    assert (weights[mask] > 0).all() and not weights[~mask].any()
    assert weights[8, 11] > weights[8, 8]  # the ridge between cells 1 and 2 outweighs an interior
    np.testing.assert_array_equal(target, class_targets(labels))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        weight_map(np.zeros((2, 3, 4), np.int32))
    with pytest.raises(TypeError, match="integer"):
        class_targets(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="n_classes"):
        class_targets(np.zeros((4, 4), np.int32), n_classes=4)
