"""Checks of a fine-tuning run, computed in its worker thread (numpy and scipy, no Qt): warnings
about annotations that teach the wrong thing, and how well a model finds the painted cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: a piece of a cell smaller than this many pixels is taken for a stray brush dab, not a cell
MIN_PIECE = 10


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

    def sentence(self) -> str:
        """``"7 of 8 painted cells found, 1 extra object"``."""
        extra = f"{self.extra} extra object{'' if self.extra == 1 else 's'}"
        return f"{self.found} of {self.painted} painted cells found, {extra}"


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


def annotation_warnings(labels: np.ndarray, regions: np.ndarray | None) -> list[str]:
    """Sentences about painted labels that would teach the model the wrong thing.

    - one id painted on several separate objects (the cells all painted with the same id):
      the model learns them as one cell, and no border between them;
    - no unpainted pixel in the annotated area: the model sees no background.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    out = []
    pieces, _ = ndimage.label(labels > 0)
    painted = labels > 0
    pairs, sizes = np.unique(
        np.stack([labels[painted], pieces[painted]]), axis=1, return_counts=True
    )
    ids, counts = np.unique(pairs[0][sizes >= MIN_PIECE], return_counts=True)
    shared = ids[counts > 1]
    if shared.size:
        worst = int(shared[np.argmax(counts[counts > 1])])
        out.append(
            f"label {worst} covers {int(counts.max())} separate objects: paint each cell with "
            "its own id (press M for a new one), or the model learns them as one cell"
        )
    area = np.ones(labels.shape, bool) if regions is None else np.asarray(regions, bool)
    if area.any() and painted[area].all():
        where = "inside the annotated regions" if regions is not None else "on the plane"
        out.append(
            f"every pixel {where} is painted: the model sees no background; leave the "
            "background unpainted"
        )
    return out


def describe_scores(before: Any, after: Any) -> str:
    """``"painted cells: before 3 of 8 found (5 extra objects), after ..."`` for the panel."""
    parts = []
    for when, score in (("before", before), ("after", after)):
        if score is not None:
            parts.append(f"{when}: {score.sentence()}")
    return "; ".join(parts)
