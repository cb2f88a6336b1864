"""The minimum confidence of the instance step, chosen for a model on annotated cells.

The instance step drops objects whose mean interior probability is below ``min_confidence``
(:func:`~napari_unet.engine.instances.instances_from_probabilities`). The default,
:data:`~napari_unet.engine.label_step.MIN_CONFIDENCE` (0.35), was chosen for the bundled nucleus
model on its validation images (docs/benchmarks/calibration.md). A model fine-tuned on another
kind of cell is often less sure of its objects: fine-tuned on all 455 whole cells of the
scratch assay's transmitted-light channel, most of its true cells have a mean interior
probability under 0.35, and with the default it scores AP@0.5 0.000 on the test cells against
0.188 with the value chosen on its training cells (means of three seeds,
``benchmarks/bench_correction.py``, docs/benchmarks/correction.md).

So a fine-tune chooses the value again, on the cells it was taught: it segments the annotated
images once with no confidence filter, scores the objects that remain at each value of
:data:`CANDIDATES` against the annotation (AP@0.5 inside the annotated regions), and keeps the
best; a tie goes to the value closest to the starting model's, so the value only moves when
the annotation says so. The choice is never stricter than 0.35 (or the starting model's value,
when that is stricter): chosen on 5 corrected bacteria, a free choice took 0.5, which kept 2
objects for the 102 cells of the test frames (AP@0.5 0.02 against 0.06 at 0.35; trpL, seed 0,
in ``benchmarks/bench_correction.py`` at commit 8248a5c, before this limit). The filter
is there to drop debris a sure model half believes in; a few cells cannot tell that a stricter
one is safe. The choice is stored in the model file (``extra["instance_step"]``) and
is what ``segment`` uses when the caller gives no ``min_confidence``
(:func:`model_min_confidence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CANDIDATES",
    "ConfidenceCalibration",
    "calibrate_min_confidence",
    "choose_min_confidence",
    "chosen_min_confidence",
    "model_min_confidence",
    "painted_region",
    "with_calibration",
]

#: The values tried, from keeping every object to a strict filter.
CANDIDATES = (0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5)
#: Where the choice is stored in a checkpoint's ``extra``.
EXTRA_KEY = "instance_step"


@dataclass(frozen=True)
class ConfidenceCalibration:
    """The outcome of a calibration.

    Attributes
    ----------
    min_confidence : the chosen value.
    scores : candidate -> AP@0.5 of the objects kept at it, against the annotation.
    cells : annotated cells scored (inside the regions).
    previous : the starting model's value, which a tie goes to.
    """

    min_confidence: float
    scores: dict[float, float]
    cells: int
    previous: float

    @property
    def decided(self) -> bool:
        """Whether the annotation told the candidates apart (else every one scored the same
        and the value stayed ``previous``)."""
        return len(set(self.scores.values())) > 1

    def describe(self) -> str:
        """One sentence for a status line or a log: ``minimum confidence 0.1, chosen on 12
        annotated cells (AP@0.5 …; 0.35 would give …)``, or, when the cells did not tell the
        values apart, ``minimum confidence stays 0.35: …``."""
        chosen = self.scores[self.min_confidence]
        if not self.decided:
            return (
                f"minimum confidence stays {self.min_confidence:g}: the {self.cells} annotated "
                f"cells score the same at every value tried (AP@0.5 {chosen:.2f})"
            )
        text = (
            f"minimum confidence {self.min_confidence:g}, chosen on {self.cells} annotated "
            f"cells (AP@0.5 {chosen:.2f}"
        )
        if self.previous != self.min_confidence and self.previous in self.scores:
            text += f"; {self.previous:g} would give {self.scores[self.previous]:.2f}"
        return text + ")"

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record stored in the model file."""
        return {
            "min_confidence": float(self.min_confidence),
            "chosen_on_cells": int(self.cells),
            "ap50_by_min_confidence": {f"{k:g}": round(float(v), 4) for k, v in self.scores.items()},
        }


def chosen_min_confidence(checkpoint: Any) -> float | None:
    """The minimum confidence a model's file chose for itself (see the module notes), or
    ``None`` when it chose none (or the record is not a valid value)."""
    extra = getattr(checkpoint, "extra", None) or {}
    record = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
    value = record.get("min_confidence") if isinstance(record, dict) else None
    if isinstance(value, (int, float)) and 0.0 <= float(value) < 1.0:
        return float(value)
    return None


def model_min_confidence(checkpoint: Any) -> float:
    """The minimum confidence to segment with by default: the one the model's file chose, else
    :data:`~napari_unet.engine.label_step.MIN_CONFIDENCE`."""
    from napari_unet.engine.label_step import MIN_CONFIDENCE

    chosen = chosen_min_confidence(checkpoint)
    return MIN_CONFIDENCE if chosen is None else chosen


