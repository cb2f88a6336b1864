"""Instance extraction from class probabilities on small synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.engine.instances import (
    as_label_dtype,
    instances_from_probabilities,
    object_confidence,
    relabel_consecutive,
)


def _two_touching_discs(shape=(40, 52), radius=10.0):
    """Two overlapping discs split along their perpendicular bisector, plus instance labels."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    d1 = np.hypot(rr - 20, cc - 16)
    d2 = np.hypot(rr - 20, cc - 34)
    labels = np.zeros(shape, np.int32)
    labels[(d1 <= radius) & (d1 <= d2)] = 1
    labels[(d2 <= radius) & (d2 < d1)] = 2
    return labels


def _probabilities(labels, *, blur=1.0):
    """Three-class probabilities: border = cell pixels next to another cell or to background."""
    padded = np.pad(labels, 1, mode="edge")
    border = np.zeros(labels.shape, bool)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        border |= padded[dr : dr + labels.shape[0], dc : dc + labels.shape[1]] != labels
    border &= labels > 0
    onehot = np.stack([labels == 0, (labels > 0) & ~border, border]).astype(np.float32)
    smooth = np.stack([ndi.gaussian_filter(c, blur) for c in onehot])
    return smooth / smooth.sum(axis=0, keepdims=True)


def _best_iou(labels, target):
    return max(
        np.count_nonzero((labels == i) & target) / np.count_nonzero((labels == i) | target)
        for i in range(1, int(labels.max()) + 1)
    )


def test_two_touching_discs_give_two_instances():
    truth = _two_touching_discs()
    # the discs touch: without the border class they would be a single object
    assert ndi.label(truth > 0)[1] == 1
    prob = _probabilities(truth)
    labels = instances_from_probabilities(prob)
    assert labels.dtype == np.int32
    assert labels.shape == truth.shape
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    for i in (1, 2):
        assert _best_iou(labels, truth == i) > 0.85


def test_min_size_drops_a_small_blob():
    truth = _two_touching_discs()
    truth[3:7, 45:49] = 3  # 16 px blob, interior 2x2 after the rim
    prob = _probabilities(truth, blur=0.5)
    assert instances_from_probabilities(prob, min_size=0).max() == 3
    kept = instances_from_probabilities(prob, min_size=30)
    assert kept.max() == 2
    assert not kept[3:7, 45:49].any()
    # ids stay consecutive after the removal
    assert sorted(np.unique(kept).tolist()) == [0, 1, 2]


def test_default_min_size_drops_specks_but_keeps_cells():
    truth = _two_touching_discs()
    prob = _probabilities(truth)
    prob[:, 2, 2] = [0.0, 1.0, 0.0]  # a one-pixel false detection
    assert instances_from_probabilities(prob, min_size=0).max() == 3
    assert instances_from_probabilities(prob).max() == 2


def test_two_class_fallback_splits_touching_discs():
    truth = _two_touching_discs()
    cell = ndi.gaussian_filter((truth > 0).astype(np.float32), 0.7)
    prob = np.stack([1.0 - cell, cell])
    labels = instances_from_probabilities(prob)
    assert labels.max() == 2
    for i in (1, 2):
        assert _best_iou(labels, truth == i) > 0.8


def test_stack_ids_are_unique_across_planes():
    truth = _two_touching_discs()
    prob = _probabilities(truth)
    stack = np.stack(
        [prob, prob[:, :, ::-1], np.stack([np.ones_like(prob[0]), 0 * prob[0], 0 * prob[0]])]
    )
    labels = instances_from_probabilities(stack)
    assert labels.shape == (3, *truth.shape)
    assert sorted(np.unique(labels[0]).tolist()) == [0, 1, 2]
    assert sorted(np.unique(labels[1]).tolist()) == [0, 3, 4]
    assert not labels[2].any()
    single = instances_from_probabilities(prob[:, :, ::-1])
    np.testing.assert_array_equal(labels[1], np.where(single > 0, single + 2, 0))


def test_empty_probabilities_give_no_objects():
    prob = np.zeros((3, 16, 16), np.float32)
    prob[0] = 1.0
    labels = instances_from_probabilities(prob)
    assert labels.shape == (16, 16)
    assert not labels.any()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="shape"):
        instances_from_probabilities(np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="float"):
        instances_from_probabilities(np.zeros((3, 8, 8), np.int64))
    with pytest.raises(ValueError, match="threshold"):
        instances_from_probabilities(np.zeros((3, 8, 8), np.float32), threshold=1.5)
    with pytest.raises(ValueError, match="differ"):
        instances_from_probabilities(np.zeros((3, 8, 8), np.float32), cell_class=2)
    with pytest.raises(ValueError, match="min_confidence"):
        instances_from_probabilities(np.zeros((3, 8, 8), np.float32), min_confidence=1.0)


