"""Training data made ready for :func:`~napari_unet.engine.training.iter_train`: each image
normalised to (C, Y, X) with its instance labels, class target and pixel weights
(:class:`TrainingSample`, :func:`prepare_sample`), and the validation data split off them
(:func:`hold_out`: whole images when there are enough, else annotated cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_unet.engine.train_config import TrainConfig

__all__ = ["TrainingSample", "as_lists", "hold_out", "prepare_sample"]


@dataclass
class TrainingSample:
    """One prepared training image: normalised (C, Y, X) image, instance labels, class target
    and pixel weights (0 = ignored), all on the CPU; ``share`` scales how often it is drawn."""

    image: np.ndarray
    labels: np.ndarray
    target: np.ndarray
    weights: np.ndarray
    share: float = 1.0


def as_lists(images, labels, regions):
    if isinstance(images, np.ndarray):
        images = [images]
    if isinstance(labels, np.ndarray):
        labels = [labels]
    images, labels = list(images), list(labels)
    if regions is None or isinstance(regions, np.ndarray):
        regions = [regions] * len(images) if regions is None else [regions]
    regions = list(regions)
    if not images:
        raise ValueError("no training images were given")
    if not (len(images) == len(labels) == len(regions)):
        raise ValueError(
            f"got {len(images)} images, {len(labels)} label images and {len(regions)} region "
            "masks; they must match one to one"
        )
    return images, labels, regions


def prepare_sample(image, labels, regions, channel_axis, in_channels, n_classes, normalization, config):
    """Normalise one image to (C, Y, X) float32 and build its target and weights."""
    from napari_unet.engine.annotation_checks import region_mask
    from napari_unet.engine.layout import as_planes, instance_ids
    from napari_unet.engine.normalization import normalize
    from napari_unet.engine.weights import training_targets

    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be integer instance ids, not {labels.dtype}")
    # one plane: a stack's annotated planes are passed as a list
    (chw,) = as_planes(image, in_channels=in_channels, channel_axis=channel_axis)
    if labels.shape != chw.shape[1:]:
        raise ValueError(
            f"labels of shape {labels.shape} do not match the image's spatial shape {chw.shape[1:]}"
        )
    if regions is not None:
        regions = np.asarray(regions)
        if regions.shape != labels.shape:
            raise ValueError(
                f"the region mask of shape {regions.shape} does not match the labels {labels.shape}"
            )
        regions = region_mask(regions)
    norm = normalize(chw, low=normalization["low"], high=normalization["high"], channel_axis=0)
    labels = instance_ids(labels)
    target, weights, _ = training_targets(
        labels,
        regions,
        w0=config.w0,
        sigma=config.sigma,
        n_classes=n_classes,
        class_balance=config.class_balance,
    )
    return TrainingSample(
        image=np.ascontiguousarray(norm, dtype=np.float32),
        labels=labels,
        target=target.astype(np.int64, copy=False),
        weights=weights.astype(np.float32, copy=False),
    )


def hold_out(samples: list[TrainingSample], config: TrainConfig, rng: np.random.Generator):
    """Split off validation data: whole images when there are enough, else annotated cells.

    Only images with an annotated pixel (weight > 0) are held out whole: one without would score
    nothing, and holding out the annotated ones could leave training nothing but weight 0. Cells
    are not held out when their surroundings would cover every annotated pixel left to train on.

    Returns the training samples (with held-out cells' surroundings set to weight 0), the
    validation samples and, per validation sample, the bool mask where it is scored.
    """
    if config.val_fraction <= 0:
        return samples, [], []
    annotated = [i for i, s in enumerate(samples) if s.weights.any()]
    n_val_images = int(round(config.val_fraction * len(annotated)))
    if n_val_images >= 1 and len(annotated) - n_val_images >= 1:
        order = rng.permutation(annotated).tolist()
        unannotated = [s for s in samples if not s.weights.any()]
        val = [samples[i] for i in order[:n_val_images]]
        train = [samples[i] for i in order[n_val_images:]] + unannotated
        return train, val, [s.weights > 0 for s in val]
    # one image (or a few): hold out a fraction of the painted cells and their surroundings
    cells = [(i, cid) for i, s in enumerate(samples) for cid in np.unique(s.labels[s.labels > 0])]
    n_val_cells = int(math.floor(config.val_fraction * len(cells)))
    if len(cells) < 4 or n_val_cells < 1:
        return samples, [], []
    chosen = set(rng.choice(len(cells), size=n_val_cells, replace=False).tolist())
    margin = max(2, int(round(2 * config.sigma)))
    train, val, masks = [], [], []
    for i, s in enumerate(samples):
        ids = [cid for j, (k, cid) in enumerate(cells) if k == i and j in chosen]
        if not ids:
            train.append(s)
            continue
        held = ndi.binary_dilation(np.isin(s.labels, ids), iterations=margin)
        held &= s.weights > 0
        weights = s.weights.copy()
        weights[held] = 0
        train.append(TrainingSample(s.image, s.labels, s.target, weights, s.share))
        val.append(s)
        masks.append(held)
    if not any(s.weights.any() for s in train):  # cells packed within `margin` of each other
        return samples, [], []
    return train, val, masks
