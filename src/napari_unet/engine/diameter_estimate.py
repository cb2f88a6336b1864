"""The automatic cell diameter of :func:`~napari_unet.engine.segment.iter_segment`: measuring
passes of the network on a sample of the image.

:func:`measure_diameter` runs a first pass at the native scale on a sample (at most a central
:data:`ESTIMATE_CROP` square; of a stack, those of three planes side by side,
:func:`estimation_sample`), measures the area-weighted median
diameter of what it finds (noise specks and the fragments of cells far larger than the
model's do not pull it down), and, when that differs from the model's diameter by more than
15 %, measures again at the scale it asks for, up to :data:`ESTIMATE_REFINEMENTS` times
(:func:`refine_estimate`). The diameter is then measured on the last pass's objects with each
cell counting once (:func:`count_cells`): the area weighting steers the scale, the count
measures at it. An estimate that would enlarge the image more than
:data:`~napari_unet.engine.diameter.RESCALE_LIMIT` is used only when the network is sure of the
objects it measured (:data:`MIN_ENLARGE_CONFIDENCE`). Numbers: ``benchmarks/bench_diameter.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.engine.diameter import (
    AUTO_DIAMETER_TOLERANCE,
    RESCALE_LIMIT,
    estimate_diameter,
    rescale_factor,
    weighted_median,
)
from napari_unet.engine.events import PlaneDone, TileDone, relay
from napari_unet.engine.label_step import label_probabilities

__all__ = ["ESTIMATE_CROP", "MIN_ENLARGE_CONFIDENCE", "Measured", "measure_diameter"]

#: The first pass of the automatic diameter estimate looks at most at a crop of this side.
ESTIMATE_CROP = 1024
#: A stack's diameter is measured on this many of its planes at most, side by side
#: (:func:`estimation_sample`), with this many columns of background between them.
ESTIMATE_PLANES = 3
ESTIMATE_GAP = 16
#: Most extra passes on the estimation sample, each at the scale the last estimate asks for,
#: stopping early when two estimates agree within ``ESTIMATE_AGREEMENT``.
ESTIMATE_REFINEMENTS = 2
ESTIMATE_AGREEMENT = 0.1
#: An estimate that would enlarge the image more than ``RESCALE_LIMIT`` is used only when the
#: network is at least this sure of the objects it measured (their mean cell probability,
#: weighted by area): an image without cells measures 4-5 px, because its noise enlarged looks
#: like cells, but the network is unsure of those (0.38-0.53 on fields of three sets), and sure
#: of BBBC007's and the scratch assay's nuclei shrunk to 3-5 px (0.64-0.68), though not of every
#: small nucleus (the scratch assay at 6 px: 0.41; ``benchmarks/bench_diameter.py``).
MIN_ENLARGE_CONFIDENCE = 0.6


@dataclass(frozen=True, eq=False)
class Measured:
    """What :func:`measure_diameter` found.

    Attributes
    ----------
    diameter : the cell diameter to use (input pixels), or None when too few cells were found.
    factor : the factor to rescale the image by (1.0: not at all).
    sample_prob : (1, n_classes, y, x) probabilities of the first pass over the sample.
    last : ``(factor, probabilities)`` of the last measuring pass at another scale, or None.
    whole : whether the sample is the whole image (its passes can then be the result).
    done_first, first_total : tiles done by the first pass, and the job's tile count as it
        stood after it (the first pass counted as if a second full pass followed).
    """

    diameter: float | None
    factor: float
    sample_prob: np.ndarray
    last: tuple[float, np.ndarray] | None
    whole: bool
    done_first: int
    first_total: int


def measure_diameter(
    passes: Any,
    planes: np.ndarray,
    trained: float,
    *,
    threshold: float,
    min_confidence: float,
    check_size: Callable[[tuple[int, int], float, float | None], None],
) -> Generator[Any, None, Measured]:
    """Measure the cell diameter of (P, C, Y, X) ``planes`` with the network of ``passes``
    (:class:`~napari_unet.engine.segment_passes.Passes`) for a model trained at ``trained``
    px; yields the passes' progress. ``check_size(spatial, factor, diameter)`` raises
    ``ValueError`` for a rescaling too large to run (a scale it refuses is not measured at, and
    not used: a warning says so). The warnings of the enlargement limit come from here too.
    """
    sample, whole = estimation_sample(planes)
    edges = inner_edges(planes)
    spatial = planes.shape[2:]
    ratio = planes.shape[0] * spatial[0] * spatial[1] / (sample.shape[2] * sample.shape[3])
    sample_prob, done_first = yield from passes.run(
        sample, factor=1.0, extra_total=ratio, plane_events=False
    )
    sample_labels = drop_cut(
        label_probabilities(
            sample_prob, threshold=threshold, min_size=None, stack=False,
            min_confidence=min_confidence,
        ),
        edges,
    )  # fmt: skip
    estimate = estimate_diameter(sample_labels, weighting="area")
    first_total = done_first + max(1, round(done_first * ratio))
    still = TileDone(done=done_first, total=first_total)
    estimate, last, last_labels = yield from refine_estimate(
        passes, sample, estimate, trained, threshold=threshold, progress=still,
        min_confidence=min_confidence, check_size=check_size, edges=edges,
    )  # fmt: skip
    estimate, last, measured = yield from count_cells(
        passes, sample, (sample_labels, sample_prob), (last_labels, last), estimate, trained,
        threshold=threshold, progress=still, min_confidence=min_confidence,
        check_size=check_size, edges=edges,
    )  # fmt: skip
    factor = 1.0 if estimate is None else estimate_factor(estimate, trained)
    confidence = estimate_confidence(*measured) if factor > RESCALE_LIMIT else 1.0
    if confidence < MIN_ENLARGE_CONFIDENCE:
        warnings.warn(
            f"the estimated cell diameter ({estimate:.3g} px) would enlarge the image "
            f"{factor:.1f}x, and the network is unsure of what it finds there (mean cell "
            f"probability {confidence:.2f}); an image without cells measures like this, so it "
            f"is segmented at the model's own scale ({trained:g} px cells). Give the diameter "
            "if the cells really are this small",
            stacklevel=2,
        )
        estimate, factor = trained, 1.0
    if factor != 1.0:
        try:
            check_size(spatial, factor, estimate)
        except ValueError:
            warnings.warn(
                f"the estimated cell diameter ({estimate:.3g} px) would need an unreasonable "
                "rescaling; segmenting at the native scale instead",
                stacklevel=2,
            )
            factor = 1.0
    return Measured(estimate, factor, sample_prob, last, whole, done_first, first_total)


def refine_estimate(
    passes, sample, estimate, trained, *, threshold, progress, min_confidence, check_size,
    edges=(),
):
    """Measure the cell diameter of ``sample`` again at the scale the last estimate asks for.

    A network measures cells best near its training size; at the native scale cells far from it
    come out fragmented or merged, and the first estimate is off. Each refinement rescales the
    sample by ``trained / estimate`` and measures again (in input pixels), at most
    :data:`ESTIMATE_REFINEMENTS` times, stopping when an estimate needs no rescaling or two
    agree within :data:`ESTIMATE_AGREEMENT`. Yields ``progress`` (the job's count does not move)
    in place of the pass's tile events, so that the pass can be cancelled.

    Returns the estimate, ``(factor, probabilities)`` of the last refinement pass (or None)
    and that pass's instance labels (or None). ``edges``: see :func:`inner_edges`.
    """

    hold = hold_progress(progress)
    last = last_labels = None
    for _ in range(ESTIMATE_REFINEMENTS):
        if estimate is None or abs(trained / estimate - 1.0) <= AUTO_DIAMETER_TOLERANCE:
            break
        factor = rescale_factor(estimate, trained)
        try:
            check_size(sample.shape[2:], factor, estimate)
        except ValueError:
            break
        prob, last_labels = yield from labelled_pass(
            passes, sample, factor, hold, threshold=threshold, min_confidence=min_confidence,
            edges=edges,
        )  # fmt: skip
        last = (factor, prob)
        refined = estimate_diameter(last_labels, weighting="area")
        if refined is None:
            break
        agree = abs(refined / estimate - 1.0) < ESTIMATE_AGREEMENT
        estimate = refined
        if agree:
            break
    return estimate, last, last_labels


def labelled_pass(passes, sample, factor, hold, *, threshold, min_confidence, edges=()):
    """One measuring pass over ``sample`` at ``factor`` with its events filtered by ``hold``
    (:func:`hold_progress`), and its instance labels, without the objects cut at the
    ``edges`` of a stack's sample (:func:`drop_cut`): returns ``(probabilities, labels)``."""
    prob, _ = yield from relay(passes.run(sample, factor=factor, plane_events=False), hold)
    labels = label_probabilities(
        prob, threshold=threshold, min_size=None, stack=False, min_confidence=min_confidence,
    )  # fmt: skip
    return prob, drop_cut(labels, edges)


def hold_progress(progress: TileDone):
    """An event filter for a measuring pass: its tile events become ``progress`` (the job's
    count does not move, but the pass can be cancelled), its plane events are dropped."""

    def hold(event: Any) -> Any:
        match event:
            case TileDone():
                return progress
            case PlaneDone():
                return None
        return event

    return hold


def count_cells(
    passes, sample, first, refined, steered, trained, *, threshold, progress, min_confidence,
    check_size, edges=(),
):
    """The diameter measured with each cell counting once, at the scale the steering found.

    ``first``: the instance labels and probabilities of the first pass (native scale);
    ``refined``: the labels of the last refinement pass and its ``(factor, probabilities)``
    (both None without one); ``steered``: the area-weighted estimate that set that pass's
    scale. The diameter is measured on the last pass's objects by
    ``estimate_diameter(weighting="trimmed")``; when it asks for a scale more than
    :data:`ESTIMATE_AGREEMENT` away from that pass's, the sample is measured once more at the
    scale it asks for (the native one is not run again). Returns the estimate, the
    ``(factor, probabilities)`` of the last refinement pass (or None) and the labels and
    probabilities the estimate was measured on.
    """
    (first_labels, first_prob), (last_labels, last) = first, refined
    here = (first_labels, first_prob) if last is None else (last_labels, last[1])
    counted = estimate_diameter(here[0], weighting="trimmed")
    if counted is None:
        return steered, last, here
    wanted = estimate_factor(counted, trained)
    if abs(wanted / (1.0 if last is None else last[0]) - 1.0) < ESTIMATE_AGREEMENT:
        return counted, last, here
    if wanted == 1.0:
        again = estimate_diameter(first_labels, weighting="trimmed")
        return (counted, last, here) if again is None else (again, None, first)
    try:
        check_size(sample.shape[2:], wanted, counted)
    except ValueError:
        return counted, last, here
    prob, labels = yield from labelled_pass(
        passes, sample, wanted, hold_progress(progress), threshold=threshold,
        min_confidence=min_confidence, edges=edges,
    )  # fmt: skip
    again = estimate_diameter(labels, weighting="trimmed")
    if again is None:
        return counted, last, here
    return again, (wanted, prob), (labels, prob)


def estimate_confidence(labels: np.ndarray, prob: np.ndarray) -> float:
    """How sure the network is of the objects an estimate measured: the mean cell probability
    of the object that holds the median foreground pixel (so specks weigh by their area).
    ``labels`` (Y, X), ``prob`` (1, n_classes, Y, X); 0 without objects."""
    from napari_unet.engine.instances import object_confidence

    confidence = object_confidence(labels, prob[0])[1:]
    areas = np.bincount(np.asarray(labels).reshape(-1), minlength=confidence.size + 1)[1:]
    keep = areas > 0
    return weighted_median(confidence[keep], areas[keep]) if keep.any() else 0.0


def estimate_factor(estimate: float, trained: float) -> float:
    """The factor an estimate asks for: 1 within :data:`AUTO_DIAMETER_TOLERANCE` of the model's
    diameter, else ``trained / estimate``."""
    if abs(estimate / trained - 1.0) <= AUTO_DIAMETER_TOLERANCE:
        return 1.0
    return rescale_factor(estimate, trained)


def estimation_sample(planes: Any) -> tuple[np.ndarray, bool]:
    """The (1, C, y, x) part of (P, C, Y, X) ``planes`` (numpy, or dask: read here) that the
    measuring passes look at, and whether it is the whole image.

    One plane: its central crop of at most :data:`ESTIMATE_CROP` px a side. A stack: the
    central crops of up to :data:`ESTIMATE_PLANES` planes spread through it (a quarter, half
    and three quarters of the way), side by side, :data:`ESTIMATE_GAP` columns of each plane's
    median apart. One plane of a volume of nuclei shows its own section sizes (smaller towards
    the nuclei's caps) and, in a narrow volume, few nuclei: measured on the middle plane alone,
    the light-sheet test stack read 28.7 px for sections of 23.6 px with v3, and its AP@0.5 fell
    to 0.49 against 0.74 with the diameter given (docs/benchmarks/stacks_v3.md).
    """
    crops = estimation_planes(planes)
    if len(crops) == 1:
        return crops, crops.shape == planes.shape
    parts: list[np.ndarray] = []
    for part in crops[:, None]:
        if parts:
            fill = np.median(part, axis=(2, 3), keepdims=True).astype(part.dtype)
            parts.append(np.broadcast_to(fill, (*part.shape[:3], ESTIMATE_GAP)))
        parts.append(part)
    return np.concatenate(parts, axis=3), False


def estimation_planes(planes: Any) -> np.ndarray:
    """The (k, C, y, x) central crops (at most :data:`ESTIMATE_CROP` px a side) of the planes
    of (P, C, Y, X) ``planes`` (numpy, or dask: read here) that :func:`estimation_sample` puts
    side by side (:func:`sampled_planes`)."""
    rows, cols = planes.shape[2:]
    r0 = max(0, (rows - ESTIMATE_CROP) // 2)
    c0 = max(0, (cols - ESTIMATE_CROP) // 2)
    picks = sampled_planes(planes.shape[0])
    return np.concatenate(
        [
            np.asarray(planes[p : p + 1, :, r0 : r0 + ESTIMATE_CROP, c0 : c0 + ESTIMATE_CROP])
            for p in picks
        ]
    )


def sampled_planes(n: int) -> list[int]:
    """The planes of an ``n``-plane stack that :func:`estimation_sample` puts side by side."""
    if n == 1:
        return [0]
    return sorted({n * k // (ESTIMATE_PLANES + 1) for k in range(1, ESTIMATE_PLANES + 1)})


def inner_edges(planes: Any) -> list[int]:
    """The columns of :func:`estimation_sample`'s sample of (P, C, Y, X) ``planes`` where one
    plane's crop ends or the next begins (none for one plane).

    A nucleus cut by a crop's left or right side there is measured as a part of a nucleus, not
    left out as one cut by the image edge is: on the 68 px wide light-sheet test crop
    (121 planes) the estimate read 18.7 px for sections of 23.6 px, though each of its three
    planes alone read 21.5-25.0 px; without them 26.9 px (``benchmarks/bench_stacks.py``).
    """
    width = min(planes.shape[-1], ESTIMATE_CROP)
    edges = []
    for k in range(1, len(sampled_planes(planes.shape[0]))):
        start = k * (width + ESTIMATE_GAP)  # this crop's first column
        edges += [start - ESTIMATE_GAP - 1, start]
    return edges


def drop_cut(labels: np.ndarray, edges: Any) -> np.ndarray:
    """``labels`` (..., Y, X) without the objects that touch any of the columns ``edges``
    (:func:`inner_edges`); the same array when there are none."""
    if not len(edges):
        return labels
    cut = np.unique(np.asarray(labels)[..., list(edges)])
    cut = cut[cut != 0]
    return np.where(np.isin(labels, cut), 0, labels).astype(labels.dtype) if cut.size else labels
