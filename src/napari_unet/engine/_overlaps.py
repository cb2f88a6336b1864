"""The contingency table of two label images and the overlaps of their objects, shared by the
metrics (:mod:`napari_unet.engine.metrics`) and the matching (:mod:`napari_unet.engine.matching`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as label arrays, checked; a bool array's objects are its connected
    regions in all its axes (:func:`~napari_unet.engine.layout.mask_cells`, as a volume: a
    stack is split into planes before, by :func:`~napari_unet.engine.metrics.evaluate`)."""
    from napari_unet.engine.layout import as_instances

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
    return tuple(as_instances(a, planes=False) for a in (pred, gt))


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map ``labels`` to consecutive indices.

    Returns ``ids`` (sorted unique values: int64, or uint64 when an id is 2**63 or more, which
    int64 would wrap negative), ``index`` (flat int64 array, ``ids[index]`` is the flattened
    input) and ``counts`` (pixels per id).
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
    if ids.dtype != np.uint64 or ids[-1] <= np.iinfo(np.int64).max:
        ids = ids.astype(np.int64)
    return ids, index.reshape(-1).astype(np.int64), counts.astype(np.int64)


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
