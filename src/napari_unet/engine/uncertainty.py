"""Where the model is unsure: per-pixel uncertainty, per-object confidence, and the boxes where a
correction would teach the most.

Method: **disagreement across test-time transforms.** The image is segmented once per symmetry
of the square that keeps its shape (identity, the two flips, the half turn; all eight with
``transforms=8``, whose quarter turns segment the image with its sides swapped), each result
turned back, and the per-pixel uncertainty is
the mean total-variation distance between each pass's class probabilities and their average:

    u(x) = 1/T sum_t 1/2 sum_k |p_t,k(x) - pbar_k(x)|        in [0, 1]

A network that has learnt a structure answers the same whatever the orientation; where it
guesses (new textures, touching cells, faint objects) the passes disagree. MC dropout is the
other common estimate, but the bundled model has no dropout (``UNetConfig.dropout == 0``), so
test-time transforms are the one estimate every model here supports. The cost is ``T`` plain
segmentations.

Heavy modules are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.engine.instances import object_confidence

__all__ = [
    "Uncertainty",
    "annotation_boxes",
    "expected_errors",
    "iter_tta_uncertainty",
    "object_scores",
    "tta_uncertainty",
]


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """What :func:`tta_uncertainty` returns.

    Attributes
    ----------
    labels : (Y, X) instance labels of the identity pass (what *Segment* gives without TTA).
    probabilities : (K, Y, X) float32, the class probabilities averaged over the passes.
    uncertainty : (Y, X) float32 in [0, 1], the disagreement between the passes.
    diameter : the cell diameter (input px) used by every pass.
    transforms : how many passes were averaged.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    diameter: float | None
    transforms: int


