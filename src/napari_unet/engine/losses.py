"""The training loss of the U-Net paper (Ronneberger et al. 2015, equation 1).

A pixel-wise softmax over the class logits, combined with a cross-entropy weighted by the weight
map ``w(x)`` of :mod:`napari_unet.engine.weights`::

    E = sum_x w(x) * -log p_{l(x)}(x) / sum_x w(x)

Pixels with ``w(x) = 0`` do not count: this is how unannotated pixels of a sparse annotation are
ignored. Normalising by the sum of the weights keeps the loss comparable between tiles with
different amounts of annotation.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["center_crop", "weighted_cross_entropy"]

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)


def center_crop(array: ArrayLike, shape: tuple[int, ...]) -> ArrayLike:
    """Crop the last ``len(shape)`` axes of ``array`` to ``shape``, keeping the centre.

    Valid convolutions shrink the network's output; this aligns targets, weights or inputs with it.
    When a size difference is odd, the extra pixel is dropped at the end.

    Parameters
    ----------
    array : numpy array or torch tensor, (..., rows, columns).
    shape : the wanted sizes of the last axes, e.g. (rows, columns); each no larger than the input.

    Returns
    -------
    A view (numpy) or a view (torch) of ``array`` with the last axes cropped; same type and dtype.

    Examples
    --------
    >>> center_crop(np.arange(25).reshape(5, 5), (3, 3))[0].tolist()
    [6, 7, 8]
    """
    shape = tuple(int(s) for s in shape)
    have = tuple(array.shape[-len(shape):]) if shape else ()
    if any(s > h for s, h in zip(shape, have, strict=True)):
        raise ValueError(f"cannot crop axes of size {have} to the larger {shape}")
    index = tuple(slice((h - s) // 2, (h - s) // 2 + s) for h, s in zip(have, shape, strict=True))
    return array[(..., *index)]


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by ``w(x)`` (equation 1 of the paper).

    Parameters
    ----------
    logits : (N, C, h, w) float tensor, the network's raw class scores.
    target : (N, H, W) int64 class indices (0..C-1), with H >= h and W >= w; center-cropped to
        (h, w). The class of a pixel with weight 0 is not used but must still be in 0..C-1.
    weights : (N, H, W) float pixel weights ``w(x)``, center-cropped alike; 0 ignores a pixel.
        None weighs every pixel 1 (plain mean cross-entropy).
    eps : lower bound of the weight sum in the denominator.

    Returns
    -------
    0-d float tensor: ``sum(w * -log softmax(logits)[target]) / max(sum(w), eps)``. When all
    weights are 0 it is 0 (not NaN) and still backpropagates (zero gradients).
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, h, w), got shape {tuple(logits.shape)}")
    if target.ndim != 3 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"target must be (N, H, W) with N = {logits.shape[0]}, got shape {tuple(target.shape)}"
        )
    size = tuple(logits.shape[-2:])
    target = center_crop(target, size).to(device=logits.device, dtype=torch.int64)
    log_p = F.log_softmax(logits.float(), dim=1)
    nll = -log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    if weights is None:
        return nll.mean()
    if weights.ndim != 3 or weights.shape[0] != logits.shape[0]:
        raise ValueError(f"weights must be (N, H, W), got shape {tuple(weights.shape)}")
    weights = center_crop(weights, size).to(device=logits.device, dtype=log_p.dtype)
    return (nll * weights).sum() / weights.sum().clamp_min(eps)
