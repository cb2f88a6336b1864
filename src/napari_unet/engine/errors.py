"""Object-level errors of a segmentation against reference labels: merges and splits.

AP and F1 say how many objects are right; they do not say *why* the others are wrong. Two errors
matter most for touching nuclei:

* a **merge**: one predicted object that holds most of two or more reference objects;
* a **split**: one reference object cut into two or more sizeable predicted objects.

Definitions (areas in pixels, background excluded):

* reference object ``g`` is *held* by predicted object ``p`` when at least half of ``g`` lies
  in ``p``; ``p`` is a merge when it holds two or more reference objects;
* predicted object ``p`` is a *piece* of reference object ``g`` when at least half of ``p`` lies
  in ``g`` and ``p`` covers at least ``min_piece`` (default 20 %) of ``g``; ``g`` is split when it
  has two or more pieces.

Both counts are per object: a prediction that holds three nuclei is one merge (of 3 objects).

:func:`error_map` paints every object by what went wrong with it (the error layers of the
Inspect panel and ``napari-unet evaluate --errors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ERROR_CLASSES", "ErrorMap", "MergeSplit", "error_map", "merges_and_splits"]


@dataclass(frozen=True)
class MergeSplit:
    """Merge and split counts of one comparison.

    Attributes
    ----------
    merges : predicted objects that hold two or more reference objects.
    merged : reference objects held by those merges.
    splits : reference objects cut into two or more pieces.
    pieces : predicted objects that are pieces of a split reference object.
    merge_ids, split_ids : the predicted ids of the merges, the reference ids that are split.
    """

    merges: int
    merged: int
    splits: int
    pieces: int
    merge_ids: tuple[int, ...] = ()
    split_ids: tuple[int, ...] = ()


def merges_and_splits(pred: np.ndarray, gt: np.ndarray, *, min_piece: float = 0.2) -> MergeSplit:
    """Count merges and splits of ``pred`` against the reference ``gt``.

    Parameters
    ----------
    pred, gt : integer instance labels of the same shape ((Y, X) or (P, Y, X)), 0 background.
        In a stack, ids must not repeat across planes (as ``napari_unet.segment`` returns them).
        A bool image's objects are the connected regions of each plane
        (:func:`~napari_unet.engine.layout.mask_cells`).
    min_piece : smallest share of a reference object a predicted piece must cover to count.

    Returns
    -------
    MergeSplit

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> merges_and_splits(np.array([[5, 5, 5, 5, 5]]), gt).merges
    1
    >>> merges_and_splits(np.array([[1, 2, 0, 3, 3]]), gt).splits
    1
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    for name, a in (("pred", pred), ("gt", gt)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name} must be integer labels, got dtype {a.dtype}")
    if not 0 < min_piece <= 1:
        raise ValueError(f"min_piece must be in (0, 1], got {min_piece}")
    from napari_unet.engine.layout import as_instances

    pred, gt = (as_instances(a) for a in (pred, gt))
    p = pred.ravel().astype(np.int64)
    g = gt.ravel().astype(np.int64)
    both = (p > 0) & (g > 0)
    pairs, overlap = np.unique(np.stack([p[both], g[both]]), axis=1, return_counts=True)
    p_area = np.bincount(p)
    g_area = np.bincount(g)
    if pairs.size == 0:
        return MergeSplit(0, 0, 0, 0)
    pi, gi = pairs
    held = overlap >= 0.5 * g_area[gi]
    piece = (overlap >= 0.5 * p_area[pi]) & (overlap >= min_piece * g_area[gi])
    held_by = np.bincount(pi[held], minlength=p_area.size)
    pieces_of = np.bincount(gi[piece], minlength=g_area.size)
    merge_ids = np.flatnonzero(held_by >= 2)
    split_ids = np.flatnonzero(pieces_of >= 2)
    return MergeSplit(
        merges=int(merge_ids.size),
        merged=int(held_by[merge_ids].sum()),
        splits=int(split_ids.size),
        pieces=int(pieces_of[split_ids].sum()),
        merge_ids=tuple(int(i) for i in merge_ids),
        split_ids=tuple(int(i) for i in split_ids),
    )


#: The codes of :attr:`ErrorMap.codes`, 0 being background.
ERROR_CLASSES: dict[int, str] = {
    1: "correct",
    2: "false positive",
    3: "miss",
    4: "merge",
    5: "split",
}


@dataclass(frozen=True, eq=False)
class ErrorMap:
    """What :func:`error_map` returns.

    Attributes
    ----------
    codes : uint8 array of the input's shape, a code of :data:`ERROR_CLASSES` per pixel: predicted
        objects matched at IoU >= 0.5 are *correct* (1), unmatched ones *false positives* (2), a
        merge's pixels are *merge* (4), the pieces of a split reference object *split* (5); the
        uncovered pixels of reference objects neither matched, held by a merge nor split are
        *misses* (3). A piece or a merge that also matches at IoU 0.5 is shown as piece or merge.
    counts : ``correct``, ``false positives``, ``misses`` (objects), ``merges`` (predicted
        objects), ``merged`` (reference objects inside them), ``splits`` (reference objects),
        ``pieces`` (predicted objects), ``predicted``, ``reference``.
    ap50 : ``TP / (TP + FP + FN)`` at IoU 0.5 (planes of a stack pooled).
    """

    codes: np.ndarray
    counts: dict[str, int]
    ap50: float