def painted_region(labels: np.ndarray, diameter: float | None) -> np.ndarray:
    """Where painted ``labels`` can be trusted when no annotated region was drawn: the painted
    cells grown by half a cell ``diameter`` (px; 8 px when unknown). Beyond it an unpainted
    cell is not a false object: the user may simply not have painted it."""
    from napari_unet.engine.corrections import grow_mask

    margin = 8 if not diameter else max(1, round(float(diameter) / 2))
    return grow_mask(np.asarray(labels) > 0, margin)


def with_calibration(extra: dict | None, calibration: ConfidenceCalibration) -> dict:
    """A copy of a checkpoint's ``extra`` that records ``calibration``."""
    return {**(extra or {}), EXTRA_KEY: calibration.as_dict()}


def choose_min_confidence(
    scored: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    previous: float,
    candidates: Sequence[float] = CANDIDATES,
) -> ConfidenceCalibration:
    """Choose the minimum confidence from unfiltered segmentations and their annotations.

    Parameters
    ----------
    scored : per image ``(labels, confidence, annotation, region)``: the (Y, X) instance labels
        segmented with no confidence filter, the mean interior probability of each of their
        objects (index = label id, as :func:`~napari_unet.engine.instances.object_confidence`
        returns it), the (Y, X) annotated instance labels and the (Y, X) bool region where the
        annotation holds (``None``: everywhere).
    previous : the starting model's value; ties go to the candidate closest to it.
    candidates : the values to try; those above ``max(previous, MIN_CONFIDENCE)`` are left out
        (see the module notes).

    Returns
    -------
    ConfidenceCalibration

    Raises
    ------
    ValueError
        When no annotated cell lies inside the regions: there is nothing to choose on.
    """
    from napari_unet.engine.label_step import MIN_CONFIDENCE
    from napari_unet.engine.metrics import evaluate

    upper = max(float(previous), MIN_CONFIDENCE)
    totals = {float(c): np.zeros(3) for c in candidates if c <= upper + 1e-9}
    cells = 0
    for labels, confidence, annotation, region in scored:
        for c in totals:
            weak = np.asarray(confidence) < c
            weak[0] = False
            kept = np.where(weak[labels], 0, labels)
            m = evaluate(kept, annotation, mask=region, thresholds=(0.5,))
            totals[c] += (m["tp@0.5"], m["fp@0.5"], m["fn@0.5"])
        cells += int(m["n_gt"])  # the annotated cells in the region: the same for every value
    if cells == 0:
        raise ValueError("no annotated cell to choose the minimum confidence on")
    scores = {c: float(tp / max(tp + fp + fn, 1.0)) for c, (tp, fp, fn) in totals.items()}
    best = max(scores.values())
    tied = [c for c, s in scores.items() if s >= best - 1e-9]
    chosen = min(tied, key=lambda c: (abs(c - previous), c))
    return ConfidenceCalibration(chosen, scores, cells, float(previous))


def calibrate_min_confidence(
    model: Any,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    regions: Sequence[np.ndarray | None] | None = None,
    *,
    diameter: float | None = None,
    channel_axis: int | None = None,
    device: Any = "cpu",
    previous: float | None = None,
    **options: Any,
) -> ConfidenceCalibration:
    """Segment annotated images with ``model`` and choose its minimum confidence on them.

    Parameters
    ----------
    model : anything :func:`~napari_unet.engine.models.load_model` accepts.
    images : 2-D images ((Y, X), or (Y, X, C) / (C, Y, X) with ``channel_axis``).
    labels : (Y, X) annotated instance labels, one per image.
    regions : (Y, X) bool per image (True where the annotation holds) or ``None``.
    diameter : the cells' diameter in image pixels (``None``: the model's own, i.e. the images
        are at the model's scale).
    previous : the value a tie goes to; ``None``: the model file's own
        (:func:`model_min_confidence`).
    options : further options of :func:`~napari_unet.engine.segment.iter_segment`
        (``threshold``, ``min_size``, ``background_threshold``, ``intensity_range``...);
        ``min_confidence`` is ignored.

    Returns
    -------
    ConfidenceCalibration
    """
    from napari_unet.engine.events import drive
    from napari_unet.engine.instances import object_confidence
    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import iter_segment

    pair = load_model(model, device="cpu")
    if previous is None:
        previous = model_min_confidence(pair[1])
    if diameter is None:
        diameter = pair[1].diameter
    regions = [None] * len(images) if regions is None else list(regions)
    options.pop("min_confidence", None)
    scored = []
    for image, annotation, region in zip(images, labels, regions, strict=True):
        result = drive(
            iter_segment(
                image,
                pair,
                channel_axis=channel_axis,
                diameter=diameter,
                device=device,
                min_confidence=0.0,
                **options,
            )
        )
        confidence = object_confidence(result.labels.astype(np.int64), result.probabilities)
        scored.append((result.labels, confidence, np.asarray(annotation), region))
    return choose_min_confidence(scored, previous=previous)
