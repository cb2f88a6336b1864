"""From the network's class probabilities to an instance label image.

The network predicts three classes: 0 background, 1 cell interior, 2 border (the separation ridge
between touching cells plus a thin rim of each cell). Touching cells are kept apart by the border
class, so the connected components of the confident interior are one *seed* per cell. Each seed is
then grown back over the foreground (interior + border) by a watershed on the interior
probability, which puts the dividing line along the valley of the interior probability, that is on
the predicted border ridge.

A two-class network (background/cell) has no border class; touching cells are then split by a
watershed on the distance transform of the thresholded cell probability, with one seed per
sufficiently deep maximum of the distance (an h-maximum).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "DEFAULT_MIN_SIZE",
    "as_label_dtype",
    "fill_holes",
    "instances_from_probabilities",
    "min_size_of_areas",
    "object_confidence",
    "relabel_consecutive",
    "resolve_min_size",
]

#: Objects smaller than this many pixels are always dropped when ``min_size=None``.
DEFAULT_MIN_SIZE = 10
#: With ``min_size=None``, objects smaller than this fraction of the median object area are
#: dropped too (whichever of the two limits is larger).
DEFAULT_MIN_SIZE_FRACTION = 0.05

_CROSS = ndi.generate_binary_structure(2, 1)


def as_label_dtype(labels: np.ndarray) -> np.ndarray:
    """Cast an instance label image to the smallest unsigned dtype that holds its ids.

    Parameters
    ----------
    labels : (...) integer array, values >= 0.

    Returns
    -------
    (...) uint16 when the largest id is below 65536, else uint32. napari Labels layers and TIFF
    writers handle both.

    Raises
    ------
    ValueError
        For negative ids, ids of 2**32 or more, or a non-integer array.
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    top = int(labels.max()) if labels.size else 0
    low = int(labels.min()) if labels.size else 0
    if low < 0:
        raise ValueError(f"labels must be >= 0, got a minimum of {low}")
    if top < 2**16:
        return labels.astype(np.uint16, copy=False)
    if top < 2**32:
        return labels.astype(np.uint32, copy=False)
    raise ValueError(f"label id {top} does not fit in uint32")


def relabel_consecutive(labels: np.ndarray, *, start: int = 1) -> tuple[np.ndarray, int]:
    """Renumber the objects of ``labels`` to ``start, start + 1, ...`` keeping 0 as background.

    Objects keep their relative order. Returns the relabelled int32 array and the number of
    objects.
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    new = np.arange(ids.size, dtype=np.int64) + (start - 1)
    if ids.size and ids[0] == 0:
        new[0] = 0
        n = ids.size - 1
    else:
        new += 1
        n = ids.size
    return new[inverse.reshape(labels.shape)].astype(np.int32), int(n)


def resolve_min_size(labels: np.ndarray, min_size: int | None) -> int:
    """The minimum object area actually used for ``labels``.

    ``None`` means ``max(DEFAULT_MIN_SIZE, DEFAULT_MIN_SIZE_FRACTION * median object area)``:
    10 pixels, or 5 % of the median object area when that is larger. ``0`` keeps everything.
    """
    if min_size is not None:
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        return int(min_size)
    areas = np.bincount(labels.reshape(-1))[1:]
    return min_size_of_areas(areas[areas > 0])


def min_size_of_areas(areas: np.ndarray) -> int:
    """The minimum object area (px) ``min_size=None`` means for objects of ``areas`` (px, one
    per object, none 0): ``max(DEFAULT_MIN_SIZE, DEFAULT_MIN_SIZE_FRACTION * median)``;
    ``DEFAULT_MIN_SIZE`` without objects. In memory the areas are a plane's
    (:func:`resolve_min_size`), block by block those of the stitched objects of a plane
    (:func:`~napari_unet.engine.stitch.drop_small`)."""
    if len(areas) == 0:
        return DEFAULT_MIN_SIZE
    return max(DEFAULT_MIN_SIZE, int(np.ceil(DEFAULT_MIN_SIZE_FRACTION * np.median(areas))))


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return labels
    areas = np.bincount(labels.reshape(-1))
    small = areas < min_size
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return labels


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill the background holes that lie wholly inside one object with that object's id.

    A nucleolus or a dark vacuole can be predicted as background inside a nucleus; a biologist
    expects the nucleus without a hole. Holes enclosed by two or more objects (gaps between
    touching cells) are left alone.

    Parameters
    ----------
    labels : (Y, X) int array, 0 background.

    Returns
    -------
    (Y, X) array of the same dtype; ``labels`` itself when there is no hole.
    """
    holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    components, _ = ndi.label(holes, structure=_CROSS)
    out = labels.copy()
    for i, box in enumerate(ndi.find_objects(components), start=1):
        grown = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
        hole = components[grown] == i
        rim = ndi.binary_dilation(hole, structure=_CROSS) & ~hole
        ids = np.unique(labels[grown][rim])
        if ids.size == 1 and ids[0] > 0:
            out[grown][hole] = ids[0]
    return out


