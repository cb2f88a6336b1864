"""The Inspect panel's computations, run in its worker threads: the weight map of a labelled
plane and an elastic deformation of a plane of labels (and image)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: knots per axis of the coarse displacement grid (the paper: 3 x 3)
DEFORMATION_GRID = 3


def compute_weight_map(labels: Any, regions: np.ndarray | None, *, w0: float, sigma: float):
    """Worker thread: the engine's ``WeightMap`` of one labelled plane.

    ``regions`` (bool, or ``None`` for the whole image) are the fully annotated areas, as in
    fine-tuning: outside them only the painted cells and a thin margin count.
    """
    from napari_unet.engine.weights import annotation_mask, weight_map

    labels = np.asarray(labels)
    mask = annotation_mask(labels, regions) if regions is not None else None
    return weight_map(labels, w0=w0, sigma=sigma, mask=mask)


def _back_to(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip an interpolated image back into an integer ``dtype`` (floats stay)."""
    if not np.issubdtype(dtype, np.integer):
        return array
    info = np.iinfo(dtype)
    return np.clip(np.rint(array), info.min, info.max).astype(dtype)


def compute_deformation(
    image: Any, labels: Any, *, sigma: float, seed: int, rgb: bool = False
) -> tuple[np.ndarray | None, np.ndarray]:
    """Worker thread: one elastic deformation of the labels and, if given, the image.

    Parameters
    ----------
    image : ``(Y, X)`` or, with ``rgb``, ``(Y, X, C)`` image plane, or ``None``.
    labels : ``(Y, X)`` labels plane.
    sigma : standard deviation of the coarse displacements in pixels; 0 is the identity.
    seed : the same seed gives the same deformation.

    Returns
    -------
    (image or None, labels), in the input layouts and dtypes (labels by nearest neighbour, the
    image bicubic, rounded back into an integer dtype).
    """
    from napari_unet.engine.augment import elastic_deform

    labels = np.asarray(labels)
    if image is None:
        (warped_labels,) = elastic_deform(
            [labels], sigma=sigma, grid=DEFORMATION_GRID, orders=[0], rng=seed
        )
        return None, warped_labels
    image = np.asarray(image)
    dtype = image.dtype
    floats = image.astype(np.float32)
    if rgb:  # (Y, X, C) -> (C, Y, X), the engine's channel layout
        floats = np.moveaxis(floats, -1, 0)
    warped_image, warped_labels = elastic_deform(
        [floats, labels], sigma=sigma, grid=DEFORMATION_GRID, orders=[3, 0], rng=seed
    )
    if rgb:
        warped_image = np.moveaxis(warped_image, 0, -1)
    return _back_to(warped_image, dtype), warped_labels
