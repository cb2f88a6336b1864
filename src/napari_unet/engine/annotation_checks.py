"""Warnings about annotations that would teach a model the wrong thing: one id on several cells,
no background, or nothing annotated at all. Shared by the Fine-tune panel and ``napari-unet train``."""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_PIECE", "annotation_warnings", "region_mask"]

#: a piece of a cell smaller than this many pixels is taken for a stray brush dab, not a cell
MIN_PIECE = 10


def region_mask(regions: np.ndarray) -> np.ndarray:
    """The annotated-region mask as bool: non-zero pixels are annotated.

    Raises ``ValueError`` for NaN or infinite values, which ``astype(bool)`` would count as
    annotated (a float mask exported with NaN for "no data" taught those pixels as background).
    """
    regions = np.asarray(regions)
    if regions.dtype.kind == "c" or (regions.dtype.kind == "f" and not np.isfinite(regions).all()):
        raise ValueError(
            "the region mask holds NaN, infinite or complex values; mark annotated pixels with "
            "1 and the others with 0"
        )
    return regions.astype(bool)


def annotation_warnings(labels: np.ndarray, regions: np.ndarray | None) -> list[str]:
    """Sentences about painted labels that would teach the model the wrong thing.

    - one id painted on several separate objects (the cells all painted with the same id):
      the model learns them as one cell, and no border between them;
    - no unpainted pixel in the annotated area: the model sees no background;
    - no painted cell and no annotated region: the plane teaches nothing (training leaves it
      out, every pixel has weight 0).
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
            "its own id (in napari: press M for a new one), or the model learns them as one cell"
        )
    area = np.ones(labels.shape, bool) if regions is None else np.asarray(regions, bool)
    if not painted.any() and not area.any():
        out.append(
            "nothing is annotated (no painted cell, an empty region): it teaches nothing and is "
            "left out of training"
        )
    if area.any() and painted[area].all():
        where = "inside the annotated regions" if regions is not None else "on the plane"
        out.append(
            f"every pixel {where} is painted: the model sees no background; leave the "
            "background unpainted"
        )
    return out