def object_confidence(labels: np.ndarray, prob: np.ndarray, *, cell_class: int = 1) -> np.ndarray:
    """The mean cell (interior) probability inside each object.

    Parameters
    ----------
    labels : (Y, X) int array, ids 0..n (0 background).
    prob : (n_classes, Y, X) float class probabilities of the same plane.
    cell_class : channel of the cell (interior) class.

    Returns
    -------
    (n + 1,) float64: entry ``i`` is object ``i``'s mean probability; entry 0 (background) and
    ids without pixels are 0.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    counts = np.bincount(labels.reshape(-1), minlength=n + 1)
    sums = np.bincount(
        labels.reshape(-1),
        weights=np.asarray(prob[cell_class], np.float64).reshape(-1),
        minlength=n + 1,
    )
    out = np.divide(sums, counts, out=np.zeros(n + 1), where=counts > 0)
    out[0] = 0.0
    return out


def _watershed(
    elevation: np.ndarray, seeds: np.ndarray, foreground: np.ndarray, *, keep_unseeded: bool
) -> np.ndarray:
    from skimage.segmentation import watershed

    labels = watershed(elevation, markers=seeds, mask=foreground)
    labels = labels.astype(np.int32, copy=False)
    if keep_unseeded:
        rest, n_rest = ndi.label(foreground & (labels == 0), structure=_CROSS)
        if n_rest:
            top = int(labels.max())
            labels = np.where(rest > 0, rest + top, labels).astype(np.int32)
    return labels


def _split_at_necks(mask: np.ndarray, depth: float) -> np.ndarray:
    """Label ``mask``, cutting a component where it narrows: one region per maximum of its
    distance transform that rises ``depth`` pixels above the saddle to any higher maximum."""
    from skimage.morphology import h_maxima

    distance = ndi.distance_transform_edt(mask).astype(np.float32)
    peaks = h_maxima(distance, depth).astype(bool) & mask
    markers, _ = ndi.label(peaks, structure=np.ones((3, 3), bool))
    return _watershed(-distance, markers, mask, keep_unseeded=True)


def _label_plane(
    prob: np.ndarray,
    *,
    threshold: float,
    min_size: int | None,
    cell_class: int,
    border_class: int | None,
    background_class: int,
    split_depth: float,
    interior_split: float,
    background_threshold: float,
    keep_unseeded: bool,
    min_confidence: float,
) -> np.ndarray:
    n_classes = prob.shape[0]
    cell = prob[cell_class].astype(np.float32, copy=False)
    if n_classes >= 3 and border_class is not None:
        # 3 classes: seeds from the confident interior, grown over interior + border
        seed_mask = cell > threshold
        foreground = (prob[background_class] < background_threshold) | seed_mask
        if interior_split > 0:
            seeds = _split_at_necks(seed_mask, interior_split)
        else:
            seeds, _ = ndi.label(seed_mask, structure=_CROSS)
        labels = _watershed(-cell, seeds, foreground, keep_unseeded=keep_unseeded)
    else:
        # 2 classes: distance-transform watershed splits touching cells
        from skimage.morphology import h_maxima

        foreground = cell > threshold
        distance = ndi.distance_transform_edt(foreground).astype(np.float32)
        if split_depth > 0 and foreground.any():
            peaks = h_maxima(distance, split_depth).astype(bool) & foreground
        else:
            peaks = foreground
        seeds, _ = ndi.label(peaks, structure=np.ones((3, 3), bool))
        labels = _watershed(-distance, seeds, foreground, keep_unseeded=keep_unseeded)
    if min_confidence > 0.0 and labels.any():
        weak = object_confidence(labels, prob, cell_class=cell_class) < min_confidence
        weak[0] = False
        labels = np.where(weak[labels], 0, labels)
    labels = _remove_small(labels, resolve_min_size(labels, min_size))
    return relabel_consecutive(fill_holes(labels))[0]


def instances_from_probabilities(
    prob: np.ndarray,
    *,
    threshold: float = 0.5,
    min_size: int | None = None,
    border_class: int | None = 2,
    cell_class: int = 1,
    background_class: int = 0,
    split_depth: float = 2.0,
    interior_split: float = 0.0,
    background_threshold: float = 0.5,
    keep_unseeded: bool = True,
    min_confidence: float = 0.0,
) -> np.ndarray:
    """Turn class probabilities into an instance label image.

    With three (or more) classes:

    1. seeds are the connected components (4-connected) of ``P(cell interior) > threshold``;
    2. the foreground is ``P(background) < 0.5`` -- when the probabilities sum to 1, that is
       ``P(interior) + P(border) > 0.5`` -- together with the seeds;
    3. the seeds grow over the foreground by a watershed on ``-P(interior)``, so neighbouring
       cells meet along the predicted border ridge;
    4. foreground regions that hold no seed (tiny cells seen only as border) become objects of
       their own when ``keep_unseeded``;
    5. objects whose mean interior probability is below ``min_confidence`` are dropped (faint
       debris and noise that the network half believes in), then objects smaller than
       ``min_size`` pixels; holes inside one object are filled (:func:`fill_holes`) and the
       objects renumbered 1..n.

    With two classes (background, cell), or ``border_class=None``, the foreground is
    ``P(cell) > threshold`` and touching cells are split by a watershed on its distance transform,
    seeded at the maxima of the distance that rise at least ``split_depth`` pixels above the
    saddle to any higher maximum.

    Parameters
    ----------
    prob : (n_classes, Y, X) or (P, n_classes, Y, X) float array
        Class probabilities (softmax output), e.g. from ``tiling.predict``. A 4-D array is a
        stack of planes; each plane is labelled on its own and the ids of plane ``p`` follow on
        from those of planes ``0..p-1`` (plane 0 has ids 1..n0, plane 1 n0+1..n0+n1, ...), so no
        id is used in two planes. An object that continues across planes therefore has a new id
        in every plane.
    threshold : float
        Probability above which a pixel is confident interior (3 classes) or cell (2 classes).
    min_size : int or None
        Objects with fewer pixels are removed, per plane. ``None``: 10 pixels, or 5 % of the
        plane's median object area when that is larger (see :func:`resolve_min_size`); ``0``
        keeps every object.
    border_class, cell_class, background_class : int
        Channel indices of the classes in ``prob``. ``border_class`` is ignored for 2-class input.
    split_depth : float
        Two-class mode only: the h of the h-maxima transform of the distance (pixels). Larger
        values split touching cells less eagerly.
    interior_split : float
        Three-class mode: when above 0, a confident-interior region that narrows to a neck is
        cut there before the seeds grow (one seed per maximum of its distance transform that
        rises at least this many pixels above the saddle to a higher one); 0 keeps each
        connected interior as one seed.
    background_threshold : float
        Three-class mode: a pixel is foreground (seeds may grow over it) where the background
        probability is below this. Lower values draw tighter masks.
    keep_unseeded : bool
        Keep foreground regions without any seed as objects (still subject to ``min_size``).
    min_confidence : float in [0, 1)
        Objects whose mean ``prob[cell_class]`` is below this are removed (see
        :func:`object_confidence`); 0 keeps all. In two-class mode every object is above
        ``threshold`` by construction, so only values above it have an effect.

    Returns
    -------
    (Y, X) or (P, Y, X) int32
        Instance labels, 0 background, consecutive ids from 1. Use :func:`as_label_dtype` to
        store them compactly.

    Examples
    --------
    >>> prob = np.zeros((3, 8, 8), np.float32)
    >>> prob[0] = 1.0
    >>> prob[:, 2:6, 2:6] = [[[0.0]], [[1.0]], [[0.0]]]
    >>> int(instances_from_probabilities(prob, min_size=0).max())
    1
    """
    prob = np.asarray(prob)
    if prob.ndim not in (3, 4):
        raise ValueError(
            f"prob must be (n_classes, Y, X) or (P, n_classes, Y, X), got shape {prob.shape}"
        )
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"prob must be a float array of probabilities, got dtype {prob.dtype}")
    n_classes = prob.shape[-3]
    if n_classes < 2:
        raise ValueError(
            f"prob needs at least 2 classes on axis -3, got {n_classes} (shape {prob.shape})"
        )
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0.0 < background_threshold < 1.0:
        raise ValueError(f"background_threshold must be in (0, 1), got {background_threshold}")
    if not 0.0 <= min_confidence < 1.0:
        raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
    if n_classes == 2:
        border_class = None
    used = [c for c in (background_class, cell_class, border_class) if c is not None]
    for c in used:
        if not 0 <= c < n_classes:
            raise ValueError(f"class index {c} is out of range for {n_classes} classes")
    if len(set(used)) != len(used):
        raise ValueError(
            f"background_class, cell_class and border_class must differ, got {background_class}, "
            f"{cell_class}, {border_class}"
        )
    options = dict(
        threshold=float(threshold),
        min_size=min_size,
        cell_class=cell_class,
        border_class=border_class,
        background_class=background_class,
        split_depth=float(split_depth),
        interior_split=float(interior_split),
        background_threshold=float(background_threshold),
        keep_unseeded=keep_unseeded,
        min_confidence=float(min_confidence),
    )
    if prob.ndim == 3:
        return _label_plane(prob, **options)
    out = np.zeros((prob.shape[0], *prob.shape[2:]), np.int32)
    offset = 0
    for i, plane in enumerate(prob):
        labels = _label_plane(plane, **options)
        n = int(labels.max())
        out[i] = np.where(labels > 0, labels + offset, 0)
        offset += n
    return out
