"""Correcting the model's output: what the user changed, splitting an object, and the annotation
that Fine-tune learns from.

The correction loop (docs/user_guide.md, "Correct and fine-tune"): *Segment* gives instance
labels; the user edits a copy of them (deletes false objects, splits merges with a drawn line,
paints missed cells) and fine-tunes on the result. Only the part the user looked at is trusted:
the **corrected area**, drawn by the user or inferred here from the edits (every object the edits
touched, in the original and in the copy, grown by a margin). Inside it the corrected objects are
labels and everything else is background; outside it the loss ignores the pixels -- the
``regions`` of :func:`napari_unet.engine.training.iter_train`.

All functions take (rows, columns) integer labels (0 = background) and return new arrays; the
inputs are never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from scipy import ndimage as ndi

__all__ = ["correction_annotation", "edited_region", "grow_mask", "split_object"]


def _check_labels(name: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, columns) labels, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{name} must be integer labels, got dtype {labels.dtype}")
    return labels


def grow_mask(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` (bool) grown by ``margin`` pixels (a disc); unchanged for ``margin <= 0``."""
    if margin <= 0:
        return mask
    r = np.arange(-margin, margin + 1)
    disc = (r[:, None] ** 2 + r[None, :] ** 2) <= margin**2
    return ndi.binary_dilation(mask, disc)


def edited_region(original: np.ndarray, corrected: np.ndarray, *, margin: int = 10) -> np.ndarray:
    """The area the user corrected, inferred from the edits.

    Every pixel whose label differs between ``original`` and ``corrected``, together with every
    object (of either array) that holds such a pixel -- so both halves of a split and the whole
    of a deleted or repainted object count -- grown by ``margin`` pixels (a disc).

    Parameters
    ----------
    original : (rows, columns) int labels, the model's output.
    corrected : (rows, columns) int labels, the user's edited copy.
    margin : int >= 0, pixels of context around the edited objects (background there is
        learnt as background); about half a cell diameter suits most images.

    Returns
    -------
    (rows, columns) bool; all False when nothing was edited.

    Examples
    --------
    >>> a = np.zeros((5, 9), int); a[1:4, 1:4] = 1; a[1:4, 5:8] = 2
    >>> b = a.copy(); b[b == 2] = 0  # object 2 deleted
    >>> edited_region(a, b, margin=0)[2].astype(int).tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 0]
    """
    original = _check_labels("original", original)
    corrected = _check_labels("corrected", corrected)
    if original.shape != corrected.shape:
        raise ValueError(
            f"original {original.shape} and corrected {corrected.shape} differ in shape"
        )
    if int(margin) != margin or margin < 0:
        raise ValueError(f"margin must be a whole number of pixels >= 0, not {margin}")
    changed = original != corrected
    region = changed.copy()
    for labels in (original, corrected):
        ids = np.unique(labels[changed])
        ids = ids[ids > 0]
        if ids.size:
            region |= np.isin(labels, ids)
    return grow_mask(region, int(margin))


