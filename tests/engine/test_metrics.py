"""Metrics against small cases computed by hand (and the Rand index against brute force)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from napari_unet.engine.metrics import (
    DEFAULT_THRESHOLDS,
    average_precision,
    evaluate,
    foreground_iou,
    match_instances,
    matching_scores,
    pixel_error,
    rand_error,
    seg_score,
)


@pytest.fixture
def two_gt_three_pred():
    """gt A (8 px) and B (8 px); pred 1 inside A (IoU 6/8), pred 2 half of B (IoU 4/8 exactly),
    pred 3 on background (a false positive)."""
    gt = np.zeros((4, 10), np.int32)
    gt[0:2, 0:4] = 1
    gt[0:2, 6:10] = 2
    pred = np.zeros((4, 10), np.uint16)
    pred[0:2, 0:3] = 1
    pred[0:2, 6:8] = 2
    pred[3, 0:5] = 3
    return pred, gt


def test_hand_computed_matching(two_gt_three_pred):
    pred, gt = two_gt_three_pred
    m = match_instances(pred, gt, threshold=0.5)
    assert (m.tp, m.fp, m.fn, m.n_pred, m.n_gt) == (2, 1, 0, 3, 2)
    assert m.pairs.tolist() == [[1, 1], [2, 2]]
    np.testing.assert_allclose(m.ious, [0.75, 0.5])
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(1.0)
    assert m.f1 == pytest.approx(0.8)
    assert m.ap == pytest.approx(2 / 3)
    assert m.mean_matched_iou == pytest.approx(0.625)

    m = match_instances(pred, gt, threshold=0.6)
    assert (m.tp, m.fp, m.fn) == (1, 2, 1)
    assert m.pairs.tolist() == [[1, 1]]
    assert m.f1 == pytest.approx(0.4)


def test_hand_computed_average_precision(two_gt_three_pred):
    pred, gt = two_gt_three_pred
    ap = average_precision(pred, gt)
    assert list(ap) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
    expected = {0.5: 2 / 3, 0.55: 1 / 4, 0.6: 1 / 4, 0.65: 1 / 4, 0.7: 1 / 4, 0.75: 1 / 4}
    expected.update({0.8: 0.0, 0.85: 0.0, 0.9: 0.0})
    for t, value in expected.items():
        assert ap[t] == pytest.approx(value), t


def test_hand_computed_pixel_metrics_and_seg(two_gt_three_pred):
    pred, gt = two_gt_three_pred
    # foreground: pred 15 px, gt 16 px, shared 10 px -> union 21; 11 of 40 pixels differ
    assert foreground_iou(pred, gt) == pytest.approx(10 / 21)
    assert pixel_error(pred, gt) == pytest.approx(11 / 40)
    # SEG: A is covered by pred 1 (6 of 8 px > half) with Jaccard 0.75; B is covered by pred 2 for
    # exactly half its pixels, which is not "more than half" -> 0. Mean over 2 gt objects.
    assert seg_score(pred, gt) == pytest.approx(0.375)


def test_evaluate_keys_and_values(two_gt_three_pred):
    pred, gt = two_gt_three_pred
    scores = evaluate(pred, gt)
    for key in (
        "ap@0.5",
        "ap@0.75",
        "ap@0.9",
        "f1@0.5",
        "precision@0.5",
        "recall@0.5",
        "seg",
        "iou",
        "pixel_error",
        "rand_error",
        "n_pred",
        "n_gt",
        "map",
    ):
        assert isinstance(scores[key], float), key
    assert scores["ap@0.5"] == pytest.approx(2 / 3)
    assert scores["ap@0.75"] == pytest.approx(1 / 4)
    assert scores["precision@0.5"] == pytest.approx(2 / 3)
    assert scores["recall@0.5"] == pytest.approx(1.0)
    assert scores["seg"] == pytest.approx(0.375)
    assert (scores["n_pred"], scores["n_gt"]) == (3.0, 2.0)
    assert (scores["tp@0.5"], scores["fp@0.5"], scores["fn@0.5"]) == (2.0, 1.0, 0.0)
    assert scores["map"] == pytest.approx((2 / 3 + 5 * 1 / 4) / 9)
    assert scores["rand_error"] == pytest.approx(rand_error(pred, gt))


def test_rand_error_two_by_two_by_hand():
    # pixels a b / c d. gt: {a,b} {c,d}; pred: {a,b,c} {d}.
    # pairs: ab agree, ac disagree, ad agree, bc disagree, bd agree, cd disagree -> 3 of 6
    gt = np.array([[1, 1], [2, 2]])
    pred = np.array([[1, 1], [1, 2]])
    assert rand_error(pred, gt) == pytest.approx(0.5)
    assert rand_error(gt, gt) == 0.0
    # renaming segments changes nothing; background counts as a segment of its own
    assert rand_error(np.array([[7, 7], [0, 0]]), gt) == 0.0
    # all one segment vs. all separate: no pair agrees
    assert rand_error(np.array([[0, 0], [0, 0]]), np.array([[1, 2], [3, 4]])) == pytest.approx(1.0)


def _rand_error_brute_force(pred, gt):
    p, g = pred.ravel(), gt.ravel()
    pairs = list(combinations(range(p.size), 2))
    disagree = sum((p[i] == p[j]) != (g[i] == g[j]) for i, j in pairs)
    return disagree / len(pairs)


def test_rand_error_matches_brute_force(rng):
    for _ in range(3):
        pred = rng.integers(0, 4, size=(5, 6))
        gt = rng.integers(0, 3, size=(5, 6))
        assert rand_error(pred, gt) == pytest.approx(_rand_error_brute_force(pred, gt))


def test_matching_is_one_to_one_and_optimal_not_greedy():
    # gt 1 = cols 0-9, gt 2 = cols 10-19; pred 1 = cols 3-14 (IoU 7/15 with gt 1, 5/17 with gt 2),
    # pred 2 = cols 0-2 (IoU 3/10 with gt 1). At threshold 0.25 greedy (best IoU first) would
    # match pred 1-gt 1 and stop at one match; the optimal assignment matches both.
    gt = np.zeros((1, 20), np.int32)
    gt[0, :10] = 1
    gt[0, 10:] = 2
    pred = np.zeros((1, 20), np.int32)
    pred[0, 3:15] = 1
    pred[0, 0:3] = 2
    m = match_instances(pred, gt, threshold=0.25)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.pairs.tolist() == [[2, 1], [1, 2]]
    np.testing.assert_allclose(m.ious, [3 / 10, 5 / 17])
    # at 0.4 only pred 1-gt 1 qualifies
    m = match_instances(pred, gt, threshold=0.4)
    assert m.pairs.tolist() == [[1, 1]]


def test_one_prediction_cannot_match_two_objects():
    # pred 1 is exactly gt 1 + gt 2, IoU 0.5 with each: only one of them may be matched
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 1]])
    m = match_instances(pred, gt, threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)


def test_large_and_sparse_ids_give_the_same_scores(two_gt_three_pred):
    pred, gt = two_gt_three_pred
    big_pred = np.where(pred > 0, pred.astype(np.uint32) * 1_000_000_007 % 2**31, 0).astype(
        np.uint32
    )
    big_gt = np.where(gt > 0, gt.astype(np.int64) + 4_000_000_000, 0)
    assert evaluate(big_pred, big_gt) == evaluate(pred, gt)


def test_empty_cases():
    empty = np.zeros((4, 4), np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 5
    both_empty = evaluate(empty, empty)
    assert both_empty["ap@0.5"] == 1.0
    assert both_empty["f1@0.9"] == 1.0
    assert both_empty["seg"] == 1.0
    assert both_empty["iou"] == 1.0
    assert both_empty["pixel_error"] == 0.0
    only_pred = evaluate(one, empty)
    assert only_pred["ap@0.5"] == 0.0
    assert only_pred["precision@0.5"] == 0.0
    assert only_pred["seg"] == 0.0
    only_gt = evaluate(empty, one)
    assert only_gt["ap@0.5"] == 0.0
    assert only_gt["recall@0.5"] == 0.0
    assert only_gt["seg"] == 0.0
    assert only_gt["iou"] == 0.0


def test_shape_mismatch_and_bad_input_raise():
    with pytest.raises(ValueError, match="same shape"):
        evaluate(np.zeros((3, 4), int), np.zeros((4, 3), int))
    with pytest.raises(ValueError, match="same shape"):
        match_instances(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="integer"):
        seg_score(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="negative"):
        rand_error(np.full((2, 2), -1), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="threshold"):
        match_instances(np.zeros((2, 2), int), np.zeros((2, 2), int), threshold=0.0)


def test_mask_keeps_objects_by_majority():
    gt = np.zeros((4, 12), np.int32)
    gt[0:2, 0:4] = 1
    pred = np.zeros((4, 12), np.int32)
    pred[0:2, 0:4] = 1  # matches gt 1
    pred[0:2, 6:9] = 2  # 6 px, 4 inside the mask -> kept, a false positive
    pred[2:4, 8:12] = 3  # 8 px, 4 inside the mask -> not a majority, dropped
    mask = np.zeros((4, 12), bool)
    mask[:, :7] = True
    mask[0:2, 7] = True
    mask[2:4, 10:12] = True
    scores = evaluate(pred, gt, mask=mask)
    assert (scores["n_pred"], scores["tp@0.5"], scores["fp@0.5"]) == (2.0, 1.0, 1.0)
    assert scores["ap@0.5"] == pytest.approx(0.5)
    # pixel metrics use the masked pixels only: 4 of pred 2 and 4 of pred 3 are wrong
    assert scores["pixel_error"] == pytest.approx(8 / mask.sum())
    unmasked = evaluate(pred, gt)
    assert unmasked["n_pred"] == 3.0


@pytest.mark.parametrize(("dtype", "base"), [(np.uint64, 2**63), (np.int64, 2**62)])
def test_a_stack_with_huge_ids_is_scored_like_small_ids(two_gt_three_pred, dtype, base):
    """Ids past 2**62 in a stack are only names: they were offset plane by plane and wrapped
    past int64 into 'the prediction has negative labels'."""
    pred, gt = (np.stack([a, a, a]) for a in two_gt_three_pred)
    huge, huge_gt = (np.where(a > 0, a.astype(dtype) + dtype(base), 0).astype(dtype) for a in (pred, gt))
    assert evaluate(huge, huge_gt) == evaluate(pred, gt)


def test_stack_is_scored_plane_by_plane():
    gt = np.zeros((2, 6, 6), np.int32)
    gt[0, 1:4, 1:4] = 1
    pred = np.zeros((2, 6, 6), np.int32)
    pred[0, 1:4, 1:4] = 1
    pred[1, 1:4, 1:4] = 1  # same id in the next plane, where the gt is empty: a false positive
    scores = evaluate(pred, gt)
    assert (scores["tp@0.5"], scores["fp@0.5"], scores["fn@0.5"]) == (1.0, 1.0, 0.0)
    assert scores["ap@0.5"] == pytest.approx(0.5)
    # as one 3-D volume, the 18-voxel pred would match the 9-voxel gt at IoU 0.5
    assert match_instances(pred, gt, threshold=0.5).tp == 1
    assert match_instances(pred, gt, threshold=0.5).fp == 0
    assert scores["rand_error"] == pytest.approx((0.0 + rand_error(pred[1], gt[1])) / 2)
    assert scores["pixel_error"] == pytest.approx(9 / 72)
    # a (Y, X) mask applies to every plane
    mask = np.zeros((6, 6), bool)
    mask[:, :1] = True
    masked = evaluate(pred, gt, mask=mask)
    assert (masked["n_pred"], masked["n_gt"]) == (0.0, 0.0)


def test_matching_scores_shares_one_table(two_gt_three_pred):
    pred, gt = two_gt_three_pred
    scores = matching_scores(pred, gt, thresholds=DEFAULT_THRESHOLDS)
    for t, m in scores.items():
        single = match_instances(pred, gt, threshold=t)
        assert (m.tp, m.fp, m.fn) == (single.tp, single.fp, single.fn)


def test_size_ratio_is_the_median_area_ratio_of_matched_objects():
    from napari_unet.engine.metrics import size_ratio

    gt = np.zeros((40, 40), np.int32)
    gt[2:12, 2:12] = 1  # 100 px
    gt[20:30, 20:30] = 2
    gt[2:6, 30:34] = 3  # no match: left out
    pred = np.zeros_like(gt)
    pred[1:12, 1:12] = 7  # 121 px: 1.21
    pred[21:30, 21:30] = 8  # 81 px: 0.81
    pred[20:31, 20:21] = 9  # a sliver: matches nothing
    assert size_ratio(pred, gt) == pytest.approx((1.21 + 0.81) / 2)
    grown = np.where(pred == 8, 0, pred)
    assert size_ratio(grown, gt) == pytest.approx(1.21)
    assert np.isnan(size_ratio(np.zeros_like(gt), gt))


def test_matched_pairs_keep_uint64_ids_past_int64(two_gt_three_pred):
    """The pairs held ids as int64, so a uint64 id of 2**63 and more came out negative (-2**63 + 1
    for 2**63 + 1); they hold the real ids now, uint64 when one does not fit int64."""
    pred, gt = two_gt_three_pred
    base = np.uint64(2**63)
    huge = np.where(pred > 0, pred.astype(np.uint64) + base, 0).astype(np.uint64)
    m = match_instances(huge, gt, threshold=0.5)
    assert m.pairs.dtype == np.uint64
    assert m.pairs.tolist() == [[2**63 + 1, 1], [2**63 + 2, 2]]
    huge_gt = np.where(gt > 0, gt.astype(np.uint64) + base, 0).astype(np.uint64)
    assert match_instances(pred, huge_gt, threshold=0.5).pairs.tolist() == [
        [1, 2**63 + 1], [2, 2**63 + 2]
    ]
    top = np.where(pred > 0, np.uint64(2**64 - 4) + pred.astype(np.uint64), 0).astype(np.uint64)
    assert matching_scores(top, huge_gt)[0.5].pairs.tolist() == [
        [2**64 - 3, 2**63 + 1], [2**64 - 2, 2**63 + 2]
    ]
    # ids that fit int64 stay int64, as before
    assert match_instances(pred.astype(np.uint64), gt, threshold=0.5).pairs.dtype == np.int64


def test_size_ratio_of_uint64_ids_past_int64_is_their_own():
    """uint64 ids of 2**63 and more are int64 in the matched pairs, wrapped negative: their
    areas were looked up in the unsigned order and another object's area was taken (0.375 for
    1.125 here)."""
    from napari_unet.engine.metrics import size_ratio

    gt = np.array([[1, 1, 1, 1, 0, 0, 2, 2]], np.uint64)
    pred = np.array([[2, 2, 2, 2, 2, 0, 3, 3]], np.uint64)
    huge = np.where(pred > 0, pred + np.uint64(2**63), 0).astype(np.uint64)
    assert size_ratio(huge, gt) == size_ratio(pred, gt) == pytest.approx((1.25 + 1.0) / 2)


def _shifted_grids(side: int, cell: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A grid of touching squares and the same grid shifted by half a square: each predicted
    square overlaps four reference squares, by an IoU of about 0.14 each."""
    gt = np.zeros((side, side), np.int32)
    n = side // cell
    gt[: n * cell, : n * cell] = np.arange(1, n * n + 1).reshape(n, n).repeat(cell, 0).repeat(cell, 1)
    return np.roll(gt, (cell // 2, cell // 2), axis=(0, 1)), gt


def test_a_low_threshold_on_thousands_of_touching_objects_builds_no_dense_matrix(monkeypatch):
    """Below IoU 0.5 a grid of touching objects is one connected group; it was matched on a
    dense (n_pred x n_gt) matrix (20,000 objects: two 3 GB arrays and a cubic solve). Now large
    groups are matched on their sparse graph, with the same number of matches and total IoU."""
    import napari_unet.engine.matching as matching

    pred, gt = _shifted_grids(1020)  # 2,601 objects, one group at threshold 0.1
    cells = []
    real = matching.linear_sum_assignment

    def spy(weight, **kwargs):
        cells.append(weight.size)
        return real(weight, **kwargs)

    monkeypatch.setattr(matching, "linear_sum_assignment", spy)
    sparse_result = match_instances(pred, gt, threshold=0.1)
    assert max(cells, default=0) <= 1_000_000
    monkeypatch.setattr(matching, "_DENSE_CELLS", 10**12)  # the dense solve, for reference
    dense_result = match_instances(pred, gt, threshold=0.1)
    assert sparse_result.tp == dense_result.tp == 2601
    assert sparse_result.ious.sum() == pytest.approx(dense_result.ious.sum())
