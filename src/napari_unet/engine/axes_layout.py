"""How an image's named axes map onto the engine's layout and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.engine.axes import (
    PLANE_LETTERS,
    SMALL_AXIS,
    check_axes,
    detect_axes,
    other_readings,
)
from napari_unet.engine.layout import check_shape, gray_for_model

__all__ = ["AxesLayout", "guess_axes"]


def guess_axes(
    shape: tuple[int, ...], *, file_axes: str = "", rgb: bool = False, in_channels: int = 1
) -> tuple[str, str]:
    """The axes of an image of ``shape`` for a model of ``in_channels``, and a sentence saying
    they are a guess ("" when they are not).

    :func:`~napari_unet.engine.axes.detect_axes`' reading, or, when its shape fits other
    readings as well (:func:`~napari_unet.engine.axes.other_readings`, e.g. two small axes
    before Y and X) and the model cannot read that one, the first other reading it can: a
    one-channel model reads a (2, 3, Y, X) array as ``TZYX``, not as ``ZCYX``.

    Examples
    --------
    >>> guess_axes((20, 64, 64))
    ('ZYX', '')
    >>> guess_axes((2, 3, 64, 64))[0]
    'TZYX'
    """
    shape = tuple(int(s) for s in shape)
    detected = detect_axes(shape, file_axes=file_axes, rgb=rgb, in_channels=in_channels)
    others = other_readings(shape, file_axes=file_axes, rgb=rgb, in_channels=in_channels)
    if not others:
        return detected, ""
    fitting = [a for a in (detected, *others) if _fits(shape, a, in_channels)]
    chosen = fitting[0] if fitting else detected
    rest = [a for a in (detected, *others) if a != chosen]
    small = [str(shape[i]) for i, c in enumerate(chosen) if c not in "YX" and shape[i] <= SMALL_AXIS]
    return chosen, (
        f"shape {shape} has {len(small)} small axes besides Y and X (sizes {', '.join(small)}), "
        f"so its axes are a guess: read as {chosen} (also possible: {', '.join(rest)})"
    )


def _fits(shape: tuple[int, ...], axes: str, in_channels: int) -> bool:
    try:
        AxesLayout(shape, axes).check_model(in_channels=in_channels)
    except ValueError:
        return False
    return True


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

    def for_blocks(
        self, data: Any, *, in_channels: int, ngff: bool = False
    ) -> tuple[Any, int | None, bool]:
        """:meth:`for_model` read lazily for the block-wise engine: the image, its
        ``channel_axis`` and ``stack`` for
        :func:`~napari_unet.engine.blockwise.iter_segment_blockwise`, several plane axes
        (``TZYX``) kept apart so that the labels come back in them (:attr:`label_shape`).

        Raises ``ValueError`` for layouts whose labels cannot be written block by block in the
        image's own axes: planes after Y or X (a (Y, X, Z) TIFF holds Y pages of X x Z pixels,
        each needing every plane at once), and with ``ngff`` (an OME-Zarr output) plane axes
        out of NGFF's order (``ZTYX``); and :meth:`check_model`'s for a model that does not
        fit."""
        if not self.label_axes.endswith("YX"):
            raise ValueError(
                "block by block the labels are written plane by plane, so the plane axes must "
                "come before Y and X (e.g. ZYX, TZYX, ZCYX)"
            )
        if ngff:
            from napari_unet.engine.zarr_io import ngff_axes

            ngff_axes(self.label_axes)  # raises for ZTYX
        self.check_model(in_channels=in_channels)
        image, channel_axis = self.for_model(data, in_channels=in_channels, lazy=True)
        if len(self.lead_shape) > 1:  # for_model made T x Z one axis of planes: split it again
            image = image.reshape((*self.lead_shape, *image.shape[1:]))
        return image, channel_axis, self.stack

    def check_model(self, *, in_channels: int) -> None:
        """Check, without reading data, that :meth:`for_model` fits a model of
        ``in_channels``; raises :func:`as_planes`'s ``ValueError``."""
        shape, channel_axis = self.engine_shape(), self.engine_channel_axis
        if self.axes.endswith("C") and in_channels == 1 and shape[-1] in (3, 4):
            shape, channel_axis = shape[:-1], None
        check_shape(shape, in_channels=in_channels, channel_axis=channel_axis, stack=self.stack)
