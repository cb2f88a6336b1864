"""Training targets and the pixel-weight map of the U-Net paper (Ronneberger et al. 2015, eq. 2).

From an instance label image (0 = background, 1..n = cells) this module derives

* the **separation borders**: pixels where two different instances meet;
* the **class targets**: 0 background, 1 cell interior, 2 border (separation ridge plus a thin rim
  of every cell), or a 2-class variant (0 background, 1 cell, ridges set to background);
* the **annotation mask** of a sparse annotation: which pixels count for the loss;
* the **weight map** ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``, where
  ``w_c`` balances the class frequencies and ``d1``/``d2`` are the distances to the nearest and the
  second-nearest cell.

Distances
---------
``d_i(x)`` is the exact Euclidean distance (in pixels, centre to centre) from pixel ``x`` to the
nearest pixel of cell ``i``; it is 0 on the cell. Cells are the instances *after* the separation
ridges were removed, so touching cells are apart by the ridge, as the thin background gaps between
cells in the paper. ``d1 <= d2`` are the two smallest ``d_i`` over all cells.

Rather than one full-image distance transform per cell (O(cells x pixels)), each cell's distance
transform is computed in its bounding box grown by ``R = truncate * sigma`` pixels, and a running
pair of the two smallest distances is kept per pixel. Inside the grown box the distances are exact
(every pixel of the cell lies in the box); outside it ``d_i > R``. Hence ``d1`` and ``d2`` are exact
wherever ``d2 <= R``, and where they are not, both the true and the computed border term are below
``w0 * exp(-R**2 / (2 sigma**2)) = w0 * exp(-truncate**2 / 2)``, so the error of the border term is
bounded by that value everywhere (``truncate = 4``: ``3.4e-4 * w0``, i.e. 3.4e-3 for ``w0 = 10``).
The work is O(sum over cells of the grown box areas): 2048 x 2048 pixels with 2,000 cells takes
well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "WeightMap",
    "annotation_mask",
    "border_distances",
    "class_targets",
    "separation_borders",
    "training_targets",
    "weight_map",
]

BACKGROUND, CELL, BORDER = 0, 1, 2


@dataclass(frozen=True, eq=False)
class WeightMap:
    """The paper's weight map and its two components, each float32 (rows, columns).

    Attributes
    ----------
    total : ``(class_term + border_term) * mask``; 0 outside the annotated region. This is the
        ``w(x)`` of equation 1.
    class_term : ``w_c(x)``, the class-frequency balancing weight (0 outside the annotated region).
    border_term : ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background and border-class pixels,
        0 on cell interiors and outside the annotated region.
    """

    total: np.ndarray
    class_term: np.ndarray
    border_term: np.ndarray


def _as_labels(labels: np.ndarray) -> np.ndarray:
    from napari_unet.engine.layout import as_instances

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (rows, columns), got shape {labels.shape}")
    labels = as_instances(labels)  # a mask's cells are its connected regions, as training reads it
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative (0 = background, 1..n = cells)")
    return labels


def separation_borders(labels: np.ndarray, *, connectivity: int = 2) -> np.ndarray:
    """Pixels where two different instances meet.

    A labelled pixel is a separation border if one of its neighbours carries another, non-zero
    label. Both sides of a contact are marked, so the ridge between two touching cells is two pixels
    wide and does not depend on the order of the ids. Computed with one grey dilation (largest
    neighbour) and one grey erosion over the non-zero labels (smallest labelled neighbour). Pixels
    outside the image do not count as neighbours.

    Parameters
    ----------
    labels : (rows, columns) integer array, 0 background, 1..n instances.
    connectivity : 2 (default) for the 8-neighbourhood, 1 for the 4-neighbourhood. With 8, what is
        left of touching cells after removing the ridge is not even diagonally adjacent.

    Returns
    -------
    (rows, columns) bool, True on separation-border pixels.

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    >>> separation_borders(lab).astype(int)
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    labels = _as_labels(labels)
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    footprint = ndi.generate_binary_structure(2, connectivity)
    # background must not count as "another label": give it a value above every id (not the
    # dtype's maximum, which ndimage may round through float64 and overflow)
    top = int(labels.max(initial=0)) + 1
    if top > np.iinfo(labels.dtype).max:
        labels = labels.astype(np.int64)
    largest = ndi.grey_dilation(labels, footprint=footprint, mode="nearest")
    smallest = ndi.grey_erosion(np.where(labels == 0, top, labels), footprint=footprint, mode="nearest")
    return (labels > 0) & ((largest > labels) | (smallest < labels))