def test_min_confidence_drops_a_faint_object_and_keeps_a_confident_one():
    truth = _two_touching_discs()
    prob = _probabilities(truth)
    # make disc 2 one the network half believes in: its interior probability is scaled down
    # to about 0.4 (the rest goes to the border class, so it still counts as foreground)
    faint = truth == 2
    moved = prob[1] * 0.45 * faint
    prob[1] -= moved
    prob[2] += moved
    both = instances_from_probabilities(prob)
    assert both.max() == 2
    confidence = object_confidence(both, prob)
    assert confidence.shape == (3,) and confidence[0] == 0.0
    strong, weak = sorted(confidence[1:], reverse=True)
    assert strong > 0.6 and 0.2 < weak < 0.5
    kept = instances_from_probabilities(prob, min_confidence=0.5)
    assert kept.max() == 1
    assert _best_iou(kept, truth == 1) > 0.85
    assert not kept[faint & (prob[0] < 0.5)].any()
    # 0 keeps everything, as before
    np.testing.assert_array_equal(instances_from_probabilities(prob, min_confidence=0.0), both)


def test_object_confidence_is_the_mean_interior_probability():
    labels = np.array([[0, 1, 1], [0, 3, 3]], np.int32)
    prob = np.zeros((3, 2, 3), np.float32)
    prob[1] = [[0.9, 0.2, 0.4], [0.5, 1.0, 0.0]]
    np.testing.assert_allclose(object_confidence(labels, prob), [0.0, 0.3, 0.0, 0.5])


def test_as_label_dtype():
    small = np.array([[0, 65535]], np.int32)
    assert as_label_dtype(small).dtype == np.uint16
    big = np.array([[0, 65536]], np.int64)
    out = as_label_dtype(big)
    assert out.dtype == np.uint32
    assert out.max() == 65536
    with pytest.raises(ValueError, match=">= 0"):
        as_label_dtype(np.array([-1, 2]))


def test_relabel_consecutive():
    labels, n = relabel_consecutive(np.array([[0, 7, 7], [3, 0, 100]]))
    assert n == 3
    np.testing.assert_array_equal(labels, [[0, 2, 2], [1, 0, 3]])


def test_interior_split_cuts_a_joined_interior_at_its_neck():
    # two discs of interior joined by a thin bridge, all one connected component
    rows, cols = np.mgrid[0:40, 0:70]
    interior = ((rows - 20) ** 2 + (cols - 18) ** 2 <= 12**2) | ((rows - 20) ** 2 + (cols - 50) ** 2 <= 12**2)
    interior |= (abs(rows - 20) <= 1) & (cols > 18) & (cols < 50)
    prob = np.zeros((3, 40, 70), np.float32)
    prob[0] = 1.0
    prob[:, interior] = [[0.0], [1.0], [0.0]]
    assert instances_from_probabilities(prob, min_size=0).max() == 1
    split = instances_from_probabilities(prob, min_size=0, interior_split=2.0)
    assert split.max() == 2
    assert split[20, 18] != split[20, 50]
    # a round interior is not cut, however deep the setting
    one = np.zeros((3, 40, 40), np.float32)
    one[0] = 1.0
    disc = (rows[:, :40] - 20) ** 2 + (cols[:, :40] - 20) ** 2 <= 12**2
    one[:, disc] = [[0.0], [1.0], [0.0]]
    assert instances_from_probabilities(one, min_size=0, interior_split=2.0).max() == 1


def test_background_threshold_draws_tighter_masks():
    # a disc of interior with a ring where the background probability is 0.35
    rows, cols = np.mgrid[0:40, 0:40]
    r = np.hypot(rows - 20, cols - 20)
    prob = np.zeros((3, 40, 40), np.float32)
    prob[0] = 1.0
    prob[:, r <= 8] = [[0.0], [1.0], [0.0]]
    ring = (r > 8) & (r <= 10)
    prob[:, ring] = [[0.35], [0.05], [0.6]]
    wide = instances_from_probabilities(prob, min_size=0)
    tight = instances_from_probabilities(prob, min_size=0, background_threshold=0.3)
    assert (wide > 0).sum() == (r <= 10).sum()
    assert (tight > 0).sum() == (r <= 8).sum()
    with pytest.raises(ValueError, match="background_threshold"):
        instances_from_probabilities(prob, background_threshold=1.0)


def test_holes_inside_one_object_are_filled_but_gaps_between_objects_are_not():
    from napari_unet.engine.instances import fill_holes

    labels = np.zeros((20, 30), np.int32)
    labels[2:12, 2:12] = 1
    labels[5:8, 5:8] = 0  # a nucleolus predicted as background
    labels[2:12, 14:20] = 2
    labels[2:12, 21:27] = 3
    labels[2, 20] = 2
    labels[11, 20] = 3
    labels[5:8, 20] = 0  # a gap enclosed by objects 2 and 3 together
    labels[3:5, 20] = 2
    labels[8:11, 20] = 3
    filled = fill_holes(labels)
    assert (filled[5:8, 5:8] == 1).all()
    assert (filled[5:8, 20] == 0).all()
    np.testing.assert_array_equal(filled[labels > 0], labels[labels > 0])
    no_holes = np.zeros((5, 5), np.int32)
    assert fill_holes(no_holes) is no_holes
    # the label step fills them too
    truth = _two_touching_discs()
    prob = _probabilities(truth)
    prob[:, 18:21, 14:17] = np.array([1.0, 0.0, 0.0], np.float32)[:, None, None]
    assert (instances_from_probabilities(prob, min_size=0)[18:21, 14:17] > 0).all()
