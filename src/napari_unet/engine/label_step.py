"""The instance step of segmentation: its options, their defaults and checks, and the call
that turns class probabilities into instance labels with them. Shared by in-memory
(:mod:`~napari_unet.engine.segment`) and block-wise (:mod:`~napari_unet.engine.block_plan`)
segmentation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: With a known cell diameter and no ``min_size``, objects smaller than this fraction of the
#: cell's disc area are removed (a nucleus of 55 % of the typical diameter still passes).
#: Chosen with ``MIN_CONFIDENCE`` on the validation images of the bundled model's corpus
#: (``benchmarks/bench_calibration.py``): the false objects of the bundled model on unseen images
#: are mostly fragments and debris of 20-60 % of a nucleus' area with a mean interior
#: probability near 0.5, where the true nuclei have 0.74 (docs/benchmarks/calibration.md).
MIN_AREA_OF_CELL = 0.3
#: Objects whose mean interior probability is below this are removed unless the caller says
#: otherwise (``min_confidence``); chosen with ``MIN_AREA_OF_CELL``.
MIN_CONFIDENCE = 0.35
#: Objects grow from the connected regions where the interior probability is above this
#: (``threshold``). Swept on the same validation images (``bench_calibration.py``): 0.4-0.6
#: score within 0.006 AP@0.5, 0.7 and above split more cells than they separate.
SEED_THRESHOLD = 0.5
#: A pixel belongs to a cell where the background probability is below this. Chosen on the
#: validation images of the bundled model's corpus (HeLa frames 14-16 and procedural images):
#: for the bundled model, trained without class balancing, 0.5 gives foreground areas of 0.96
#: times the reference and the best AP@0.75 (0.79; 0.75 at 0.3). Models trained with the
#: class-balanced loss (v1) draw the border class generously and fit 0.2 better (areas 1.17 ->
#: 1.08 times the reference); ``instances_from_probabilities(background_threshold=)`` takes it.
BACKGROUND_THRESHOLD = 0.5


def min_size_for(min_size: int | None, diameter: float | None) -> int | None:
    """The minimum object area: the caller's, else a fraction of a cell of ``diameter`` px.

    ``MIN_AREA_OF_CELL`` (30 %) of the disc of the given or estimated diameter; the smallest
    1 % of the nuclei of a HeLa test frame have about a third of the median area (226 vs 628
    px; the limit there is 186 px), so this removes fragments and debris, not cells. ``None`` when neither is known (the
    label step then adapts to the objects' median area).
    """
    if min_size is not None or diameter is None:
        return min_size
    from napari_unet.engine.instances import DEFAULT_MIN_SIZE

    return max(DEFAULT_MIN_SIZE, math.ceil(MIN_AREA_OF_CELL * math.pi / 4.0 * diameter**2))


def label_probabilities(
    prob: np.ndarray,
    *,
    threshold: float,
    min_size: int | None,
    stack: bool,
    min_confidence: float = MIN_CONFIDENCE,
    background_threshold: float = BACKGROUND_THRESHOLD,
) -> np.ndarray:
    """Instance labels (int32) of (P, K, Y, X) probabilities: of all planes with ``stack``,
    else of the first."""
    from napari_unet.engine.instances import instances_from_probabilities

    return instances_from_probabilities(
        prob if stack else prob[0],
        threshold=threshold,
        min_size=min_size,
        background_threshold=background_threshold,
        min_confidence=min_confidence,
    ).astype(np.int32, copy=False)


def check_label_options(
    threshold: float,
    min_confidence: float | None,
    background_threshold: float | None,
    checkpoint: Any = None,
) -> tuple[float, float, float]:
    """The instance step's options checked, ``None`` replaced by the defaults: the minimum
    confidence the model file chose (:func:`~napari_unet.engine.confidence_calibration.
    model_min_confidence`; :data:`MIN_CONFIDENCE` when it chose none), and
    :data:`BACKGROUND_THRESHOLD`. Returns ``(threshold, min_confidence, background_threshold)``;
    raises ``ValueError`` for values out of range."""
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    if min_confidence is None:
        from napari_unet.engine.confidence_calibration import model_min_confidence

        min_confidence = model_min_confidence(checkpoint)
    if not 0.0 <= float(min_confidence) < 1.0:
        raise ValueError(f"min_confidence must be at least 0 and below 1, not {min_confidence}")
    if background_threshold is None:
        background_threshold = BACKGROUND_THRESHOLD
    if not 0.0 < float(background_threshold) < 1.0:
        raise ValueError(
            f"background_threshold must be between 0 and 1, not {background_threshold}"
        )
    return float(threshold), float(min_confidence), float(background_threshold)
