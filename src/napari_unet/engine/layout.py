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
stack), C channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MIN_SIDE",
    "AxesLayout",
    "as_planes",
    "axes_choices",
    "axes_from_layout",
    "check_axes",
    "check_shape",
    "detect_axes",
    "instance_ids",
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
            f"the model expects {in_channels} channel{'s' if in_channels != 1 else ''} but the "
            f"image has {n_channels}"
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


def instance_ids(labels: Any) -> np.ndarray:
    """Instance labels as int32, the ids renumbered 1..n when one is too large for int32.

    An id is only a name, but a cast would wrap ids of 2**31 and more (uint32, uint64, int64
    files) onto other cells or onto 0; renumbering keeps every cell apart and 0 as background.

    Parameters
    ----------
    labels : integer array, any shape
        Instance ids, 0 = background; none negative.

    Returns
    -------
    int32 array of the same shape
    """
    labels = np.asarray(labels)
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


# -- axes ------------------------------------------------------------------------------------
# An axes string names every axis of an image with one letter: Y rows, X columns, C channels
# (tifffile's S, RGB samples, is read as C), and Z, T or P for an axis of planes (Z slices,
# time points, any other stack). Plane axes may stand anywhere (Y, X, Z is a stack with its
# planes last); they are flattened, in their order, into the engine's planes.

#: letters of plane axes
PLANE_LETTERS = "ZTP"
#: a trailing axis of at most this size after two larger ones is channels or planes-last
SMALL_AXIS = 4
#: the axes orders offered for each number of dimensions (the detected one is added first)
COMMON_AXES = {
    2: ("YX",),
    3: ("ZYX", "TYX", "CYX", "YXC", "YXZ", "YXT"),
    4: ("ZYXC", "ZCYX", "CZYX", "TZYX", "TYXC", "TCYX", "YXZC"),
    5: ("TZYXC", "TZCYX", "TCZYX"),
}


def check_axes(axes: str, ndim: int) -> str:
    """``axes`` in capitals, checked against an image of ``ndim`` dimensions.

    Raises
    ------
    ValueError
        With one sentence: a length other than ``ndim``, a letter other than Y, X, C (or S),
        Z, T, P, a letter given twice, or Y or X missing.

    Examples
    --------
    >>> check_axes("yxz", 3)
    'YXZ'
    """
    text = str(axes).strip().upper().replace("S", "C")
    if len(text) != ndim:
        raise ValueError(f"axes '{axes}' name {len(text)} axes but the image has {ndim} dimensions")
    unknown = sorted(set(text) - set("YXC" + PLANE_LETTERS))
    if unknown:
        raise ValueError(
            f"axes '{axes}' contain {', '.join(unknown)}; use Y, X, C (channels) and Z, T or P "
            "(planes)"
        )
    twice = sorted({letter for letter in text if text.count(letter) > 1})
    if twice:
        raise ValueError(f"axes '{axes}' name {', '.join(twice)} more than once")
    if "Y" not in text or "X" not in text:
        raise ValueError(f"axes '{axes}' must name both Y (rows) and X (columns)")
    return text


def _from_file_axes(file_axes: str, ndim: int) -> str | None:
    """A file's axes string (tifffile's) as ours, or ``None`` when it says nothing useful
    (unknown ``Q`` axes, the wrong length, no Y and X)."""
    if len(file_axes) != ndim or "Q" in file_axes.upper():
        return None
    free = iter(c for c in PLANE_LETTERS if c not in file_axes.upper())
    text = "".join(c if c in "YXCSZT" else next(free, "?") for c in file_axes.upper())
    try:
        return check_axes(text, ndim)
    except ValueError:
        return None