def _cell_rim(labels: np.ndarray, width: int) -> np.ndarray:
    """Labelled pixels with a pixel of another label (background included) within ``width`` pixels
    (Chebyshev distance, a (2*width+1)^2 square). The image edge is not a rim."""
    size = 2 * width + 1
    hi = ndi.maximum_filter(labels, size=size, mode="nearest")
    lo = ndi.minimum_filter(labels, size=size, mode="nearest")
    return (labels > 0) & ((hi != labels) | (lo != labels))


def class_targets(
    labels: np.ndarray,
    *,
    border_width: int = 1,
    n_classes: int = 3,
    connectivity: int = 2,
) -> np.ndarray:
    """Per-pixel classes for training, from instance labels.

    Parameters
    ----------
    labels : (rows, columns) integer instance labels, 0 background.
    border_width : width in pixels of the rim of every cell that goes to the border class (3
        classes only). 0 keeps only the separation ridges. The rim is the set of labelled pixels
        within ``border_width`` pixels (Chebyshev distance) of another label or of background; the
        image edge is not a rim.
    n_classes : 3 (background / cell interior / border) or 2 (background / cell).
    connectivity : neighbourhood of :func:`separation_borders` (2: 8-neighbourhood, 1: 4).

    Returns
    -------
    (rows, columns) int64 target. With 3 classes: 0 background, 1 interior (labelled pixels not in
    the border), 2 border (separation ridges plus rims), so the interiors of touching cells are
    disconnected (8-connectivity). With 2 classes: 0 background (separation ridges included), 1 cell.
    """
    return _targets_and_ridge(labels, border_width, n_classes, connectivity)[0]


