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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MergeSplit", "merges_and_splits"]


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
