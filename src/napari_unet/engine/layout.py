"""The input layout: one check that turns any accepted image into planes of channels.

Prediction (:func:`~napari_unet.engine.tiling.iter_predict`), segmentation
(:func:`~napari_unet.engine.segment.iter_segment`), training
(:func:`~napari_unet.engine.training.iter_train`) and the command line's header check all accept
the same layouts and refuse the rest with the same sentences:

========================  ===========================================
layout                    arguments
========================  ===========================================
(Y, X)                    (the default)
(Y, X, C), (C, Y, X), ..  ``channel_axis`` = the channel axis
(P, Y, X)                 ``stack=True``
(P, Y, X, C), ...         ``stack=True, channel_axis=...`` (not 0)
========================  ===========================================

and hand on one shape, ``(P, C, Y, X)``: P planes (Z slices or time points, 1 without a
stack), C channels. An image's axes named by letters (``ZYX``, ``YXC``) are mapped onto these
arguments by :mod:`~napari_unet.engine.axes` and :mod:`~napari_unet.engine.axes_layout`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_unet.engine.wording import count

__all__ = [
    "MIN_SIDE",
    "as_instances",
    "as_planes",
    "check_shape",
    "gray_for_model",
    "instance_ids",
    "mask_cells",
]

#: The smallest number of rows and columns an image may have.
MIN_SIDE = 2


def as_planes(
    image: Any,
    *,
    in_channels: int,
    channel_axis: int | None = None,
    stack: bool = False,
    check_values: bool = True,
) -> np.ndarray:
    """Check ``image`` against a model's input and return it as a (P, C, Y, X) view.

    Parameters
    ----------
    image : array_like
        Any real dtype (bool, integer, float), in one of the layouts of the module notes.
    in_channels : int
        The channels the model reads; the image must have exactly these.
    channel_axis : int or None
        The axis of ``image`` holding channels; ``None`` for grayscale.
    stack : bool
        The first axis indexes planes.
    check_values : bool
        Also refuse NaN and infinite values (reads every pixel; ``False`` checks the shape and
        dtype only).

    Returns
    -------
    (P, C, Y, X) ndarray
        A view of ``image`` where possible (no copy, no dtype change); float64 values far
        outside float32's range are scaled by a power of two (a copy).

    Raises
    ------
    ValueError
        With one sentence: a dtype that is not real and numeric, the wrong number of
        dimensions (with a hint at ``channel_axis``/``stack``), a channel axis out of range or
        on the plane axis, a channel count other than ``in_channels``, an empty or too small
        image, or (``check_values``) non-finite values.

    Examples
    --------
    >>> as_planes(np.zeros((4, 5, 3)), in_channels=3, channel_axis=-1).shape
    (1, 3, 4, 5)
    >>> as_planes(np.zeros((2, 4, 5)), in_channels=1, stack=True).shape
    (2, 1, 4, 5)
    """
    array = np.asarray(image)
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise ValueError(f"image must be a real-valued numeric array, got dtype {array.dtype}")
    expected = 2 + int(channel_axis is not None) + int(bool(stack))
    if array.ndim != expected:
        layout = "(P, Y, X)" if stack else "(Y, X)"
        if channel_axis is not None:
            layout = layout[:-1] + ", C) with channel_axis=" + str(channel_axis)
        hint = ""
        if array.ndim == 3 and channel_axis is None and not stack:
            hint = "; pass channel_axis=... for channels or stack=True for a stack of planes"
        raise ValueError(
            f"image has shape {array.shape} ({array.ndim} dimensions) but {layout} was "
            f"expected{hint}"
        )
    if channel_axis is not None:
        if not -array.ndim <= channel_axis < array.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image with {array.ndim} "
                "dimensions"
            )
        if stack and channel_axis % expected == 0:
            raise ValueError("channel_axis must not be the plane axis (axis 0) of a stack")
        array = np.moveaxis(array, channel_axis, -3)
    else:
        array = array[..., np.newaxis, :, :]
    if not stack:
        array = array[np.newaxis]
    if array.size == 0:
        raise ValueError(f"image is empty (shape {np.shape(image)})")
    n_channels = array.shape[1]
    if n_channels != in_channels:
        raise ValueError(
            f"the model expects {count(in_channels, 'channel')} but the image has {n_channels}"
            + ("; pass channel_axis=... for a multichannel image" if channel_axis is None else "")
        )
    if min(array.shape[-2:]) < MIN_SIDE:
        raise ValueError(
            f"image is too small: {array.shape[-2]}x{array.shape[-1]} pixels; at least "
            f"{MIN_SIDE}x{MIN_SIDE} are needed"
        )
    if check_values and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    return _within_float32(array)


def _within_float32(array: np.ndarray) -> np.ndarray:
    """``array``, or for float64 values far outside float32's range (1e-300, 1e300) a copy
    times a power of two that brings the largest magnitude to about 1.

    The engine computes in float32, where such values become 0 or infinity; percentile
    normalisation, ``(x - p_low) / (p_high - p_low)``, does not see a common factor.
    """
    if array.dtype != np.float64:
        return array
    top = float(np.abs(array).max())
    if top == 0.0 or not math.isfinite(top) or 2.0**-60 <= top <= 2.0**60:
        return array
    return np.ldexp(array, -math.frexp(top)[1])


def check_shape(
    shape: tuple[int, ...],
    *,
    in_channels: int,
    channel_axis: int | None = None,
    stack: bool = False,
) -> None:
    """Check, before reading any pixels, that data of ``shape`` fits a model.

    Raises the same ``ValueError`` as :func:`as_planes` for wrong dimensions or a channel
    count other than ``in_channels``.
    """
    as_planes(
        np.broadcast_to(np.zeros((), np.uint8), tuple(shape)),
        in_channels=in_channels,
        channel_axis=channel_axis,
        stack=stack,
        check_values=False,
    )


def mask_cells(mask: Any, *, planes: bool = True) -> np.ndarray:
    """The cells of a bool label image (a mask): its connected regions, numbered 1, 2, ...

    This is the one rule by which every reader of label images takes a bool one: training
    (:func:`~napari_unet.engine.training.iter_train`), the metrics and the error map, the weight
    map, the diameter estimate and the command line's label files (``train``, ``evaluate``). A
    mask of separate cells has as many cells as regions, not one object; cells that touch are
    one region, and pixels that touch only at a corner are two (4-connected in a plane,
    face-connected in a volume).

    Parameters
    ----------
    mask : bool array
    planes : True (the default) for the connected regions of each (Y, X) plane of the last two
        axes, numbered on from plane to plane, as a stack (``(P, Y, X)``, ``TZYX``) is read;
        False for regions connected in all the array's axes (a volume, as
        :func:`~napari_unet.engine.metrics.match_instances` reads 3-D arrays).

    Returns
    -------
    int32 array of the same shape, 0 = background

    Examples
    --------
    >>> mask_cells(np.array([[True, True, False, True], [False, False, False, True]])).tolist()
    [[1, 1, 0, 2], [0, 0, 0, 2]]
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, np.int32)
    if mask.size == 0:
        return out
    if not planes or mask.ndim <= 2:
        ndimage.label(mask, output=out)
        return out
    offset = 0
    for plane, target in zip(
        mask.reshape((-1, *mask.shape[-2:])), out.reshape((-1, *mask.shape[-2:])), strict=True
    ):
        n = ndimage.label(plane, output=target)
        target[target > 0] += offset
        offset += n
    return out