def _targets_and_ridge(
    labels: np.ndarray, border_width: int, n_classes: int, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    labels = _as_labels(labels)
    if n_classes not in (2, 3):
        raise ValueError(f"n_classes must be 2 or 3, got {n_classes}")
    if border_width < 0:
        raise ValueError(f"border_width must be >= 0, got {border_width}")
    ridge = separation_borders(labels, connectivity=connectivity)
    target = (labels > 0).astype(np.int64)
    if n_classes == 2:
        target[ridge] = BACKGROUND
        return target, ridge
    border = ridge
    if border_width > 0:
        border = border | _cell_rim(labels, border_width)
    target[border] = BORDER
    return target, ridge


def annotation_mask(
    labels: np.ndarray, regions: np.ndarray | None = None, *, margin: int = 2
) -> np.ndarray:
    """Which pixels count as annotated in a sparse annotation.

    Parameters
    ----------
    labels : (rows, columns) integer instance labels; the painted cells (0 = not painted).
    regions : None, or a (rows, columns) bool/int array, non-zero inside the regions (rectangles,
        polygons) that the user declared fully annotated: there, unpainted pixels are background.
        None means the whole image is annotated.
    margin : painted cells always count, grown by ``margin`` pixels (a (2*margin+1)^2 square), so
        their rims and the background right around them count too (as background) even outside a
        region.

    Returns
    -------
    (rows, columns) bool, True where pixels are annotated (their weight may be non-zero).
    """
    labels = _as_labels(labels)
    if regions is None:
        return np.ones(labels.shape, bool)
    regions = np.asarray(regions)
    if regions.shape != labels.shape:
        raise ValueError(f"regions shape {regions.shape} differs from labels shape {labels.shape}")
    painted = labels > 0
    if margin > 0:
        painted = ndi.maximum_filter(painted, size=2 * margin + 1, mode="constant", cval=False)
    return (regions != 0) | painted


def border_distances(
    cells: np.ndarray, *, cutoff: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and the second-nearest cell, per pixel.

    Parameters
    ----------
    cells : (rows, columns) integer instance labels, 0 background.
    cutoff : pixels. Each cell's distance transform is computed in its bounding box grown by
        ``ceil(cutoff)`` pixels (the whole image if infinite); values are exact where they are
        ``<= cutoff`` and are at least ``cutoff`` (or inf) where they are not.

    Returns
    -------
    d1, d2 : (rows, columns) float32 Euclidean distances in pixels (0 on a cell for ``d1``), inf
        where fewer than one / two cells are within reach.
    """
    cells = _as_labels(cells)
    d1 = np.full(cells.shape, np.inf, np.float32)
    d2 = np.full(cells.shape, np.inf, np.float32)
    if not cells.any():
        return d1, d2
    if int(cells.max()) > 4 * cells.size:  # very sparse ids: make find_objects' list short
        _, inverse = np.unique(cells, return_inverse=True)
        cells = inverse.reshape(cells.shape).astype(np.int64)
    grow = cells.shape[0] + cells.shape[1] if math.isinf(cutoff) else math.ceil(cutoff)
    rows, cols = cells.shape
    for index, box in enumerate(ndi.find_objects(cells), start=1):
        if box is None:
            continue
        r0, r1 = max(box[0].start - grow, 0), min(box[0].stop + grow, rows)
        c0, c1 = max(box[1].start - grow, 0), min(box[1].stop + grow, cols)
        window = (slice(r0, r1), slice(c0, c1))
        dist = ndi.distance_transform_edt(cells[window] != index).astype(np.float32)
        near, second = d1[window], d2[window]
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def _class_term(target: np.ndarray, mask: np.ndarray, n_classes: int, balance: bool) -> np.ndarray:
    term = np.zeros(target.shape, np.float32)
    if not balance:
        term[mask] = 1.0
        return term
    counts = np.bincount(target[mask].ravel(), minlength=n_classes).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return term
    present = counts > 0
    # w_k = 1 / (K * f_k) with f_k = counts_k / total over annotated pixels and K the number of
    # classes present: every present class carries the same total weight, and the mean weight over
    # annotated pixels is exactly 1.
    per_class = np.zeros(n_classes, np.float64)
    per_class[present] = total / (present.sum() * counts[present])
    term[mask] = per_class[target[mask]].astype(np.float32)
    return term


def _weight_map_from(
    labels: np.ndarray,
    target: np.ndarray,
    ridge: np.ndarray,
    mask: np.ndarray,
    *,
    w0: float,
    sigma: float,
    class_balance: bool,
    n_classes: int,
    truncate: float,
) -> WeightMap:
    class_term = _class_term(target, mask, n_classes, class_balance)
    border_term = np.zeros(labels.shape, np.float32)
    if w0 != 0 and sigma > 0:
        cells = np.where(ridge, 0, labels)
        d1, d2 = border_distances(cells, cutoff=truncate * sigma)
        where = mask & (target != CELL) & np.isfinite(d2)
        s = (d1[where] + d2[where]).astype(np.float32)
        border_term[where] = np.float32(w0) * np.exp(-(s * s) / np.float32(2.0 * sigma * sigma))
    total = (class_term + border_term) * mask
    return WeightMap(total=total.astype(np.float32), class_term=class_term, border_term=border_term)


def _resolve_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from labels shape {shape}")
    return mask.astype(bool, copy=False)


def _targets_and_weights(
    labels, mask, w0, sigma, class_balance, n_classes, border_width, connectivity, truncate
) -> tuple[np.ndarray, WeightMap]:
    """The class targets and the weight map of ``labels``, the separation ridge found once."""
    target, ridge = _targets_and_ridge(labels, border_width, n_classes, connectivity)
    weights = _weight_map_from(
        labels,
        target,
        ridge,
        mask,
        w0=w0,
        sigma=sigma,
        class_balance=class_balance,
        n_classes=n_classes,
        truncate=truncate,
    )
    return target, weights


def weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    mask: np.ndarray | None = None,
    class_balance: bool = True,
    n_classes: int = 3,
    border_width: int = 1,
    connectivity: int = 2,
    truncate: float = 4.0,
) -> WeightMap:
    """The paper's pixel-weight map (equation 2) and its components.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))``.

    Parameters
    ----------
    labels : (rows, columns) integer instance labels, 0 background.
    w0 : weight of the border term (the paper: 10). 0 switches the term off.
    sigma : width of the border term in pixels (the paper: 5).
    mask : (rows, columns) bool, True where annotated (see :func:`annotation_mask`); the weight is 0
        elsewhere. None: all pixels are annotated.
    class_balance : if True, ``w_c = 1 / (K * f_k)`` for a pixel of class ``k``, with ``f_k`` the
        fraction of annotated pixels in class ``k`` and ``K`` the number of classes present among
        them; each present class then carries the same total weight and the mean of ``w_c`` over
        annotated pixels is 1. If False, ``w_c = 1`` on annotated pixels.
    n_classes, border_width, connectivity : the classes, as in :func:`class_targets`.
    truncate : the border term is computed from cells within ``truncate * sigma`` pixels; its
        absolute error is at most ``w0 * exp(-truncate**2 / 2)`` (3.4e-3 for the defaults).

    Returns
    -------
    WeightMap with float32 (rows, columns) ``total``, ``class_term`` and ``border_term``. The border
    term is applied on background and border-class pixels (not on cell interiors): large on the
    ridges and narrow gaps between cells, about 0 next to isolated cells. ``d1``/``d2`` are measured
    to the cells with their separation ridges removed.

    Examples
    --------
    >>> lab = np.zeros((12, 14), np.int32); lab[2:6, 2:6] = 1; lab[2:6, 6:10] = 2
    >>> wm = weight_map(lab)
    >>> round(float(wm.border_term[3, 5]), 4)   # ridge pixel: d1 = 1, d2 = 2
    8.3527
    """
    labels = _as_labels(labels)
    mask = _resolve_mask(mask, labels.shape)
    return _targets_and_weights(
        labels, mask, w0, sigma, class_balance, n_classes, border_width, connectivity, truncate
    )[1]


def training_targets(
    labels: np.ndarray,
    regions: np.ndarray | None = None,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    n_classes: int = 3,
    border_width: int = 1,
    class_balance: bool = True,
    margin: int = 2,
    truncate: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, WeightMap]:
    """Everything the loss needs for one annotated image, in one call.

    Parameters
    ----------
    labels : (rows, columns) integer instance labels (the painted cells), 0 background/unpainted.
    regions : None (whole image annotated) or (rows, columns) bool/int, non-zero inside the
        regions the user declared fully annotated; see :func:`annotation_mask`.
    w0, sigma, class_balance, truncate : see :func:`weight_map`.
    n_classes, border_width : see :func:`class_targets`.
    margin : see :func:`annotation_mask`.

    Returns
    -------
    target : (rows, columns) int64 classes (0 background, 1 cell, 2 border).
    weights : (rows, columns) float32 ``w(x)``, 0 where not annotated (ignored by the loss).
    weight_map : the :class:`WeightMap` with the components (``weights is weight_map.total``).
    """
    labels = _as_labels(labels)
    mask = annotation_mask(labels, regions, margin=margin)
    target, wm = _targets_and_weights(
        labels, mask, w0, sigma, class_balance, n_classes, border_width, 2, truncate
    )
    return target, wm.total, wm