def detect_axes(
    shape: tuple[int, ...], *, file_axes: str = "", rgb: bool = False, in_channels: int = 1
) -> str:
    """The most likely axes of an image of ``shape``.

    In order: a file's own axes (tifffile's, unless it does not know them); napari's RGB(A)
    flag (channels last); for a multichannel model, an axis of exactly its channel count;
    a trailing axis of at most :data:`SMALL_AXIS` after two larger ones: channels when it holds
    3 or 4 (RGB, RGBA) or the model's channel count, else planes (``YXZ``); otherwise the
    leading axes are planes (``ZYX``, ``TZYX``) or, for 4-D and 5-D data with a small axis
    before the rows, channels (``ZCYX``).

    Examples
    --------
    >>> detect_axes((32, 32, 2))
    'YXZ'
    >>> detect_axes((512, 512, 3))
    'YXC'
    >>> detect_axes((20, 512, 512))
    'ZYX'
    """
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"an image needs at least 2 dimensions, not shape {tuple(shape)}")
    found = _from_file_axes(file_axes, ndim) if file_axes else None
    if found is not None:
        return found
    if ndim == 2:
        return "YX"
    if ndim > 5:
        raise ValueError(f"napari-unet reads 2-D to 5-D images, not shape {tuple(shape)}")
    lead = "TZ"[-(ndim - 3) :] if ndim > 3 else ""
    if rgb:
        return lead + "YXC"
    small_last = shape[-1] <= SMALL_AXIS < min(shape[-3], shape[-2])
    if ndim == 3:
        if in_channels > 1 and shape[-1] == in_channels:
            return "YXC"
        if in_channels > 1 and shape[0] == in_channels:
            return "CYX"
        if small_last:
            return "YXC" if shape[-1] in (3, 4, in_channels) else "YXZ"
        return "ZYX"
    before_rows = shape[-3]
    if in_channels > 1 and before_rows == in_channels != shape[-1]:
        return lead + "CYX"
    if small_last or (in_channels > 1 and shape[-1] == in_channels):
        return lead + "YXC"
    if before_rows <= SMALL_AXIS:
        return lead + "CYX"
    return ("TZP"[: ndim - 2]) + "YX"


def detect_label_axes(shape: tuple[int, ...]) -> str:
    """The most likely axes of a label image of ``shape``: :func:`detect_axes`, with an axis
    it would read as channels read as planes (labels have none; a small last axis is ``YXZ``).

    Examples
    --------
    >>> detect_label_axes((64, 64, 3))
    'YXZ'
    >>> detect_label_axes((5, 64, 64))
    'ZYX'
    """
    detected = detect_axes(shape)
    if "C" in detected:
        free = next(c for c in PLANE_LETTERS if c not in detected)
        detected = detected.replace("C", free)
    return detected


def axes_choices(shape: tuple[int, ...], detected: str) -> list[str]:
    """The axes orders to offer for an image of ``shape``: ``detected`` first, then the
    common ones (:data:`COMMON_AXES`)."""
    return list(dict.fromkeys([detected, *COMMON_AXES.get(len(shape), ())]))


def axes_from_layout(ndim: int, *, channel_axis: int | None, stack: bool) -> str:
    """The axes string of the ``channel_axis``/``stack`` arguments of :func:`as_planes`.

    Examples
    --------
    >>> axes_from_layout(4, channel_axis=-1, stack=True)
    'ZYXC'
    >>> axes_from_layout(3, channel_axis=0, stack=False)
    'CYX'
    """
    letters = list(("Z" if stack else "") + "YX")
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel axis {channel_axis} is out of range for {ndim} dimensions")
        letters.insert(channel_axis % ndim, "C")
    return check_axes("".join(letters), ndim)


