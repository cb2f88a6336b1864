"""Checks of a fine-tuning run, computed in its worker thread (numpy and scipy, no Qt): warnings
about annotations that teach the wrong thing
(:func:`~napari_unet.engine.annotation_checks.annotation_warnings`, shared with ``napari-unet
train``), and how well a model finds the painted cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.engine.annotation_checks import annotation_warnings

__all__ = [
    "PaintedScore",
    "annotation_warnings",
    "closing_status",
    "describe_scores",
    "hand_over_hint",
    "painted_score",
    "refuse_non_finite",
]


def refuse_non_finite(image: Any, name: str) -> np.ndarray:
    """The image plane ``image`` read (``np.asarray``), or ``ValueError`` naming the layer
    ``name`` when it holds NaN or infinite values (the engine found them steps later, naming no
    layer). A lazy (dask, zarr) plane is read here: call it in the worker thread for those."""
    values = np.asarray(image)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise ValueError(
            f"the image '{name}' holds NaN or infinite values on this plane; replace them "
            "(e.g. by 0) before fine-tuning"
        )
    return values


@dataclass(frozen=True)
class PaintedScore:
    """How a segmentation compares with the painted cells, inside the annotated area.

    Attributes
    ----------
    found : painted cells matched by one segmented object (IoU at least 0.5).
    painted : painted cells.
    extra : segmented objects that match no painted cell.
    """

    found: int
    painted: int
    extra: int

    @property
    def errors(self) -> int:
        """Painted cells missed plus extra objects."""
        return self.painted - self.found + self.extra

    def sentence(self) -> str:
        """``"7 of 8 painted cells found, 1 extra object"``."""
        from napari_unet.engine.wording import count

        return (
            f"{self.found} of {count(self.painted, 'painted cell')} found, "
            f"{count(self.extra, 'extra object')}"
        )


def painted_score(
    found: np.ndarray, painted: np.ndarray, regions: np.ndarray | None
) -> PaintedScore:
    """Compare segmented labels ``found`` with the ``painted`` cells of one (Y, X) plane, in
    the area the annotation covers (the regions and the painted cells; everything without
    regions), with the engine's object matching at IoU 0.5."""
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.weights import annotation_mask

    mask = annotation_mask(painted, regions)
    scores = evaluate(np.asarray(found), np.asarray(painted), mask=mask, thresholds=(0.5,))
    return PaintedScore(
        found=int(scores["tp@0.5"]), painted=int(scores["n_gt"]), extra=int(scores["fp@0.5"])
    )


def describe_scores(before: Any, after: Any) -> str:
    """``"painted cells: before 3 of 8 found (5 extra objects), after ..."`` for the panel."""
    parts = []
    for when, score in (("before", before), ("after", after)):
        if score is not None:
            parts.append(f"{when}: {score.sentence()}")
    return "; ".join(parts)


def hand_over_hint(before: Any, after: Any, *, used: bool = False) -> str:
    """What to do with a fine-tuned model that scored ``after`` on the painted cells, the start
    model ``before`` (``PaintedScore`` or ``None``): use it, unless it makes more errors.
    ``used``: Segment uses the fine-tuned model already (*Use for Segment* was clicked)."""
    from napari_unet.engine.wording import count

    if before is None or after is None or after.errors <= before.errors:
        return "Segment uses it." if used else "Click 'Use for Segment' to segment with it."
    better = f"The start model did better ({count(before.errors, 'error')} against {after.errors})"
    if used:
        return (
            f"{better}, though Segment uses the fine-tuned one: train longer or paint more cells."
        )
    return (
        f"{better}: keep it, or train longer or paint more cells; 'Use for Segment' makes the "
        "fine-tuned one current all the same."
    )


def closing_status(outcome: str, before: Any, after: Any, *, used: bool = False) -> str:
    """The Fine-tune panel's last status line of a run, once its closing check has scored the
    kept model: the run's ``outcome`` (``"done after step 40 (1 min, 0.52 s per step)"``), the
    scores of the start model (``before``) and the kept one (``after``) on the painted cells,
    and what to do with it (:func:`hand_over_hint`). Built from the run alone, never from
    whatever the status line shows when the check ends (a save, another run)."""
    return (
        f"{outcome}. Painted cells, {describe_scores(before, after)}. "
        f"{hand_over_hint(before, after, used=used)}"
    )
