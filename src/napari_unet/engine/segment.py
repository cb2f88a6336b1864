"""Segmentation: an image in, instance labels out, with the cell diameter taken care of.

``iter_segment()`` is a generator twin: it yields the engine's progress events and *returns* a
:class:`SegmentResult`; ``segment()`` drains it and returns the labels. Both go through the same
steps:

1. check the image (axes, channels, values) against the model and view it as (P, C, Y, X)
   planes (:func:`~napari_unet.engine.layout.as_planes`);
2. rescale it so that its cells have the diameter the model was trained at (the diameter is
   stored in the model file, ``checkpoint.diameter``);
3. predict class probabilities of the planes with the overlap-tile strategy
   (:func:`tiling.iter_predict`);
4. resize the probabilities back to the input's spatial shape;
5. turn them into instance labels (:func:`instances.instances_from_probabilities`).

Cell diameter
-------------
A U-Net sees a fixed neighbourhood, so it segments best when cells have the size it was trained
at. With ``diameter=D`` (pixels, in the input) the image is rescaled by
``model_diameter / D``; with ``diameter=None`` the diameter is *estimated*: a first pass at the
native scale finds cells, their median equivalent diameter is measured (weighted by area, so
that noise specks and the fragments of cells far larger than the model's do not pull it down),
and when it differs from the model's by more than 15 % the sample is measured again at the scale
that estimate asks for -- where the cells are near the training size, which the network measures
best -- up to twice, until two measurements agree within 10 %. The diameter reported and used is
then measured once more on that last pass's objects with each cell counting once (objects under a
quarter of the area-weighted median area left out as specks and fragments), so that a few large
cells or merged pairs do not pull it up: the area weighting steers the scale, the count measures
at it (``benchmarks/bench_diameter.py``). Then the image is segmented at the final scale
(reusing the last measurement pass when it covered the whole image). With a
diameter given or estimated, objects under 30 % of a cell's area are removed unless ``min_size``
says otherwise, and objects the network is unsure of (mean interior probability under 0.35)
unless ``min_confidence`` says otherwise. The estimate enlarges an image more than
:data:`~napari_unet.engine.diameter.RESCALE_LIMIT` (4x) only when the network is sure of
the objects it measured (:mod:`~napari_unet.engine.diameter_estimate`): an image without cells measures 4-5 px
(its noise, enlarged, looks like cells, but unsure ones), so such an estimate is dropped with a
warning and the image is segmented as if its cells had the model's diameter. To keep the first pass cheap on large inputs it only looks at a sample: at most a central
1024 x 1024 crop, of three planes of a stack side by side (a quarter, half and three quarters of
the way through: one plane of a volume shows only its own section sizes). (A crop, not a downsampled copy: downsampling
would shrink the very cells whose size is being measured.) Models without a stored training
diameter are never rescaled.

Heavy modules (torch, the network) are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.engine.diameter import (
    RESCALE_TOLERANCE,
    check_diameter,
    check_scaled_size,
    rescale_factor,
)
from napari_unet.engine.diameter_estimate import measure_diameter
from napari_unet.engine.events import (
    PlaneDone,
    PlaneSegmented,
    TileDone,
    drive,
)
from napari_unet.engine.label_step import (
    SEED_THRESHOLD,
    check_label_options,
    label_probabilities,
    min_size_for,
)
from napari_unet.engine.layout import as_planes
from napari_unet.engine.models import load_model, model_normalization
from napari_unet.engine.normalization import normalize_to_range
from napari_unet.engine.segment_passes import Passes

__all__ = ["SegmentResult", "iter_segment", "segment"]

#: The rescaled image may hold at most this many pixels per plane (1 GiB of float32).
MAX_RESCALED_PIXELS = 2**28


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """What :func:`iter_segment` returns.

    Attributes
    ----------
    labels : (Y, X) or (P, Y, X) uint16 (uint32 when there are 65536 or more cells)
        Instance labels with the input's spatial shape; 0 is background. In a stack every plane
        has its own ids (no id is used in two planes).
    probabilities : (n_classes, Y, X) or (P, n_classes, Y, X) float32
        Class probabilities (0 background, 1 cell interior, 2 border) at the input's scale.
    diameter : float or None
        The cell diameter in input pixels that was used: the one given, or the estimate (the
        model's own when the estimate would have enlarged the image more than
        :data:`~napari_unet.engine.diameter.RESCALE_LIMIT` and the network was unsure of the
        objects it measured); ``None`` when the model stores no
        training diameter and none was given, or when the estimate found too few cells.
    scale : float
        The factor the image was rescaled by before prediction (1.0 when it was not).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    diameter: float | None
    scale: float = 1.0


# -------------------------------------------------------------------------------------
# rescaling


def _check_scaled_size(spatial: tuple[int, int], factor: float, diameter: float | None) -> None:
    check_scaled_size(spatial, factor, diameter, limit=MAX_RESCALED_PIXELS)


