"""Matching predicted to ground-truth objects one to one, and the scores that follow from it:
precision, recall, F1 and AP at IoU thresholds (the conventions of
:mod:`napari_unet.engine.metrics`, which re-exports these names)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from napari_unet.engine._overlaps import _check_pair, _Overlaps, _overlaps, _safe_ratio, _table

#: IoU thresholds 0.5, 0.55, ..., 0.9 used for AP by default.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching of predicted to ground-truth objects at one IoU threshold.

    Attributes
    ----------
    threshold : the IoU a pair needs to count as a match (``iou >= threshold``).
    tp, fp, fn : matched pairs, unmatched predictions, unmatched ground-truth objects.
    n_pred, n_gt : objects in the prediction and in the ground truth.
    pairs : (tp, 2), the matched ``(pred id, gt id)`` pairs, sorted by gt id: int64, or uint64
        when an id of either image is 2**63 or more (the ids as they are in the images).
    ious : (tp,) float64, the IoU of each matched pair.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    n_pred: int
    n_gt: int
    pairs: np.ndarray = field(repr=False)
    ious: np.ndarray = field(repr=False)

    @property
    def _both_empty(self) -> bool:
        return self.n_pred == 0 and self.n_gt == 0

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``."""
        return _safe_ratio(self.tp, self.tp + self.fp, both_empty=self._both_empty)

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``."""
        return _safe_ratio(self.tp, self.tp + self.fn, both_empty=self._both_empty)

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)``, the harmonic mean of precision and recall."""
        return _safe_ratio(
            2 * self.tp, 2 * self.tp + self.fp + self.fn, both_empty=self._both_empty
        )

    @property
    def ap(self) -> float:
        """``tp / (tp + fp + fn)``: the "average precision" of the 2018 Data Science Bowl,
        StarDist and Cellpose at this threshold."""
        return _safe_ratio(self.tp, self.tp + self.fp + self.fn, both_empty=self._both_empty)

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the matched pairs (0.0 without matches, 1.0 when both are empty)."""
        if self._both_empty:
            return 1.0
        return float(self.ious.mean()) if self.tp else 0.0


#: Above this many (pred, gt) cells a group is matched on its sparse graph, not a dense matrix.
_DENSE_CELLS = 1_000_000


def _sparse_assignment(
    r: np.ndarray, c: np.ndarray, iou: np.ndarray, n_rows: int, n_cols: int
) -> np.ndarray:
    """Indices into the ``(r, c, iou)`` candidate pairs of a one-to-one assignment with the most
    pairs, then the largest total IoU: what the dense ``linear_sum_assignment`` gives, on the
    sparse graph. Below a threshold of 0.5 an object may overlap several others enough, and a
    grid of 20,000 touching objects is then one group: its dense matrix took gigabytes.

    Every row also gets a private dummy column that stands for "unmatched", so a full matching
    of the rows always exists; costs are ``top - value`` with ``value = big + iou`` for a real
    pair and 0 for a dummy, all positive (stored zeros would be no edge)."""
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    big = min(n_rows, n_cols) + 1.0
    top = big + 2.0
    rows = np.concatenate([r, np.arange(n_rows)])
    cols = np.concatenate([c, n_cols + np.arange(n_rows)])
    cost = np.concatenate([top - (big + iou), np.full(n_rows, top)])
    graph = sparse.csr_matrix((cost, (rows, cols)), shape=(n_rows, n_cols + n_rows))
    _, col_of_row = min_weight_full_bipartite_matching(graph)
    lookup = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(r, c, strict=True))}
    return np.array(
        [lookup[(row, int(col))] for row, col in enumerate(col_of_row) if col < n_cols], np.int64
    )


def _match(ov: _Overlaps, threshold: float) -> Matching:
    n_pred, n_gt = ov.pred_ids.size, ov.gt_ids.size
    cand = ov.iou >= threshold
    rows, cols, iou = ov.rows[cand], ov.cols[cand], ov.iou[cand]
    chosen = np.zeros(rows.size, bool)
    if rows.size:
        # Solve each connected component of the bipartite candidate graph on its own; with
        # threshold > 0.5 every component is a single pair.
        graph = sparse.coo_matrix(
            (np.ones(rows.size), (rows, cols + n_pred)), shape=(n_pred + n_gt,) * 2
        )
        _, comp = connected_components(graph, directed=False)
        pair_comp = comp[rows]
        order = np.argsort(pair_comp, kind="stable")
        bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
        for group in np.split(order, bounds):
            if group.size == 1:
                chosen[group] = True
                continue
            r_ids, r_loc = np.unique(rows[group], return_inverse=True)
            c_ids, c_loc = np.unique(cols[group], return_inverse=True)
            if r_ids.size * c_ids.size > _DENSE_CELLS:
                chosen[group[_sparse_assignment(r_loc, c_loc, iou[group], r_ids.size, c_ids.size)]] = True
                continue
            # maximise the number of matches first, then their total IoU
            big = min(r_ids.size, c_ids.size) + 1.0
            weight = np.zeros((r_ids.size, c_ids.size))
            weight[r_loc, c_loc] = big + iou[group]
            lookup = -np.ones((r_ids.size, c_ids.size), np.int64)
            lookup[r_loc, c_loc] = group
            rr, cc = linear_sum_assignment(weight, maximize=True)
            picked = lookup[rr, cc]
            chosen[picked[picked >= 0]] = True
    rows, cols, iou = rows[chosen], cols[chosen], iou[chosen]
    order = np.argsort(cols, kind="stable")
    # uint64 when either image holds an id past int64 (ids are never negative), else int64
    wide = np.uint64 in (ov.pred_ids.dtype, ov.gt_ids.dtype)
    id_type = np.uint64 if wide else np.int64
    pairs = np.stack(
        [ov.pred_ids[rows[order]].astype(id_type), ov.gt_ids[cols[order]].astype(id_type)], axis=1
    ).reshape(-1, 2)
    tp = int(rows.size)
    return Matching(
        threshold=float(threshold),
        tp=tp,
        fp=n_pred - tp,
        fn=n_gt - tp,
        n_pred=n_pred,
        n_gt=n_gt,
        pairs=pairs,
        ious=iou[order].astype(np.float64),
    )


def match_instances(pred: np.ndarray, gt: np.ndarray, *, threshold: float = 0.5) -> Matching:
    """Match predicted to ground-truth objects one-to-one at an IoU threshold.

    A pair can match when its IoU is at least ``threshold``. Among those pairs a one-to-one
    assignment is chosen that maximises the number of matches and, among assignments with as
    many matches, the total IoU (:func:`scipy.optimize.linear_sum_assignment` on each connected
    group of candidate pairs; a group of over a million cells with
    :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching` on its sparse graph, as
    below IoU 0.5 thousands of touching objects form one group). For ``threshold > 0.5`` each object has at most one candidate, so
    the matching is unique.

    Parameters
    ----------
    pred, gt : (...) integer arrays of the same shape; 0 is background.
    threshold : IoU threshold in (0, 1].

    Returns
    -------
    Matching
        ``tp``, ``fp``, ``fn``, the matched pairs and their IoUs, and ``precision``, ``recall``,
        ``f1``, ``ap`` and ``mean_matched_iou``.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2, 2]])
    >>> pred = np.array([[1, 1, 0, 0, 0, 3]])
    >>> m = match_instances(pred, gt, threshold=0.5)
    >>> m.tp, m.fp, m.fn, m.pairs.tolist()
    (1, 1, 1, [[1, 1]])
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    pred, gt = _check_pair(pred, gt)
    return _match(_overlaps(_table(pred, gt)), threshold)


def matching_scores(
    pred: np.ndarray, gt: np.ndarray, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[float, Matching]:
    """:func:`match_instances` at several thresholds, sharing one contingency table.

    Returns
    -------
    dict mapping each threshold to its :class:`Matching` (with precision, recall, F1 and AP).
    """
    pred, gt = _check_pair(pred, gt)
    ov = _overlaps(_table(pred, gt))
    out: dict[float, Matching] = {}
    for t in thresholds:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"thresholds must be in (0, 1], got {t}")
        out[float(t)] = _match(ov, float(t))
    return out


def average_precision(
    pred: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[float, float]:
    """Average precision ``AP = TP / (TP + FP + FN)`` at each IoU threshold.

    This is the object-level score of the 2018 Data Science Bowl (Caicedo et al., Nat. Methods
    2019), also used by StarDist (Schmidt et al., MICCAI 2018) and Cellpose (Stringer et al.,
    Nat. Methods 2021); despite its name it is not the area under a precision-recall curve.
    Matching is one-to-one (:func:`match_instances`).

    Parameters
    ----------
    pred, gt : (...) integer arrays of the same shape; 0 is background.
    thresholds : IoU thresholds, by default 0.5, 0.55, ..., 0.9.

    Returns
    -------
    dict mapping each threshold (float) to AP in [0, 1]. No objects in either image gives 1.0;
    objects in only one of them give 0.0.
    """
    return {t: m.ap for t, m in matching_scores(pred, gt, thresholds=thresholds).items()}