def _plane_errors(pred: np.ndarray, gt: np.ndarray, min_piece: float):
    from napari_unet.engine.matching import match_instances

    m = match_instances(pred, gt, threshold=0.5)
    ms = merges_and_splits(pred, gt, min_piece=min_piece)
    codes = np.zeros(pred.shape, np.uint8)
    matched_pred = m.pairs[:, 0] if m.tp else np.zeros(0, np.int64)
    matched_gt = m.pairs[:, 1] if m.tp else np.zeros(0, np.int64)
    merge = np.isin(pred, ms.merge_ids) & (pred > 0)
    split_gt = np.isin(gt, ms.split_ids) & (gt > 0)
    # pieces: predicted objects that lie mostly inside a split reference object
    piece_ids = np.zeros(0, np.int64)
    if ms.split_ids:
        ids, inside = np.unique(pred[split_gt & (pred > 0)], return_counts=True)
        areas = np.bincount(pred.ravel().astype(np.int64))
        piece_ids = ids[inside * 2 >= areas[ids]]
    piece = np.isin(pred, piece_ids) & (pred > 0)
    correct = np.isin(pred, matched_pred) & (pred > 0)
    codes[(pred > 0)] = 2
    codes[correct] = 1
    codes[piece] = 5
    codes[merge] = 4
    held = np.unique(gt[merge & (gt > 0)])
    pred_ids = np.unique(pred[pred > 0])
    gt_ids = np.unique(gt[gt > 0])
    missed = np.setdiff1d(gt_ids, np.concatenate([matched_gt, np.asarray(ms.split_ids), held]))
    codes[np.isin(gt, missed) & (gt > 0) & (pred == 0)] = 3
    fp_ids = np.setdiff1d(pred_ids, np.concatenate([matched_pred, ms.merge_ids, piece_ids]))
    counts = {
        "correct": int(np.setdiff1d(matched_pred, np.concatenate([ms.merge_ids, piece_ids])).size),
        "false positives": int(fp_ids.size),
        "misses": int(missed.size),
        "merges": ms.merges,
        "merged": ms.merged,
        "splits": ms.splits,
        "pieces": ms.pieces,
        "predicted": int(pred_ids.size),
        "reference": int(gt_ids.size),
    }
    return codes, counts, (m.tp, m.fp, m.fn)


def _small_ids(labels: np.ndarray) -> np.ndarray:
    """``labels`` (no negative id) with its ids renumbered 1..n in their order, 0 kept as
    background, when its largest id is far beyond its number of pixels: the per-id tables of
    :func:`merges_and_splits` (``np.bincount``) are as long as the largest id, and ids of 2**40
    asked for terabytes. An id is only a name; the codes do not change."""
    from napari_unet.engine.instances import relabel_consecutive

    if labels.size == 0 or int(labels.max()) <= 4 * labels.size + 1024:
        return labels
    return relabel_consecutive(labels)[0]


def error_map(
    pred: np.ndarray, gt: np.ndarray, *, min_piece: float = 0.2, axes: str | None = None
) -> ErrorMap:
    """Colour-code what is wrong with ``pred`` against the reference ``gt``.

    Parameters
    ----------
    pred, gt : integer instance labels of the same shape, (Y, X) or a stack (P, Y, X) of planes
        scored independently; 0 background. A bool image's objects are the connected regions of
        each plane (:func:`~napari_unet.engine.layout.mask_cells`).
    min_piece : see :func:`merges_and_splits`.
    axes : one letter per axis of the labels (Y, X and plane letters Z, T, P, in any order:
        ``YXZ``, ``TZYX``, see :func:`napari_unet.engine.axes.check_axes`); every plane is
        scored on its own and the codes come back in the same axes. ``None``: ``(Y, X)`` or
        ``(P, Y, X)``.

    Returns
    -------
    ErrorMap

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2, 0, 3, 3, 3, 3]])
    >>> pred = np.array([[7, 7, 7, 7, 7, 0, 8, 8, 9, 9]])
    >>> error_map(pred, gt).codes.tolist()
    [[4, 4, 4, 4, 4, 0, 5, 5, 5, 5]]
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    if axes is not None:
        from napari_unet.engine.axes_layout import AxesLayout

        if "C" in axes.upper():
            raise ValueError("labels have no channel axis: axes take Y, X, Z, T, P")
        layout = AxesLayout(pred.shape, axes)
        found = error_map(layout.to_engine(pred)[0], layout.to_engine(gt)[0], min_piece=min_piece)
        return ErrorMap(layout.from_engine(found.codes), found.counts, found.ap50)
    if pred.ndim not in (2, 3):
        raise ValueError(f"labels must be (Y, X) or (P, Y, X), got shape {pred.shape}")
    from napari_unet.engine.layout import as_instances

    pred, gt = (as_instances(a) for a in (pred, gt))
    for name, a in (("pred", pred), ("gt", gt)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integer labels, got dtype {a.dtype}")
    from napari_unet.engine._overlaps import _check_pair

    pred, gt = (_small_ids(a) for a in _check_pair(pred, gt))  # negative ids: refused first
    planes = [(pred, gt)] if pred.ndim == 2 else list(zip(pred, gt, strict=True))
    codes, total, tp_fp_fn = [], {}, np.zeros(3, np.int64)
    for p, g in planes:
        c, counts, tff = _plane_errors(p, g, min_piece)
        codes.append(c)
        tp_fp_fn += tff
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    tp, fp, fn = (int(x) for x in tp_fp_fn)
    ap = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
    return ErrorMap(codes[0] if pred.ndim == 2 else np.stack(codes), total, float(ap))