def correction_annotation(
    original: np.ndarray,
    corrected: np.ndarray,
    *,
    region: np.ndarray | None = None,
    margin: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """The (labels, region) a fine-tune learns from after a correction.

    Parameters
    ----------
    original, corrected : (rows, columns) int labels, the model's output and the edited copy.
    region : (rows, columns) bool, the corrected area the user marked; ``None`` infers it with
        :func:`edited_region` (``margin``).
    margin : see :func:`edited_region`; unused with ``region``.

    Returns
    -------
    labels : (rows, columns) int32, the objects of ``corrected`` that touch the region (whole:
        an object the region cuts is labelled in full, never half background), 0 elsewhere.
    region : (rows, columns) bool, the area plus those objects: inside it unlabelled pixels are
        background, outside they are ignored (``iter_train(regions=...)``).

    Raises
    ------
    ValueError
        When the area is empty (nothing edited and none marked): there is nothing to learn.
    """
    corrected = _check_labels("corrected", corrected)
    if region is None:
        area = edited_region(original, corrected, margin=margin)
    else:
        area = np.asarray(region).astype(bool)
        if area.shape != corrected.shape:
            raise ValueError(
                f"the corrected area {area.shape} and the labels {corrected.shape} differ in shape"
            )
    if not area.any():
        raise ValueError(
            "nothing to learn from: no object was edited and no corrected area was marked"
        )
    ids = np.unique(corrected[area])
    ids = ids[ids > 0]
    keep = np.isin(corrected, ids)
    labels = np.where(keep, corrected, 0).astype(np.int32)
    return labels, area | keep


def _line_pixels(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.draw import line

    mask = np.zeros(shape, bool)
    pts = np.rint(points).astype(np.int64)
    for (r0, c0), (r1, c1) in pairwise(pts):
        rr, cc = line(int(r0), int(c0), int(r1), int(c1))
        inside = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        mask[rr[inside], cc[inside]] = True
    # an 8-connected line separates pieces that are labelled 4-connected (ndi.label's default)
    return mask


def split_object(
    labels: np.ndarray,
    line: Sequence[Sequence[float]] | np.ndarray,
    *,
    label_id: int | None = None,
    next_id: int | None = None,
) -> np.ndarray:
    """Cut one object in two (or more) along a drawn line.

    Parameters
    ----------
    labels : (rows, columns) int labels.
    line : (n >= 2, 2) points (row, column), a polyline in pixel coordinates (a napari Shapes
        "path" or "line" in data coordinates).
    label_id : the object to cut; ``None``: of the objects the line cuts in two, the one it
        crosses most.
    next_id : the first id for the new pieces; ``None``: ``labels.max() + 1``. A plane of a
        stack passes the stack's ``max() + 1``, so that a new piece never takes an id that
        another plane uses; an id at or below ``labels.max()`` is refused.

    Returns
    -------
    (rows, columns) labels of the same dtype: the largest piece keeps ``label_id``, every other
    piece gets a new id (from ``next_id`` on); the pixels under the line go to the piece next
    to them.

    Raises
    ------
    ValueError
        When the line crosses no object, or does not cut the object into separate pieces.

    Examples
    --------
    >>> lab = np.zeros((5, 9), np.int32); lab[1:4, 1:8] = 1
    >>> split_object(lab, [(0, 4), (4, 4)])[2].tolist()
    [0, 1, 1, 1, 1, 2, 2, 2, 0]
    """
    labels = _check_labels("labels", labels)
    points = np.asarray(line, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 2:
        raise ValueError(f"the line must be (n >= 2, 2) points (row, column), got {points.shape}")
    cut = _line_pixels(points, labels.shape)
    if label_id is None:
        under = labels[cut]
        ids, crossed = np.unique(under[under > 0], return_counts=True)  # ids may be huge
        if ids.size == 0:
            raise ValueError("the line crosses no object")
        # the object crossed most that the line cuts: a line that starts over a neighbour
        # still cuts the merge it runs across
        candidates = [int(i) for i in ids[np.argsort(-crossed, kind="stable")]]
    else:
        candidates = [int(label_id)]
    for label_id in candidates:
        obj = labels == label_id
        if not obj.any():
            raise ValueError(f"there is no object {label_id}")
        pieces, n = ndi.label(obj & ~cut)
        if n >= 2:
            break
    else:
        raise ValueError(f"the line does not cut object {candidates[0]} in two")
    sizes = np.bincount(pieces.ravel())[1:]
    order = np.argsort(-sizes) + 1
    out = labels.copy()
    top = int(labels.max())
    if next_id is None:
        next_id = top + 1
    elif int(next_id) <= top:
        raise ValueError(f"next_id must be above the largest id {top}, not {next_id}")
    next_id = int(next_id)
    new = np.zeros(labels.shape, np.uint64 if labels.dtype == np.uint64 else np.int64)
    if next_id + n - 2 > np.iinfo(new.dtype).max:
        raise ValueError(f"no label id is left above {next_id - 1} for the new pieces")
    for rank, piece in enumerate(order):
        new[pieces == piece] = label_id if rank == 0 else next_id + rank - 1
    # line pixels of the object go to the nearest piece
    _, (rr, cc) = ndi.distance_transform_edt(new == 0, return_indices=True)
    fill = obj & (new == 0)
    new[fill] = new[rr[fill], cc[fill]]
    if out.dtype == bool or new.max() > np.iinfo(out.dtype).max:
        out = out.astype(np.int64)
    out[obj] = new[obj]
    return out