@dataclass(frozen=True)
class AxesLayout:
    """How an image's axes map onto the engine's ``(Y, X[, C])`` / ``(P, Y, X[, C])`` layout
    and back: plane axes, in their order, become the planes; channels go last.

    Attributes
    ----------
    shape : the image's shape.
    axes : one letter per axis (see :func:`check_axes`).

    Examples
    --------
    >>> layout = AxesLayout((32, 32, 2), "YXZ")
    >>> layout.to_engine(np.zeros((32, 32, 2)))[0].shape
    (2, 32, 32)
    >>> layout.from_engine(np.zeros((2, 32, 32))).shape
    (32, 32, 2)
    """

    shape: tuple[int, ...]
    axes: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "axes", check_axes(self.axes, len(self.shape)))

    @property
    def channel_axis(self) -> int | None:
        """The image axis holding channels, or ``None``."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def plane_axes(self) -> tuple[int, ...]:
        """The image axes holding planes, in order."""
        return tuple(i for i, c in enumerate(self.axes) if c in PLANE_LETTERS)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """The sizes of the plane axes."""
        return tuple(self.shape[i] for i in self.plane_axes)

    @property
    def stack(self) -> bool:
        """Whether the engine sees a stack of planes."""
        return bool(self.plane_axes)

    @property
    def n_planes(self) -> int:
        """The number of planes the engine sees."""
        return int(np.prod(self.lead_shape)) if self.lead_shape else 1

    @property
    def label_axes(self) -> str:
        """The axes of a label image of this image (channels dropped, order kept)."""
        return self.axes.replace("C", "")

    @property
    def label_shape(self) -> tuple[int, ...]:
        """The shape of a label image of this image (:attr:`label_axes`)."""
        return tuple(s for s, c in zip(self.shape, self.axes, strict=True) if c != "C")

    def labels_to_engine(self, labels: Any) -> np.ndarray:
        """A label image in :attr:`label_axes` as the engine's ``(Y, X)`` / ``(P, Y, X)``."""
        return AxesLayout(self.label_shape, self.label_axes).to_engine(labels)[0]

    @property
    def spatial_ndim(self) -> int:
        """The number of axes of a label image of this image."""
        return len(self.label_axes)

    @property
    def engine_channel_axis(self) -> int | None:
        """The ``channel_axis`` to pass to the engine with :meth:`to_engine`'s array."""
        return -1 if "C" in self.axes else None

    def _order(self) -> list[int]:
        """The image axes in the engine's order: planes, Y, X, channels."""
        rest = [self.axes.index("Y"), self.axes.index("X")]
        channel = [] if self.channel_axis is None else [self.channel_axis]
        return [*self.plane_axes, *rest, *channel]

    def to_engine(self, data: Any, *, lazy: bool = False) -> tuple[np.ndarray, int | None]:
        """``data`` as ``(Y, X[, C])`` or ``(P, Y, X[, C])`` and the engine's ``channel_axis``.
        Reads lazy data (run it off the GUI thread), unless ``lazy``: then a dask array is
        reordered as a dask array (block-by-block segmentation)."""
        array = (data if lazy else np.asarray(data)).transpose(self._order())
        if self.stack:
            array = array.reshape((self.n_planes, *array.shape[len(self.plane_axes) :]))
        return array, self.engine_channel_axis

    def engine_shape(self) -> tuple[int, ...]:
        """The shape :meth:`to_engine` gives, without reading data."""
        ordered = [self.shape[i] for i in self._order()]
        if self.stack:
            return (self.n_planes, *ordered[len(self.plane_axes) :])
        return tuple(ordered)

    def from_engine(self, labels: np.ndarray) -> np.ndarray:
        """Engine output ``(Y, X)`` / ``(P, Y, X)`` in this image's axes, channels dropped
        (:attr:`label_axes`)."""
        array = np.asarray(labels).reshape((*self.lead_shape, *np.shape(labels)[-2:]))
        engine_axes = "".join(self.axes[i] for i in self.plane_axes) + "YX"
        return np.transpose(array, [engine_axes.index(c) for c in self.label_axes])

    def for_model(
        self, data: Any, *, in_channels: int, lazy: bool = False
    ) -> tuple[np.ndarray, int | None]:
        """:meth:`to_engine` (``lazy`` as there), with RGB(A) colours last (``...YXC``) turned
        gray for a one-channel model (:func:`gray_for_model`): the image and ``channel_axis`` to
        segment or train with. Channels elsewhere (``CYX``) are more often planes and are not
        merged."""
        image, channel_axis = self.to_engine(data, lazy=lazy)
        if not self.axes.endswith("C"):
            return image, channel_axis
        return gray_for_model(image, channel_axis=channel_axis, in_channels=in_channels)

    def check_model(self, *, in_channels: int) -> None:
        """Check, without reading data, that :meth:`for_model` fits a model of
        ``in_channels``; raises :func:`as_planes`'s ``ValueError``."""
        shape, channel_axis = self.engine_shape(), self.engine_channel_axis
        if self.axes.endswith("C") and in_channels == 1 and shape[-1] in (3, 4):
            shape, channel_axis = shape[:-1], None
        check_shape(shape, in_channels=in_channels, channel_axis=channel_axis, stack=self.stack)
