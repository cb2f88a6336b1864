"""Segmentation metrics: pixel-level, Rand, Cell Tracking Challenge SEG, and object matching.

All functions take two integer instance label images of equal shape, ``pred`` (the prediction)
and ``gt`` (the ground truth); 0 is background, every other value one object. Ids need not be
consecutive. Everything is computed from the sparse contingency table of the two label images
(how many pixels each (pred id, gt id) pair shares), in O(pixels · log pixels) time and memory
linear in the number of overlapping pairs -- never from an (n_pred × n_gt × pixels) array.

The pixel- and object-level functions (:func:`foreground_iou`, :func:`match_instances`, ...) work
on arrays of any dimension: a 3-D array is scored as one volume with 3-D objects.
:func:`evaluate` instead treats a 3-D array as a *stack of 2-D planes* (P, Y, X), the way the
widgets and the command line segment stacks; see there.

Empty cases follow one rule throughout: when neither image has an object, every score is perfect
(1.0 for IoU, SEG, precision, recall, F1 and AP; 0.0 for the errors); otherwise a ratio with a
zero denominator is 0.0. So no ground truth but some predictions gives AP 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

#: IoU thresholds 0.5, 0.55, ..., 0.9 used for AP by default.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Matching",
    "average_precision",
    "evaluate",
    "foreground_iou",
    "match_instances",
    "matching_scores",
    "pixel_error",
    "rand_error",
    "seg_score",
]


# --------------------------------------------------------------------------------------------
# helpers


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction and ground truth must have the same shape, got {pred.shape} and {gt.shape}"
        )
    for name, arr in (("prediction", pred), ("ground truth", gt)):
        if arr.dtype == bool:
            continue
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"the {name} must be an integer label image, got dtype {arr.dtype}")
        if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
            raise ValueError(
                f"the {name} has negative labels; labels must be 0 (background) or > 0"
            )
    return pred, gt


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map ``labels`` to consecutive indices.

    Returns ``ids`` (sorted unique values, int64), ``index`` (flat int64 array, ``ids[index]`` is
    the flattened input) and ``counts`` (pixels per id).
    """
    flat = labels.reshape(-1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if flat.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    top = int(flat.max())
    if top <= 4 * flat.size + 1024:
        # small ids: bincount is linear time
        counts_all = np.bincount(flat.astype(np.intp, copy=False), minlength=top + 1)
        ids = np.flatnonzero(counts_all).astype(np.int64)
        lut = np.zeros(top + 1, np.int64)
        lut[ids] = np.arange(ids.size)
        return ids, lut[flat], counts_all[ids].astype(np.int64)
    ids, index, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return ids.astype(np.int64), index.reshape(-1).astype(np.int64), counts.astype(np.int64)


@dataclass(frozen=True)
class _Table:
    """Sparse contingency table of two label images (background included as id 0)."""

    pred_ids: np.ndarray  # (m,) sorted ids present in pred, may include 0
    gt_ids: np.ndarray  # (n,)
    pred_sizes: np.ndarray  # (m,) pixels per pred id
    gt_sizes: np.ndarray  # (n,)
    rows: np.ndarray  # (k,) index into pred_ids of each non-empty cell
    cols: np.ndarray  # (k,) index into gt_ids
    counts: np.ndarray  # (k,) shared pixels
    n_pixels: int


def _table(pred: np.ndarray, gt: np.ndarray) -> _Table:
    pred_ids, pi, pred_sizes = _compact(pred)
    gt_ids, gi, gt_sizes = _compact(gt)
    n_g = max(gt_ids.size, 1)
    code = pi * n_g + gi
    if pred_ids.size * n_g <= 4 * code.size + 1024:
        dense = np.bincount(code, minlength=pred_ids.size * n_g)
        cells = np.flatnonzero(dense)
        counts = dense[cells]
    else:
        cells, counts = np.unique(code, return_counts=True)
    return _Table(
        pred_ids,
        gt_ids,
        pred_sizes,
        gt_sizes,
        (cells // n_g).astype(np.int64),
        (cells % n_g).astype(np.int64),
        counts.astype(np.int64),
        int(pred.size),
    )


@dataclass(frozen=True)
class _Overlaps:
    """Object pairs (background excluded) that share at least one pixel, with their IoU."""

    pred_ids: np.ndarray  # (n_pred,) object ids in pred, background excluded
    gt_ids: np.ndarray  # (n_gt,)
    pred_sizes: np.ndarray
    gt_sizes: np.ndarray
    rows: np.ndarray  # (k,) index into pred_ids
    cols: np.ndarray  # (k,) index into gt_ids
    inter: np.ndarray  # (k,) shared pixels
    iou: np.ndarray  # (k,) float64


def _overlaps(table: _Table) -> _Overlaps:
    p_obj = table.pred_ids != 0
    g_obj = table.gt_ids != 0
    # position of each id among the objects (-1 for background)
    p_pos = np.cumsum(p_obj) - 1
    g_pos = np.cumsum(g_obj) - 1
    keep = p_obj[table.rows] & g_obj[table.cols]
    rows = p_pos[table.rows[keep]]
    cols = g_pos[table.cols[keep]]
    inter = table.counts[keep]
    pred_sizes = table.pred_sizes[p_obj]
    gt_sizes = table.gt_sizes[g_obj]
    union = pred_sizes[rows] + gt_sizes[cols] - inter
    iou = inter / np.maximum(union, 1)
    return _Overlaps(
        table.pred_ids[p_obj],
        table.gt_ids[g_obj],
        pred_sizes,
        gt_sizes,
        rows,
        cols,
        inter,
        iou.astype(np.float64),
    )


def _safe_ratio(num: float, den: float, *, both_empty: bool) -> float:
    if both_empty:
        return 1.0
    return float(num / den) if den > 0 else 0.0


# --------------------------------------------------------------------------------------------
# pixel-level metrics


def foreground_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of the foreground (label > 0) of ``pred`` and ``gt``.

    Parameters
    ----------
    pred, gt : (...) integer arrays of the same shape; 0 is background.

    Returns
    -------
    float in [0, 1]; 1.0 when both images are all background.
    """
    pred, gt = _check_pair(pred, gt)
    p = pred != 0
    g = gt != 0
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & g)) / union


def pixel_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of pixels whose foreground/background state differs between ``pred`` and ``gt``.

    This is the "warping-free" pixel error of the ISBI 2012 EM challenge evaluated on the binary
    foreground: ``mean((pred > 0) != (gt > 0))``.

    Parameters
    ----------
    pred, gt : (...) integer arrays of the same shape; 0 is background.

    Returns
    -------
    float in [0, 1]; 0.0 for empty arrays.
    """
    pred, gt = _check_pair(pred, gt)
    if pred.size == 0:
        return 0.0
    return int(np.count_nonzero((pred != 0) != (gt != 0))) / pred.size


def rand_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Rand error: 1 − Rand index over all pairs of pixels.

    The Rand index is the fraction of pixel pairs on which the two segmentations agree (both put
    the pair in the same segment, or both in different segments). Every pixel counts and the
    background (0) is one segment of its own, as in the ISBI 2012 EM challenge's Rand error. It is
    computed from the contingency table ``n_ij`` in O(pixels)::

        agree = C(n, 2) + 2 Σ_ij C(n_ij, 2) − Σ_i C(a_i, 2) − Σ_j C(b_j, 2)

    with ``a_i``/``b_j`` the segment sizes in ``pred``/``gt`` and ``C(k, 2) = k (k − 1) / 2``.

    Parameters
    ----------
    pred, gt : (...) integer arrays of the same shape; 0 is background.

    Returns
    -------
    float in [0, 1]; 0.0 when there are fewer than two pixels.
    """
    pred, gt = _check_pair(pred, gt)
    n = pred.size
    if n < 2:
        return 0.0
    t = _table(pred, gt)

    def pairs(k: np.ndarray) -> float:
        k = k.astype(np.float64)
        return float(np.sum(k * (k - 1.0)) / 2.0)

    total = n * (n - 1) / 2.0
    same_both = pairs(t.counts)
    same_pred = pairs(t.pred_sizes)
    same_gt = pairs(t.gt_sizes)
    disagree = same_pred + same_gt - 2.0 * same_both
    return float(min(max(disagree / total, 0.0), 1.0))


# --------------------------------------------------------------------------------------------
# object-level metrics


def seg_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """The Cell Tracking Challenge SEG measure.

    For each ground-truth object ``g``, the prediction object ``p`` that covers more than half of
    ``g``'s pixels (there is at most one) is its match, scored by the Jaccard index
    ``|p ∩ g| / |p ∪ g|``; a ground-truth object without such a match scores 0. SEG is the mean
    over ground-truth objects (Maška et al., Bioinformatics 2014; Ulman et al., Nat. Methods
    2017). False-positive predictions do not lower SEG.

    Parameters
    ----------
    pred, gt : (...) integer arrays of the same shape; 0 is background.

    Returns
    -------
    float in [0, 1]. Without ground-truth objects SEG is undefined; this returns 1.0 when the
    prediction is empty too and 0.0 otherwise (the module's empty-case rule).
    """
    pred, gt = _check_pair(pred, gt)
    ov = _overlaps(_table(pred, gt))
    n_gt = ov.gt_ids.size
    if n_gt == 0:
        return 1.0 if ov.pred_ids.size == 0 else 0.0
    covers = 2 * ov.inter > ov.gt_sizes[ov.cols]
    return float(np.sum(ov.iou[covers]) / n_gt)


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching of predicted to ground-truth objects at one IoU threshold.

    Attributes
    ----------
    threshold : the IoU a pair needs to count as a match (``iou >= threshold``).
    tp, fp, fn : matched pairs, unmatched predictions, unmatched ground-truth objects.
    n_pred, n_gt : objects in the prediction and in the ground truth.
    pairs : (tp, 2) int64, the matched ``(pred id, gt id)`` pairs, sorted by gt id.
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
    pairs = np.stack([ov.pred_ids[rows[order]], ov.gt_ids[cols[order]]], axis=1).reshape(-1, 2)
    tp = int(rows.size)
    return Matching(
        threshold=float(threshold),
        tp=tp,
        fp=n_pred - tp,
        fn=n_gt - tp,
        n_pred=n_pred,
        n_gt=n_gt,
        pairs=pairs.astype(np.int64),
        ious=iou[order].astype(np.float64),
    )


def match_instances(pred: np.ndarray, gt: np.ndarray, *, threshold: float = 0.5) -> Matching:
    """Match predicted to ground-truth objects one-to-one at an IoU threshold.

    A pair can match when its IoU is at least ``threshold``. Among those pairs a one-to-one
    assignment is chosen that maximises the number of matches and, among assignments with as
    many matches, the total IoU (:func:`scipy.optimize.linear_sum_assignment` on each connected
    group of candidate pairs). For ``threshold > 0.5`` each object has at most one candidate, so
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


# --------------------------------------------------------------------------------------------
# everything at once


def _drop_outside(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero the objects of ``labels`` with at most half of their pixels inside ``mask``."""
    ids, index, sizes = _compact(labels)
    inside = np.bincount(index, weights=mask.reshape(-1).astype(np.float64), minlength=ids.size)
    keep = (2 * inside > sizes) | (ids == 0)
    return np.where(keep[index], ids[index], 0).reshape(labels.shape)


def _unique_per_plane(labels: np.ndarray) -> np.ndarray:
    """Offset the ids of each plane of a (P, Y, X) stack so that no two planes share an id."""
    out = labels.astype(np.int64)
    offset = 0
    for plane in out:
        top = int(plane.max()) if plane.size else 0
        plane[plane > 0] += offset
        offset += top
    return out


def evaluate(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Every metric of this module at once.

    Parameters
    ----------
    pred, gt : (Y, X) or (P, Y, X) integer label images of the same shape; 0 is background. A
        3-D array is a stack of independent 2-D planes (Z slices or time points): an object in one
        plane never matches one in another.
    mask : bool array of the same shape (or (Y, X) for a stack, then used for every plane);
        True marks the annotated region, e.g. from ``weights.annotation_mask``. Pixel metrics
        (``iou``, ``pixel_error``, ``rand_error``) use only the pixels inside it. Object metrics
        keep an object, whole, when more than half of its pixels lie inside and drop it
        otherwise, in the prediction and the ground truth alike. ``None`` scores everything.
    thresholds : IoU thresholds for the object metrics.

    Returns
    -------
    dict[str, float] with keys

    - ``"ap@T"``, ``"precision@T"``, ``"recall@T"``, ``"f1@T"`` for each threshold ``T``
      (formatted with ``{T:g}``: ``"ap@0.5"``, ``"ap@0.75"``, ``"ap@0.9"``), and
      ``"tp@T"``, ``"fp@T"``, ``"fn@T"`` at the first threshold;
    - ``"map"``: the mean of the AP values;
    - ``"mean_matched_iou"``: mean IoU of the pairs matched at the first threshold;
    - ``"seg"`` (:func:`seg_score`), ``"iou"`` (:func:`foreground_iou`),
      ``"pixel_error"``, ``"rand_error"``;
    - ``"n_pred"``, ``"n_gt"``: object counts after masking.

    For a stack, TP, FP and FN are summed over planes before precision, recall, F1 and AP are
    computed; SEG averages over all ground-truth objects of all planes (as the Cell Tracking
    Challenge does over frames); IoU and pixel error pool all pixels; the Rand error is the mean
    of the per-plane Rand errors (pixel pairs across planes are not compared).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> scores = evaluate(gt, gt)
    >>> scores["ap@0.5"], scores["seg"], scores["rand_error"]
    (1.0, 1.0, 0.0)
    """
    pred, gt = _check_pair(pred, gt)
    if pred.ndim not in (2, 3):
        raise ValueError(
            f"evaluate expects (Y, X) or (P, Y, X) label images, got shape {pred.shape}"
        )
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pred.shape:
            if pred.ndim == 3 and mask.shape == pred.shape[1:]:
                mask = np.broadcast_to(mask, pred.shape)
            else:
                raise ValueError(
                    f"mask shape {mask.shape} does not match the label images' shape {pred.shape}"
                )
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("at least one IoU threshold is needed")

    if pred.ndim == 3:
        obj_pred, obj_gt = _unique_per_plane(pred), _unique_per_plane(gt)
    else:
        obj_pred, obj_gt = pred, gt
    if mask is not None:
        obj_pred = _drop_outside(obj_pred, mask)
        obj_gt = _drop_outside(obj_gt, mask)

    matchings = matching_scores(obj_pred, obj_gt, thresholds=thresholds)
    out: dict[str, float] = {}
    for t, m in matchings.items():
        key = f"{t:g}"
        out[f"ap@{key}"] = m.ap
        out[f"precision@{key}"] = m.precision
        out[f"recall@{key}"] = m.recall
        out[f"f1@{key}"] = m.f1
    first = matchings[thresholds[0]]
    key = f"{thresholds[0]:g}"
    out[f"tp@{key}"] = float(first.tp)
    out[f"fp@{key}"] = float(first.fp)
    out[f"fn@{key}"] = float(first.fn)
    out["map"] = float(np.mean([m.ap for m in matchings.values()]))
    out["mean_matched_iou"] = first.mean_matched_iou
    out["seg"] = seg_score(obj_pred, obj_gt)

    if mask is None:
        px_pred, px_gt = pred, gt
        planes = list(zip(pred, gt, strict=True)) if pred.ndim == 3 else [(pred, gt)]
    else:
        px_pred, px_gt = pred[mask], gt[mask]
        if pred.ndim == 3:
            planes = [(p[m], g[m]) for p, g, m in zip(pred, gt, mask, strict=True)]
        else:
            planes = [(px_pred, px_gt)]
    out["iou"] = foreground_iou(px_pred, px_gt)
    out["pixel_error"] = pixel_error(px_pred, px_gt)
    out["rand_error"] = float(np.mean([rand_error(p, g) for p, g in planes]))
    out["n_pred"] = float(first.n_pred)
    out["n_gt"] = float(first.n_gt)
    return out
