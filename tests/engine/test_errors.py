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