# -------------------------------------------------------------------------------------
# segmentation


def iter_segment(
    image: np.ndarray,
    model: Any = None,
    *,
    channel_axis: int | None = None,
    stack: bool = False,
    diameter: float | None = None,
    device: Any = "auto",
    threshold: float = SEED_THRESHOLD,
    min_size: int | None = None,
    min_confidence: float | None = None,
    background_threshold: float | None = None,
    tile_size: int | None = None,
    amp: bool = True,
    tta: bool = False,
    intensity_range: tuple[Any, Any] | None = None,
    region: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> Generator[Any, None, SegmentResult]:
    """Segment cells, yielding progress events; return a :class:`SegmentResult`.

    Parameters
    ----------
    image : array
        (Y, X); (Y, X, C) or (C, Y, X) with ``channel_axis``; (P, Y, X) or (P, Y, X, C) with
        ``stack=True``. Any real dtype (uint8, uint16, float, ...); normalised like the model's
        training data (percentiles stored in the model file).
    model : None, "default", path, UNet or (UNet, Checkpoint)
        See :func:`load_model`. ``None`` is the bundled model.
    channel_axis : int or None
        The channel axis of a multichannel image; ``None`` for grayscale.
    stack : bool
        The first axis is a stack of planes (Z slices or time points), segmented one by one.
    diameter : float or None
        The typical cell diameter in pixels of ``image``. The image is rescaled by
        ``model_diameter / diameter`` (skipped within 5 %) and the result resized back. ``None``
        estimates it from a first pass (see the module notes); ignored, with a warning, for a
        model that stores no training diameter.
    device : "auto", "cpu", "cuda", "mps" or torch.device
    threshold : float in (0, 1)
        Probability above which a pixel is a confident cell interior.
    min_size : int or None
        Objects with fewer pixels (in the input's scale) are removed; ``None``: 30 % of the
        area of a cell of the given or estimated diameter, or, when no diameter is known,
        adapted to the object sizes (see :func:`~napari_unet.engine.instances.resolve_min_size`).
    min_confidence : float in [0, 1) or None
        Objects whose mean interior probability is below this are removed; ``None``: the
        value the model file chose on its annotated cells when it was fine-tuned
        (:mod:`~napari_unet.engine.confidence_calibration`), else ``MIN_CONFIDENCE`` (0.35);
        0 keeps every object the network draws.
    background_threshold : float in (0, 1) or None
        Where a cell's outline runs: its pixels are those whose background probability is
        below this. ``None``: ``BACKGROUND_THRESHOLD`` (0.5), the bundled model's own outline;
        lower draws tighter outlines (for references drawn tight, e.g. by one global threshold:
        0.3 gives about 10 % less area), higher looser ones. The diameter estimate always
        measures at the default.
    tile_size : int or None
        Side of the tiles in pixels (of the rescaled image); ``None`` chooses from the memory.
    amp : bool
        Mixed precision on CUDA.
    tta : bool
        Test-time augmentation: average the network's output over the flips and quarter turns
        of every tile (8 times the network's work; gain and cost in
        docs/benchmarks/accuracy.md).
    intensity_range : (low, high) or None
        Intensities (input units; one number each, or arrays of shape (C,) per channel) mapped
        to 0 and 1, in place of the model's percentiles computed on each plane: e.g. the
        contrast limits a user set in napari, when bright debris or a saturated region
        swamps the percentiles. Used by the diameter estimate too. Block-wise segmentation
        (:mod:`~napari_unet.engine.blockwise`) computes them once over the whole image and
        passes them to every block, so that blocks are normalised like the whole image.
    region : ((rows, columns), (row, column)) or None
        The image is a region of a larger plane of ``(rows, columns)`` pixels with its first
        pixel at ``(row, column)``: it is rescaled on the larger plane's pixel grid, so that a
        block's probabilities equal the whole plane's away from its edges (block-wise
        segmentation passes it; 2-D images only).

    Yields
    ------
    TileDone
        Counted over the whole job, both passes of an automatic diameter included. While the
        first pass runs the total assumes that a second full pass follows; when it is not
        needed, a final ``TileDone(done=total, total=total)`` closes the count.
    PlaneDone
        For each plane of the final result (not for the first pass of an estimate).
    TileSizeReduced
        Re-yielded from the prediction; the smaller tile is kept for a second pass.

    Returns
    -------
    SegmentResult

    Raises
    ------
    ValueError
        Before any work, for an image that does not fit (dimensions, channels, non-finite
        values) or a diameter that is not a sensible number of pixels.
    FileNotFoundError, CheckpointError
        From :func:`load_model`.

    Examples
    --------
    >>> gen = iter_segment(image, "model.pt", diameter=18)  # doctest: +SKIP
    >>> result = drive(gen)  # doctest: +SKIP
    """
    net, checkpoint = load_model(model, device="cpu")
    planes = as_planes(
        image, in_channels=int(net.config.in_channels), channel_axis=channel_axis, stack=stack
    )
    threshold, min_confidence, background_threshold = check_label_options(
        threshold, min_confidence, background_threshold, checkpoint
    )
    if min_size is not None and (int(min_size) != min_size or min_size < 0):
        raise ValueError(f"min_size must be a whole number of pixels >= 0, not {min_size}")
    if region is not None and stack:
        raise ValueError("region is for one 2-D plane, not for a stack")
    if tile_size is not None and (int(tile_size) != tile_size or tile_size < 1):
        raise ValueError(f"tile_size must be a positive whole number of pixels, not {tile_size}")
    spatial = (int(planes.shape[2]), int(planes.shape[3]))
    trained = checkpoint.diameter
    normalization = model_normalization(checkpoint)
    if intensity_range is not None:
        planes = normalize_to_range(planes, intensity_range)
        normalization = False
    passes = Passes(net, normalization, device, amp, tile_size, bool(tta))

    def result(prob: np.ndarray, diameter: float | None, factor: float):
        """Label the probabilities of a one-plane input, (1, K, Y, X)."""
        min_area = min_size_for(min_size, diameter)
        labels = label_probabilities(
            prob, threshold=threshold, min_size=min_area, stack=False,
            min_confidence=min_confidence, background_threshold=background_threshold,
        )  # fmt: skip
        yield PlaneSegmented(0, 1, labels)
        labels = as_label_dtype(labels)
        return SegmentResult(labels[None] if stack else labels, prob if stack else prob[0],
                             diameter, factor)  # fmt: skip

    def final(factor: float, diameter: float | None, offset: int = 0):
        """Predict and label ``planes`` plane by plane (so that the planes done before a Stop
        are complete); the ids of each plane follow those of the planes before it."""
        if not stack:
            prob, _ = yield from passes.run(planes, factor=factor, offset=offset, region=region)
            return (yield from result(prob, diameter, factor))
        n = planes.shape[0]
        min_area = min_size_for(min_size, diameter)
        probs, labels, next_id = [], [], 0
        for p in range(n):
            prob, tiles = yield from passes.run(
                planes[p : p + 1], factor=factor, offset=offset, extra_total=n - 1 - p,
                plane_of=(p, n),
            )  # fmt: skip
            offset += tiles
            plane = label_probabilities(
                prob, threshold=threshold, min_size=min_area, stack=False,
                min_confidence=min_confidence, background_threshold=background_threshold,
            )  # fmt: skip
            plane = np.where(plane > 0, plane + next_id, 0).astype(np.int32)
            next_id = max(next_id, int(plane.max()))
            yield PlaneSegmented(p, n, plane)
            probs.append(prob[0])
            labels.append(plane)
        return SegmentResult(as_label_dtype(np.stack(labels)), np.stack(probs), diameter, factor)

    if diameter is not None:
        diameter = check_diameter(diameter, spatial)
        if trained is None:
            warnings.warn(
                "the model stores no training diameter, so the image is not rescaled; "
                f"diameter={diameter:g} is ignored",
                stacklevel=2,
            )
        factor = rescale_factor(diameter, trained)
        _check_scaled_size(spatial, factor, diameter)
        return (yield from final(factor, diameter))

    if trained is None:
        return (yield from final(1.0, None))

    m = yield from measure_diameter(
        passes, planes, trained, threshold=threshold, min_confidence=min_confidence,
        check_size=_check_scaled_size,
    )  # fmt: skip
    if m.whole and m.last is not None and abs(m.last[0] / m.factor - 1.0) < RESCALE_TOLERANCE:
        # the last measuring pass already segmented the whole image at (about) this scale
        yield TileDone(done=m.first_total, total=m.first_total)
        yield PlaneDone(plane=0, n_planes=1)
        return (yield from result(m.last[1], m.diameter, m.last[0]))
    if m.whole and m.factor == 1.0:
        yield TileDone(done=m.done_first, total=m.done_first)
        yield PlaneDone(plane=0, n_planes=1)
        return (yield from result(m.sample_prob, m.diameter, m.factor))
    return (yield from final(m.factor, m.diameter, offset=m.done_first))


def as_label_dtype(labels: np.ndarray) -> np.ndarray:
    """:func:`~napari_unet.engine.instances.as_label_dtype` (imported when first needed)."""
    from napari_unet.engine.instances import as_label_dtype as cast

    return cast(labels)


def segment(image: np.ndarray, model: Any = None, **kwargs: Any) -> np.ndarray:
    """Segment cells in ``image`` and return the instance labels.

    :func:`iter_segment` without the events; every keyword is passed on to it.

    Returns
    -------
    (Y, X) or (P, Y, X) uint16 (or uint32) instance labels, 0 background.

    Examples
    --------
    >>> from napari_unet.engine.segment import segment
    >>> labels = segment(image, "my_model.pt", diameter=20)  # doctest: +SKIP
    """
    return drive(iter_segment(image, model, **kwargs)).labels