def as_instances(labels: Any, *, planes: bool = True) -> np.ndarray:
    """Label image as instance ids: a bool mask's cells are its connected regions
    (:func:`mask_cells`), an integer (or any other) array is returned as it is.

    Parameters
    ----------
    labels : array_like, any shape
    planes : for a bool mask, see :func:`mask_cells` (True: regions of each (Y, X) plane;
        False: regions connected in all axes).

    Returns
    -------
    ndarray of the same shape: int32 for a bool mask, otherwise ``np.asarray(labels)`` (no
    copy, no check of the dtype or values; the callers check those).

    Examples
    --------
    >>> as_instances(np.array([[True, False, True]])).tolist()
    [[1, 0, 2]]
    >>> as_instances(np.array([[7, 0, 7]])).tolist()
    [[7, 0, 7]]
    """
    labels = np.asarray(labels)
    return mask_cells(labels, planes=planes) if labels.dtype == bool else labels


def instance_ids(labels: Any) -> np.ndarray:
    """Instance labels as int32, the ids renumbered 1..n when one is too large for int32.

    An id is only a name, but a cast would wrap ids of 2**31 and more (uint32, uint64, int64
    files) onto other cells or onto 0; renumbering keeps every cell apart and 0 as background.
    A bool array's cells are its connected regions in each (Y, X) plane (:func:`mask_cells`).

    Parameters
    ----------
    labels : integer or bool array, any shape
        Instance ids, 0 = background; none negative.

    Returns
    -------
    int32 array of the same shape
    """
    labels = as_instances(labels)
    if labels.size == 0 or labels.max() <= np.iinfo(np.int32).max:
        return labels.astype(np.int32, copy=False)
    ids, index = np.unique(labels, return_inverse=True)
    index = index.reshape(labels.shape) + (0 if ids[0] == 0 else 1)
    return index.astype(np.int32)


def gray_for_model(
    image: np.ndarray, *, channel_axis: int | None, in_channels: int
) -> tuple[np.ndarray, int | None]:
    """An RGB or RGBA image as one gray channel for a one-channel model.

    Returns ``(image, channel_axis)`` unchanged unless the model reads one channel and
    ``channel_axis`` holds 3 or 4 (RGB, RGBA); then the mean of the colour channels (alpha
    dropped), float32, and ``None``. Intensities are normalised per image by percentiles
    afterwards, so the weighting of the colours does not matter for a stain in one channel.
    A dask array stays lazy.

    Examples
    --------
    >>> rgb = np.zeros((4, 5, 3), np.uint8)
    >>> gray_for_model(rgb, channel_axis=-1, in_channels=1)[0].shape
    (4, 5)
    """
    array = image if hasattr(image, "shape") else np.asarray(image)  # a dask array stays lazy
    if channel_axis is None or in_channels != 1 or array.shape[channel_axis] not in (3, 4):
        return image, channel_axis
    index = [slice(None)] * array.ndim
    index[channel_axis] = slice(0, 3)
    colours = array[tuple(index)].astype(np.float32)
    return colours.mean(axis=channel_axis), None
