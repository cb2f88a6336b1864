"""Segmentation metrics: pixel-level, Rand, Cell Tracking Challenge SEG, object matching
(:mod:`~napari_unet.engine.matching`, re-exported here) and :func:`evaluate`.

All functions take two integer instance label images of equal shape, ``pred`` (the prediction)
and ``gt`` (the ground truth); 0 is background, every other value one object. Ids need not be
consecutive. A bool image's objects are its connected regions
(:func:`~napari_unet.engine.layout.mask_cells`: in each plane for :func:`evaluate`, in the whole
volume elsewhere), as the command line and training read a bool label file; the foreground of
the pixel metrics is the same either way. Everything is computed from the sparse contingency table of the two label images
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

import numpy as np

from napari_unet.engine._overlaps import _check_pair, _compact, _overlaps, _table

# the object matching lives in its own module; its names are part of this module's API
from napari_unet.engine.matching import (
    DEFAULT_THRESHOLDS,
    Matching,
    average_precision,
    match_instances,
    matching_scores,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Matching",
    "average_precision",
    "evaluate",
    "foreground_iou",
    "match_instances",
    "matched_area_ratios",
    "matching_scores",
    "pixel_error",
    "rand_error",
    "seg_score",
    "size_ratio",
]


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


# --------------------------------------------------------------------------------------------
# everything at once


def matched_area_ratios(
    pred: np.ndarray, gt: np.ndarray, *, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs matched at IoU ``threshold`` (:func:`match_instances`), ``(n, 2)`` (pred id,
    gt id), and each pair's predicted area over its ground-truth area, ``(n,)`` float64."""
    pred, gt = _check_pair(pred, gt)
    pairs = match_instances(pred, gt, threshold=threshold).pairs

    def areas(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
        found, counts = np.unique(labels, return_counts=True)
        # in the pairs' type (int64, or uint64 when an id does not fit int64), which holds every
        # id of both images in the same order: a mixed uint64/int64 search would go via float64
        return counts[np.searchsorted(found.astype(ids.dtype), ids)]

    if pairs.size == 0:
        return pairs, np.zeros(0)
    return pairs, areas(pred, pairs[:, 0]) / areas(gt, pairs[:, 1])


def size_ratio(pred: np.ndarray, gt: np.ndarray, *, threshold: float = 0.5) -> float:
    """How large the predicted objects are drawn: the median, over the pairs matched at IoU
    ``threshold`` (:func:`matched_area_ratios`), of predicted area / ground-truth area. 1.0 is
    the reference's own size; 1.2 is masks 20 % larger in area (about 10 % in diameter, 1 px on
    a 20 px nucleus). ``nan`` without a matched pair. Arrays of any dimension (objects in a
    stack should carry ids unique across its planes).

    Examples
    --------
    >>> gt = np.array([[1, 1, 1, 1, 0, 0]])
    >>> size_ratio(np.array([[2, 2, 2, 2, 2, 0]]), gt)
    1.25
    """
    ratios = matched_area_ratios(pred, gt, threshold=threshold)[1]
    return float(np.median(ratios)) if ratios.size else float("nan")


def _drop_outside(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero the objects of ``labels`` with at most half of their pixels inside ``mask``."""
    ids, index, sizes = _compact(labels)
    inside = np.bincount(index, weights=mask.reshape(-1).astype(np.float64), minlength=ids.size)
    keep = (2 * inside > sizes) | (ids == 0)
    return np.where(keep[index], ids[index], 0).reshape(labels.shape)


def _unique_per_plane(labels: np.ndarray) -> np.ndarray:
    """(P, Y, X) int64 labels whose planes' ids are numbered on from the previous plane's, so
    that no two planes share an id; 0 stays background. Renumbered, not offset by each plane's
    largest id: ids of 2**62 (or uint64 ids of 2**63) would wrap past int64 and read as
    negative."""
    from napari_unet.engine.instances import relabel_consecutive

    out = np.zeros(labels.shape, np.int64)
    offset = 0
    for plane, target in zip(labels, out, strict=True):
        target[...], n = relabel_consecutive(plane)
        target[target > 0] += offset  # in int64: the stack's count may pass int32
        offset += n
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
        plane never matches one in another. A bool image's objects are the connected regions of
        each plane (:func:`~napari_unet.engine.layout.mask_cells`).
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
    from napari_unet.engine.layout import as_instances

    # a stack is planes: a bool one's regions are taken per plane, not through the stack
    pred, gt = (as_instances(a) for a in (pred, gt))
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
