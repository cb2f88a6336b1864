"""Merge and split counts against hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.errors import merges_and_splits


def _three_cells() -> np.ndarray:
    gt = np.zeros((10, 30), np.int32)
    gt[2:8, 1:9] = 1
    gt[2:8, 11:19] = 2
    gt[2:8, 21:29] = 3
    return gt


def test_a_perfect_segmentation_has_no_merge_and_no_split():
    gt = _three_cells()
    result = merges_and_splits(gt * 7, gt)
    assert (result.merges, result.merged, result.splits, result.pieces) == (0, 0, 0, 0)


def test_one_object_over_two_cells_is_one_merge_of_two():
    gt = _three_cells()
    pred = gt.copy()
    pred[2:8, 1:19] = 9  # cells 1 and 2 and the gap between them
    result = merges_and_splits(pred, gt)
    assert (result.merges, result.merged, result.merge_ids) == (1, 2, (9,))
    assert result.splits == 0


def test_a_cell_cut_in_two_is_one_split_and_slivers_do_not_count():
    gt = _three_cells()
    pred = gt.copy()
    pred[2:8, 21:25] = 4  # cell 3 cut in two halves
    pred[2:8, 25:29] = 5
    pred[2, 1] = 6  # a one-pixel sliver of cell 1: under 20 % of it
    result = merges_and_splits(pred, gt)
    assert (result.splits, result.pieces, result.split_ids) == (1, 2, (3,))
    assert result.merges == 0


def test_a_merge_needs_half_of_each_cell():
    gt = _three_cells()
    pred = gt.copy()
    pred[2:8, 1:12] = 1  # cell 1 plus a small part of cell 2
    assert merges_and_splits(pred, gt).merges == 0


def test_stacks_and_bad_input():
    gt = np.stack([_three_cells(), _three_cells() + 3 * (_three_cells() > 0)])
    pred = gt.copy()
    pred[1, 2:8, 1:19] = 50
    assert merges_and_splits(pred, gt).merges == 1
    assert merges_and_splits(np.zeros_like(gt), gt).merges == 0
    with pytest.raises(ValueError, match="same shape"):
        merges_and_splits(gt[0], gt)
    with pytest.raises(ValueError, match="integer"):
        merges_and_splits(gt.astype(float), gt)


# -- the error map -------------------------------------------------------------------------------


def _crafted():
    """Reference: five cells. Prediction: cell 1 right, cells 2+3 merged, cell 4 split in two,
    cell 5 missed, one false object."""
    gt = np.zeros((20, 60), np.int32)
    pred = np.zeros_like(gt)
    gt[2:8, 2:8] = 1
    pred[2:8, 2:8] = 11
    gt[2:8, 12:18] = 2
    gt[2:8, 18:24] = 3
    pred[2:8, 12:24] = 12  # merge
    gt[2:8, 30:42] = 4
    pred[2:8, 30:36] = 13
    pred[2:8, 36:42] = 14  # split
    gt[12:18, 2:8] = 5  # miss
    pred[12:18, 40:46] = 15  # false positive
    return pred, gt


def test_error_map_colours_each_kind_of_error():
    from napari_unet.engine.errors import ERROR_CLASSES, error_map

    pred, gt = _crafted()
    errors = error_map(pred, gt)
    code = {name: c for c, name in ERROR_CLASSES.items()}
    assert (errors.codes[2:8, 2:8] == code["correct"]).all()
    assert (errors.codes[2:8, 12:24] == code["merge"]).all()
    assert (errors.codes[2:8, 30:42] == code["split"]).all()
    assert (errors.codes[12:18, 2:8] == code["miss"]).all()
    assert (errors.codes[12:18, 40:46] == code["false positive"]).all()
    assert (errors.codes[(pred == 0) & (gt == 0)] == 0).all()
    assert errors.counts == {
        "correct": 1,
        "false positives": 1,
        "misses": 1,
        "merges": 1,
        "merged": 2,
        "splits": 1,
        "pieces": 2,
        "predicted": 5,
        "reference": 5,
    }
    # the merge holds cell 2 at IoU exactly 0.5, a piece cell 4: 3 TP, 2 FP, 2 FN in AP@0.5
    assert errors.ap50 == pytest.approx(3 / 7)


def test_error_map_of_a_stack_sums_the_planes():
    from napari_unet.engine.errors import error_map

    pred, gt = _crafted()
    both = error_map(np.stack([pred, pred]), np.stack([gt, gt]))
    one = error_map(pred, gt)
    assert both.codes.shape == (2, *pred.shape)
    assert both.counts == {k: 2 * v for k, v in one.counts.items()}
    with pytest.raises(ValueError, match="same shape"):
        error_map(pred, gt[:5])


def test_error_map_takes_ids_of_2_to_the_40_and_more():
    """Labels with ids of 2**40 (a uint64 layer, ids from another program) made the Inspect
    panel's Show errors fail with 'out of memory': the per-id tables were as long as the largest
    id. Such ids are renumbered now; the codes and counts are those of small ids."""
    from napari_unet.engine.errors import error_map

    pred, gt = _crafted()
    expected = error_map(pred, gt)
    big_pred = np.where(pred > 0, pred.astype(np.uint64) + np.uint64(2**40), 0).astype(np.uint64)
    big_gt = np.where(gt > 0, gt.astype(np.int64) + 2**62, 0)
    found = error_map(big_pred, big_gt)
    np.testing.assert_array_equal(found.codes, expected.codes)
    assert found.counts == expected.counts and found.ap50 == expected.ap50
    full = np.full((4, 4), 2**40, np.uint64)  # no background: no object becomes background
    full[:, 2:] += np.uint64(1)
    assert error_map(full, full).counts["correct"] == 2
    big_gt[0, 0] = -1
    with pytest.raises(ValueError, match="negative labels"):
        error_map(big_pred.astype(np.int64), big_gt)


def test_error_map_scores_each_plane_in_the_labels_own_axes():
    from napari_unet.engine.errors import error_map

    pred, gt = _crafted()
    second = np.zeros_like(pred)  # the second plane: one missed cell only
    second_gt = np.zeros_like(gt)
    second_gt[4:10, 4:10] = 9
    yxz_pred = np.stack([pred, second], axis=-1)
    yxz_gt = np.stack([gt, second_gt], axis=-1)
    found = error_map(yxz_pred, yxz_gt, axes="YXZ")
    planes = error_map(np.stack([pred, second]), np.stack([gt, second_gt]))
    assert found.codes.shape == yxz_pred.shape
    np.testing.assert_array_equal(np.moveaxis(found.codes, -1, 0), planes.codes)
    assert found.counts == planes.counts and found.ap50 == planes.ap50
    assert found.counts["misses"] == 2  # one in each plane
    tzyx = error_map(yxz_pred.transpose(2, 0, 1)[None], yxz_gt.transpose(2, 0, 1)[None], axes="TZYX")
    assert tzyx.counts == planes.counts and tzyx.codes.shape == (1, 2, *pred.shape)
    with pytest.raises(ValueError, match="no channel axis"):
        error_map(yxz_pred, yxz_gt, axes="YXC")


def test_label_axes_read_a_small_last_axis_as_planes():
    from napari_unet.engine.axes import detect_label_axes

    assert detect_label_axes((64, 64)) == "YX"
    assert detect_label_axes((64, 64, 3)) == "YXZ"  # an image would be RGB: labels are planes
    assert detect_label_axes((6, 64, 64)) == "ZYX"
    assert detect_label_axes((2, 6, 64, 64)) == "TZYX"
