"""The cell diameter: measuring it, the model's, and rescaling images to match.

A U-Net sees a fixed neighbourhood, so it segments best when cells have the size it was trained
at. Every model file stores the median cell diameter of its training data
(:attr:`~napari_unet.engine.checkpoint.Checkpoint.diameter`, pixels). Prediction rescales an image
by ``model diameter / image diameter`` (:func:`rescale_factor`); training on new data rescales the
data the same way, so that a fine-tuned model keeps the diameter of the model it started from
(:func:`match_training_diameter`, the one rule of ``napari-unet train``, the Fine-tune panel and
the few-shot benchmark).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AUTO_DIAMETER_TOLERANCE",
    "MAX_TRAINING_PIXELS",
    "MIN_CELLS_FOR_ESTIMATE",
    "MIN_DIAMETER",
    "RESCALE_LIMIT",
    "RESCALE_TOLERANCE",
    "TRIM_FRACTION",
    "TrainingScale",
    "check_diameter",
    "check_scaled_size",
    "estimate_diameter",
    "match_training_diameter",
    "model_diameter",
    "rescale_factor",
    "rescale_training_data",
    "scaled_shape",
    "weighted_median",
]

#: Rescaling by less than this relative amount is skipped (it would only blur).
RESCALE_TOLERANCE = 0.05
#: A measured diameter is acted on (a prediction's second pass, training data resized) only when
#: it differs from the model's training diameter by more than this fraction.
AUTO_DIAMETER_TOLERANCE = 0.15
#: The automatic diameter estimate enlarges an image by more than this (cells under 6 px for a
#: model trained at 24 px) only when the network is sure of what it measured
#: (``diameter_estimate.MIN_ENLARGE_CONFIDENCE``): an image with no cells measures 4-5 px, because its
#: noise, once enlarged, looks like cells (``docs/benchmarks/diameter.md``). The Segment panel
#: asks before a typed diameter rescales by more than this, either way.
RESCALE_LIMIT = 4.0
#: Cell diameters below this many pixels are rejected as meaningless.
MIN_DIAMETER = 1.0
#: Fewer measured cells than this and the estimate is not trusted.
MIN_CELLS_FOR_ESTIMATE = 3
#: ``estimate_diameter(weighting="trimmed")`` drops objects under this fraction of the
#: area-weighted median area (a cell of half the median diameter has a quarter of its area).
TRIM_FRACTION = 0.25
#: A training image may be enlarged to at most this many pixels (training holds about 50 bytes
#: per pixel: the image, labels, weight map and their augmented copies).
MAX_TRAINING_PIXELS = 2**26


def model_diameter(checkpoint: Any) -> float | None:
    """The median cell diameter (pixels) of the model's training data, or ``None``.

    ``checkpoint.diameter``: checked when the file was read (old files that kept it in
    ``extra["diameter"]`` included), so a number here is finite and positive.
    """
    return checkpoint.diameter


def estimate_diameter(
    labels: np.ndarray, *, exclude_border: bool = True, weighting: str = "count"
) -> float | None:
    """The median equivalent diameter of the objects in a label image.

    The equivalent diameter of an object of area ``A`` pixels is ``sqrt(4 A / pi)``, the
    diameter of a disc of the same area.

    Parameters
    ----------
    labels : (Y, X) or (P, Y, X) integer array, or a sequence of (Y, X) arrays
        Instance labels, 0 background. Every plane's (every array's) objects count
        separately; the median is over all of them. A bool plane's objects are its connected
        regions (:func:`~napari_unet.engine.layout.mask_cells`).
    exclude_border : bool
        Leave out objects that touch the image edge (they are cut off and would bias the
        estimate low), unless that would leave fewer than :data:`MIN_CELLS_FOR_ESTIMATE`.
    weighting : ``"count"``, ``"area"`` or ``"trimmed"``
        ``"count"``: the median over objects (right for ground-truth labels). ``"area"``: the
        median over foreground pixels of their object's area, so that many small false
        detections (noise specks, fragments of cells much larger than a model's) weigh by
        their area, not their number. ``"trimmed"`` (used on a model's own output): objects
        under :data:`TRIM_FRACTION` of the area-weighted median area are dropped as specks and
        fragments, and the median is over the objects left, each counting once, so that a few
        large cells do not pull it up as they do the area-weighted one (chosen by measurement:
        ``benchmarks/bench_diameter.py``).

    Returns
    -------
    float or None
        The median diameter in pixels, or ``None`` when there are fewer than
        :data:`MIN_CELLS_FOR_ESTIMATE` objects.

    Examples
    --------
    >>> labels = np.zeros((40, 40), int)
    >>> for i, r in enumerate((5, 15, 25)):
    ...     labels[r:r + 4, 2:6] = i + 1
    >>> round(estimate_diameter(labels), 2)
    4.51
    """
    if isinstance(labels, (list, tuple)):
        planes = [np.asarray(plane) for plane in labels]
    else:
        array = np.asarray(labels)
        planes = [array] if array.ndim == 2 else list(array)
        if array.ndim not in (2, 3):
            raise ValueError(f"labels must be (Y, X) or (P, Y, X), got shape {array.shape}")
    for plane in planes:
        if plane.ndim != 2:
            raise ValueError(f"every label image must be (Y, X), got shape {plane.shape}")
        if not (np.issubdtype(plane.dtype, np.integer) or plane.dtype == bool):
            raise ValueError(f"labels must be integer arrays, got dtype {plane.dtype}")
    from napari_unet.engine.layout import as_instances

    planes = [as_instances(p) for p in planes]
    all_areas: list[np.ndarray] = []
    inner_areas: list[np.ndarray] = []
    for plane in planes:
        if plane.size == 0:
            continue
        ids, counts = np.unique(plane[plane > 0], return_counts=True)
        if ids.size == 0:
            continue
        edge = np.unique(np.concatenate([plane[0], plane[-1], plane[:, 0], plane[:, -1]]))
        all_areas.append(counts)
        inner_areas.append(counts[~np.isin(ids, edge)])
    areas = np.concatenate(all_areas) if all_areas else np.zeros(0)
    inner = np.concatenate(inner_areas) if inner_areas else np.zeros(0)
    if exclude_border and inner.size >= MIN_CELLS_FOR_ESTIMATE:
        areas = inner
    if weighting not in ("count", "area", "trimmed"):
        raise ValueError(f"weighting must be 'count', 'area' or 'trimmed', not {weighting!r}")
    if areas.size < MIN_CELLS_FOR_ESTIMATE:
        return None
    if weighting == "count":
        median_area = np.median(areas)
    else:
        median_area = weighted_median(areas, areas)
        if weighting == "trimmed":
            kept = areas[areas >= TRIM_FRACTION * median_area]
            if kept.size < MIN_CELLS_FOR_ESTIMATE:
                return None
            median_area = np.median(kept)
    return float(np.sqrt(4.0 * median_area / np.pi))


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at the middle of the total weight: with ``weights`` the objects' areas, the
    value of the object that covers the median foreground pixel. Both (N,), N >= 1, weights
    > 0."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])



def rescale_factor(diameter: float | None, trained_diameter: float | None) -> float:
    """The factor that brings cells of ``diameter`` pixels to the model's training size.

    ``trained_diameter / diameter``, or 1.0 when either is unknown or the factor is within
    :data:`RESCALE_TOLERANCE` of 1 (rescaling would only blur).
    """
    if diameter is None or trained_diameter is None:
        return 1.0
    factor = float(trained_diameter) / float(diameter)
    return 1.0 if abs(factor - 1.0) < RESCALE_TOLERANCE else factor



def check_diameter(diameter: Any, spatial: tuple[int, int]) -> float:
    """``diameter`` as a float number of pixels, checked against an image of ``spatial`` size.

    Raises ``ValueError`` with a sentence for anything but a finite number from
    :data:`MIN_DIAMETER` to the image's larger side.
    """
    try:
        value = float(diameter)
    except (TypeError, ValueError):
        raise ValueError(f"diameter must be a number of pixels, not {diameter!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"diameter must be a positive number of pixels, not {diameter!r}")
    if value < MIN_DIAMETER:
        raise ValueError(
            f"diameter={value:g} px is smaller than a pixel; give the cell diameter in pixels"
        )
    if value > max(spatial):
        raise ValueError(
            f"diameter={value:g} px is larger than the image ({spatial[0]} x {spatial[1]} pixels); "
            "give the cell diameter in pixels"
        )
    return value



def scaled_shape(spatial: tuple[int, int], factor: float) -> tuple[int, int]:
    """The (rows, columns) of a plane of ``spatial`` size resized by ``factor`` (at least 2)."""
    return (max(2, round(spatial[0] * factor)), max(2, round(spatial[1] * factor)))



def check_scaled_size(
    spatial: tuple[int, int], factor: float, diameter: float | None, *, limit: int, why: str = ""
) -> None:
    """Raise ``ValueError`` when resizing a plane of ``spatial`` size by ``factor`` would give
    more than ``limit`` pixels; the sentence names the cell ``diameter`` (pixels) that asked for
    the factor and the resulting size, and ``why`` (e.g. the model's diameter) when given."""
    rows, cols = scaled_shape(spatial, factor)
    if rows * cols > limit:
        cells = "a cell diameter" if diameter is None else f"a cell diameter of {diameter:.3g} px"
        raise ValueError(
            f"{cells}{why} would enlarge the image {factor:.3g}-fold from {spatial[0]} x "
            f"{spatial[1]} to {rows} x {cols} pixels per plane, more than the {limit:,} pixels "
            f"that can be processed; check the diameter"
        )


def rescale_training_data(
    image: np.ndarray, labels: np.ndarray, regions: np.ndarray | None, factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Resize one training image and its annotation by ``factor`` (to bring its cells to a
    model's training diameter).

    ``image`` ((Y, X) or (Y, X, C)) is resized bilinearly, anti-aliased when shrinking, and
    returned as float32; ``labels`` (Y, X) by nearest neighbour, so no new ids appear, in their
    own dtype; ``regions`` (Y, X or ``None``) by nearest neighbour, as bool.
    """
    from skimage.transform import resize

    shape = scaled_shape(labels.shape[:2], factor)
    image = resize(
        image.astype(np.float32, copy=False),
        shape + image.shape[2:],
        order=1,
        anti_aliasing=factor < 1,
        preserve_range=True,
    ).astype(np.float32)
    nearest = {"order": 0, "anti_aliasing": False, "preserve_range": True}
    labels = resize(labels, shape, **nearest).astype(labels.dtype)
    if regions is not None:
        regions = resize(regions, shape, **nearest).astype(bool)
    return image, labels, regions


@dataclass(frozen=True)
class TrainingScale:
    """How training data were brought to a model's diameter (:func:`match_training_diameter`).

    Attributes
    ----------
    data_diameter : float or None
        The annotated cells' diameter in input pixels (given or measured); ``None`` when too
        few cells were painted to measure it.
    model_diameter : float or None
        The starting model's training diameter; ``None`` for a new network or a model that
        stores none.
    factor : float
        The data were resized by this factor (1.0: not resized).
    """

    data_diameter: float | None
    model_diameter: float | None
    factor: float = 1.0

    @property
    def diameter(self) -> float | None:
        """The diameter the trained model stores: the starting model's, else the data's."""
        return self.model_diameter if self.model_diameter is not None else self.data_diameter

    @property
    def input_diameter(self) -> float | None:
        """The cells' diameter in input pixels that makes prediction rescale the input exactly
        as training did (``diameter / factor``)."""
        return self.diameter / self.factor if self.diameter else None


def match_training_diameter(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    regions: Sequence[np.ndarray | None],
    *,
    model_diameter: float | None,
    diameter: float | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None], TrainingScale]:
    """Resize training data so that its cells have the model's training diameter.

    The one rule for fine-tuning on new data: the cells' diameter is ``diameter`` when given,
    else measured from the labels (:func:`estimate_diameter`, cells cut by the edge left out);
    when the model stores a diameter and the two differ by more than
    :data:`AUTO_DIAMETER_TOLERANCE`, every image, label image and region mask is resized by
    ``model_diameter / data_diameter`` (:func:`rescale_training_data`). Raises ``ValueError``
    before resizing anything when an image would grow past :data:`MAX_TRAINING_PIXELS`, or when
    ``diameter`` is below a pixel or above the largest image's side (:func:`check_diameter`).

    Parameters
    ----------
    images : sequence of (Y, X) or (Y, X, C) arrays
    labels : sequence of matching (Y, X) integer instance labels (0 = not painted)
    regions : sequence of matching (Y, X) bool masks or ``None`` entries
    model_diameter : the starting model's training diameter in pixels, or ``None``.
    diameter : the cells' diameter in input pixels, or ``None`` to measure it.

    Returns
    -------
    images, labels, regions : lists, resized or the inputs themselves
    scale : TrainingScale
    """
    images, labels, regions = list(images), list(labels), list(regions)
    if diameter is not None and labels:  # checked as predict checks it, against the largest image
        diameter = check_diameter(diameter, max((lab.shape[:2] for lab in labels), key=max))
    data_diameter = diameter if diameter is not None else estimate_diameter(labels)
    factor = 1.0
    if model_diameter is not None and data_diameter is not None:
        ratio = model_diameter / data_diameter
        if abs(ratio - 1.0) > AUTO_DIAMETER_TOLERANCE:
            factor = ratio
            why = f" (the model was trained at {model_diameter:g} px)"
            for lab in labels:
                check_scaled_size(
                    lab.shape[:2], factor, data_diameter, limit=MAX_TRAINING_PIXELS, why=why
                )
            for i, triple in enumerate(zip(images, labels, regions, strict=True)):
                images[i], labels[i], regions[i] = rescale_training_data(*triple, factor)
    return images, labels, regions, TrainingScale(data_diameter, model_diameter, factor)