def _forward(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def _backward(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = a[..., ::-1] if flip else a
    return np.rot90(a, -k, axes=(-2, -1))


def tta_uncertainty(image: np.ndarray, model: Any = None, **kwargs: Any) -> Uncertainty:
    """Drive :func:`iter_tta_uncertainty` to its end and return its :class:`Uncertainty`."""
    from napari_unet.engine.events import drive

    return drive(iter_tta_uncertainty(image, model, **kwargs))


def iter_tta_uncertainty(
    image: np.ndarray,
    model: Any = None,
    *,
    diameter: float | None = None,
    transforms: int = 4,
    device: Any = "auto",
    **segment_kwargs: Any,
) -> Generator[Any, None, Uncertainty]:
    """Segment ``image`` under ``transforms`` symmetries and measure how much the passes disagree;
    yields the events of each pass (:func:`~napari_unet.engine.segment.iter_segment`'s), so a
    caller can show progress and stop between tiles.

    Parameters
    ----------
    image : (Y, X) grayscale image (any real dtype).
    model : as for :func:`napari_unet.engine.segment.segment`.
    diameter : cell diameter in pixels; ``None`` estimates it on the first pass and reuses it.
    transforms : 4 (identity, flips, half turn) or 8 (also the quarter turns and transposes;
        a quarter-turned pass segments a (X, Y) image, whose results are turned back).
    device : as for ``segment``.
    **segment_kwargs : passed to :func:`~napari_unet.engine.segment.iter_segment` (``threshold``,
        ``min_size``, ``tile_size``); ``tta`` is always off (each pass is one orientation).

    Returns
    -------
    Uncertainty (the generator's return value)

    Examples
    --------
    >>> u = tta_uncertainty(image, "default", diameter=20)  # doctest: +SKIP
    >>> u.uncertainty.max() <= 1.0  # doctest: +SKIP
    True
    """
    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import iter_segment

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"uncertainty needs a 2-D (Y, X) image, got shape {image.shape}")
    if transforms not in (4, 8):
        raise ValueError(f"transforms must be 4 or 8, not {transforms}")
    segment_kwargs.pop("tta", None)
    pair = load_model(model, device="cpu")
    pairs = [(0, False), (0, True), (2, False), (2, True)]
    if transforms == 8:
        pairs += [(1, False), (1, True), (3, False), (3, True)]
    probs = []
    labels = None
    for index, (k, flip) in enumerate(pairs):
        res = yield from _over_passes(
            iter_segment(
                np.ascontiguousarray(_forward(image, k, flip)),
                pair,
                diameter=diameter,
                device=device,
                tta=False,
                **segment_kwargs,
            ),
            index,
            len(pairs),
        )
        if labels is None:
            labels = res.labels
            diameter = res.diameter
        probs.append(np.ascontiguousarray(_backward(res.probabilities, k, flip)))
    stack = np.stack(probs).astype(np.float32)
    mean = stack.mean(axis=0)
    disagreement = 0.5 * np.abs(stack - mean[None]).sum(axis=1).mean(axis=0)
    return Uncertainty(
        labels=labels,
        probabilities=mean,
        uncertainty=np.clip(disagreement, 0.0, 1.0).astype(np.float32),
        diameter=diameter,
        transforms=len(pairs),
    )


def _over_passes(events: Generator[Any, None, Any], index: int, n_passes: int):
    """Yield the events of pass ``index`` of ``n_passes``, its tile counts over all the passes
    (so that a progress bar runs once from 0 to 100 %, not once per pass); return its result."""
    from napari_unet.engine.events import TileDone

    while True:
        try:
            event = next(events)
        except StopIteration as finished:
            return finished.value
        if isinstance(event, TileDone):
            event = replace(event, done=index * event.total + event.done,
                            total=n_passes * event.total)  # fmt: skip
        try:
            yield event
        except GeneratorExit:
            events.close()
            raise


def object_scores(
    labels: np.ndarray, uncertainty: np.ndarray, probabilities: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-object confidence: agreement of the passes, the mean winning probability and the
    mean interior probability (the one Segment's ``min_confidence`` filters on).

    Parameters
    ----------
    labels : (Y, X) int instance labels.
    uncertainty : (Y, X) float in [0, 1] (:attr:`Uncertainty.uncertainty`).
    probabilities : optional (K, Y, X) class probabilities; adds ``max_probability``.

    Returns
    -------
    dict of 1-D arrays, one entry per object present, sorted by id: ``"id"``, ``"agreement"``
    (1 - mean uncertainty inside the object: 1 = every pass agrees) and, with probabilities,
    ``"max_probability"`` (mean over the object's pixels of the largest class probability) and
    ``"interior_probability"`` (:func:`~napari_unet.engine.instances.object_confidence`).
    """
    labels = np.asarray(labels)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    if labels.shape != uncertainty.shape:
        raise ValueError(f"labels {labels.shape} and uncertainty {uncertainty.shape} differ")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    out = {"id": ids.astype(np.int64)}
    if ids.size == 0:
        out["agreement"] = np.zeros(0)
        if probabilities is not None:
            out["max_probability"] = np.zeros(0)
            out["interior_probability"] = np.zeros(0)
        return out
    out["agreement"] = 1.0 - np.asarray(ndi.mean(uncertainty, labels, ids))
    if probabilities is not None:
        top = np.asarray(probabilities).max(axis=0)
        out["max_probability"] = np.asarray(ndi.mean(top, labels, ids))
        out["interior_probability"] = object_confidence(labels, probabilities)[ids]
    return out


def expected_errors(
    labels: np.ndarray,
    uncertainty: np.ndarray,
    probabilities: np.ndarray,
    *,
    edge_band: int = 2,
    cell_area: float | None = None,
) -> np.ndarray:
    """A per-pixel map whose sum over a region estimates how many errors the region holds.

    Summed pixel uncertainty (:func:`annotation_boxes` on :attr:`Uncertainty.uncertainty`)
    grows with the length of the object edges in a box, where the passes always disagree by a
    pixel, so it favours crowded boxes over wrong ones. Here each object counts once: its
    pixels share ``1 - agreement * interior probability`` (:func:`object_scores`), the chance
    that it is false, merged or cut. Uncertainty in the background, more than ``edge_band``
    pixels from any object, counts as a possible missed cell: it is divided by the median
    object area, so a cell-sized patch where the passes fully disagree counts as one.

    Parameters
    ----------
    labels : (Y, X) int instance labels (:attr:`Uncertainty.labels`).
    uncertainty : (Y, X) float in [0, 1].
    probabilities : (K, Y, X) mean class probabilities (:attr:`Uncertainty.probabilities`).
    edge_band : pixels around the objects left out of the background term.
    cell_area : px², the area of a cell where ``labels`` holds no object to measure it on (e.g.
        the disc of the diameter the image was segmented at); without one, a pixel, so that
        every uncertain background pixel of an image without objects counted as a missed cell
        (an empty field scored about a hundred errors per box).

    Returns
    -------
    (Y, X) float64 map, >= 0, to pass to :func:`annotation_boxes`.
    """
    labels = np.asarray(labels)
    u = np.asarray(uncertainty, dtype=np.float64)
    scores = object_scores(labels, u, probabilities)
    ids = scores["id"]
    n = int(labels.max()) if labels.size else 0
    per_object = np.zeros(n + 1)
    areas = np.bincount(labels.reshape(-1), minlength=n + 1).astype(np.float64)
    if ids.size:
        error = np.clip(1.0 - scores["agreement"] * scores["interior_probability"], 0.0, 1.0)
        per_object[ids] = error / areas[ids]
    out = per_object[labels]
    typical_area = float(np.median(areas[ids])) if ids.size else (cell_area or 1.0)
    near = labels > 0
    if edge_band > 0 and near.any():
        near = ndi.binary_dilation(near, structure=np.ones((3, 3), bool), iterations=int(edge_band))
    return out + np.where(near, 0.0, u / max(typical_area, 1.0))


def annotation_boxes(
    uncertainty: np.ndarray,
    *,
    box: int,
    n: int = 5,
    mask: np.ndarray | None = None,
    min_score: float = 0.0,
) -> list[tuple[tuple[int, int, int, int], float]]:
    """The ``n`` non-overlapping square boxes that hold the most uncertainty, best first.

    Parameters
    ----------
    uncertainty : (Y, X) float, per-pixel uncertainty (:func:`tta_uncertainty`).
    box : side of a box in pixels (clipped to the image); about three cell diameters lets a
        user correct a few cells with their context.
    n : how many boxes at most.
    mask : optional (Y, X) bool; uncertainty outside it does not count.
    min_score : boxes whose sum is not above this are not returned (on an
        :func:`expected_errors` map: the fewest expected errors worth a user's visit).

    Returns
    -------
    list of ``((row0, col0, row1, col1), score)``: corners (end exclusive) and the summed
    uncertainty inside, in decreasing order of score. Greedy: each box is the best one that
    does not overlap a box already chosen.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"uncertainty must be 2-D, got shape {u.shape}")
    if mask is not None:
        u = np.where(np.asarray(mask, bool), u, 0.0)
    if int(box) != box or box < 1:
        raise ValueError(f"box must be a positive whole number of pixels, not {box}")
    rows, cols = u.shape
    bh, bw = min(int(box), rows), min(int(box), cols)
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = u.cumsum(0).cumsum(1)
    sums = (
        integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
    )  # (rows - bh + 1, cols - bw + 1): the sum of the box whose top-left corner is (r, c)
    free = np.ones(sums.shape, bool)
    chosen = []
    # box sums from the integral image carry rounding residues (~1e-15) where u is 0
    floor = max(1e-9 * max(float(integral[-1, -1]), 1e-12), float(min_score))
    for _ in range(int(n)):
        scores = np.where(free, sums, -np.inf)
        r, c = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if not np.isfinite(scores[r, c]) or scores[r, c] <= floor:
            break
        chosen.append(((int(r), int(c), int(r) + bh, int(c) + bw), float(sums[r, c])))
        free[max(0, r - bh + 1) : r + bh, max(0, c - bw + 1) : c + bw] = False
    return chosen
