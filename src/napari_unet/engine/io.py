"""Reading images and writing label images as TIFF files (tifffile; no torch, no Qt).

Reading
-------
:func:`read_tiff` returns the pixel data of a TIFF's first image series together with tifffile's
axes string (e.g. ``"YX"``, ``"YXS"`` for RGB, ``"ZYX"``, ``"CYX"`` for ImageJ hyperstacks,
``"QYX"`` when the file does not say). :func:`infer_layout` then decides which axis, if any, holds
the channels and whether the first axis is a stack of planes:

- 2-D data is one grayscale image;
- 3-D data: an axis marked ``S`` (RGB samples) or ``C`` (ImageJ channels) holds channels (note
  that ``tifffile.imwrite`` stores a (3, Y, X) or (4, Y, X) array as planar RGB unless given
  ``photometric="minisblack"``; ``stack=True`` reads such a file as planes); else,
  for a multichannel model, an axis whose size is the model's channel count; else a trailing
  axis of 3 or 4 after two larger ones (an RGB(A) image saved without the RGB flag); otherwise
  it is a stack of planes (Z slices or time points);
- 4-D data is a stack of multichannel planes;
- ``channel_axis`` and ``stack`` given by the user always win.

Writing
-------
:func:`write_tiff`, :func:`write_tiffs` and :func:`write_labels` write to a temporary file in the
target folder and then ``os.replace`` it (:mod:`~napari_unet.engine.atomic`), so a crash never
leaves a half-written file behind and a set of files is written all or nothing; they refuse to
replace an existing file unless ``overwrite=True``. Everything is written gray
(``photometric="minisblack"``): labels, probabilities and error maps of 3 or 4 planes or
classes are not colour channels.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.engine.wording import count

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "TiffImage",
    "check_output",
    "infer_layout",
    "list_images",
    "probe_tiff",
    "read_image",
    "read_tiff",
    "write_labels",
    "write_tiff",
    "write_tiffs",
]

#: File name endings read as images (case-insensitive).
IMAGE_SUFFIXES = (".tif", ".tiff")


class ImageReadError(ValueError):
    """A file exists but is not a TIFF image that napari-unet can use."""


@dataclass(frozen=True, eq=False)
class TiffImage:
    """The pixel data of a TIFF file and tifffile's name for each of its axes.

    ``axes`` has one letter per dimension of ``data``: ``Y``/``X`` rows/columns, ``S`` RGB
    samples, ``C`` channels, ``Z``/``T``/``Q``/``I`` planes or unknown.
    """

    data: np.ndarray
    axes: str


def _open_error(path: Path, exc: BaseException) -> ImageReadError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return ImageReadError(f"cannot read {path} as a TIFF image: {reason}")


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image file")
    return path


def _check_shape(path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str) -> None:
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype.kind == "b"):
        raise ImageReadError(f"{path} holds {dtype} data, not an image of numbers")
    if len(shape) < 2 or len(shape) > 4:
        raise ImageReadError(
            f"{path} has {count(len(shape), 'dimension')} (shape {shape}, axes {axes!r}); "
            "napari-unet reads 2-D images, 2-D images with channels and stacks of them"
        )
    if any(n == 0 for n in shape):
        raise ImageReadError(f"{path} holds an empty image (shape {shape})")


def probe_tiff(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axes of a TIFF's first image series, without reading the pixels.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ImageReadError
        The file is not a readable TIFF image (or not one napari-unet can use).
    """
    path = _check_path(path)
    try:
        with _first_series(path) as series:
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), str(series.axes)
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many kinds for broken files
        raise _open_error(path, exc) from exc
    _check_shape(path, shape, dtype, axes)
    return shape, dtype, axes


@contextlib.contextmanager
def _first_series(path: Path) -> Iterator[Any]:
    """The first image series of the TIFF file ``path``, while the file is open."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path} is a TIFF file without any image in it")
        _warn_other_series(path, tif.series)
        yield tif.series[0]


#: Files already warned about holding several images: once per file and process, though the
#: command line probes a file's header before it reads its pixels.
_SERIES_WARNED: set[Path] = set()


def _warn_other_series(path: Path, series: list[Any]) -> None:
    """Warn that only the first of several image series is read (e.g. an OME-TIFF of several
    stage positions, or the pages of one size of a multi-page TIFF whose pages differ in size),
    where the others were dropped without a word."""
    if len(series) < 2 or path.resolve() in _SERIES_WARNED:
        return
    _SERIES_WARNED.add(path.resolve())
    first = series[0]
    if all(s.kind == "generic" for s in series):  # pages without metadata, grouped by size
        read, total = len(first.pages), sum(len(s.pages) for s in series)
        message = (
            f"{path} holds {total} pages of {len(series)} different sizes; only the "
            f"{count(read, 'page')} of {_plane_size(first)} pixels {'is' if read == 1 else 'are'} "
            f"read (shape {tuple(first.shape)}), the other {total - read} "
            f"{'is' if total - read == 1 else 'are'} not, as the planes of an image must have "
            "one size: save each size to a file of its own"
        )
    else:
        message = (
            f"{path} holds {len(series)} images (TIFF series); only the first, of shape "
            f"{tuple(first.shape)} (axes {first.axes}), is read: save each image to a file of "
            "its own to use the others"
        )
    warnings.warn(message, stacklevel=4)


def _plane_size(series: Any) -> str:
    """``rows x columns`` of a series' pages."""
    return f"{series.keyframe.imagelength}x{series.keyframe.imagewidth}"


def read_tiff(path: str | os.PathLike) -> TiffImage:
    """Read the first image series of a TIFF file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    TiffImage
        ``data`` with 2 to 4 dimensions and a numeric dtype; ``axes`` as named by tifffile.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ImageReadError
        A folder, a file that is not a TIFF, a broken TIFF, or a TIFF whose data is not an
        image (no pixels, other than 2-4 dimensions, non-numeric).
    """
    path = _check_path(path)
    try:
        with _first_series(path) as series:
            axes = str(series.axes)
            data = np.asarray(series.asarray())
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises many kinds for broken files
        raise _open_error(path, exc) from exc
    if len(axes) != data.ndim:  # pragma: no cover - tifffile keeps them in step
        axes = "Q" * (data.ndim - 2) + "YX"
    _check_shape(path, data.shape, data.dtype, axes)
    return TiffImage(data, axes)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF image's pixels; see :func:`read_tiff` for the errors."""
    return read_tiff(path).data


def infer_layout(
    shape: tuple[int, ...],
    axes: str = "",
    *,
    in_channels: int = 1,
    channel_axis: int | None = None,
    stack: bool | None = None,
) -> tuple[int | None, bool]:
    """Decide which axis holds channels and whether the data is a stack of planes.

    Parameters
    ----------
    shape : the data's shape (2 to 4 dimensions).
    axes : tifffile's axes string for the data (``""`` when unknown).
    in_channels : the model's number of input channels; used to recognise a channel axis.
    channel_axis : the user's choice, or ``None`` to decide here.
    stack : the user's choice, or ``None`` to decide here.

    Returns
    -------
    (channel_axis, stack) to pass to :func:`napari_unet.engine.segment.iter_segment`.

    Raises
    ------
    ValueError
        When the user's choices do not fit the number of dimensions.

    Examples
    --------
    >>> infer_layout((512, 512, 3), "YXS")
    (2, False)
    >>> infer_layout((20, 512, 512), "ZYX")
    (None, True)
    """
    ndim = len(shape)
    axes = axes if len(axes) == ndim else ""
    if channel_axis is not None and not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel axis {channel_axis} is out of range for data of shape {shape}")
    if ndim == 2:
        if channel_axis is not None:
            raise ValueError(f"a channel axis was given but the image is 2-D (shape {shape})")
        if stack:
            raise ValueError(f"the image is 2-D (shape {shape}), not a stack of planes")
        return None, False
    if ndim == 3:
        if channel_axis is not None:
            if stack:
                raise ValueError(
                    f"data of shape {shape} cannot be both a stack and multichannel; it would "
                    "need 4 dimensions"
                )
            return channel_axis, False
        if stack:
            return None, True
        found = _channel_axis_3d(shape, axes, in_channels)
        if stack is False:
            if found is None and shape[0] <= 4 < min(shape[1:]):
                found = 0
            if found is None:
                raise ValueError(
                    f"cannot tell which axis of shape {shape} holds the channels; give the "
                    "channel axis"
                )
            return found, False
        if found is not None:
            return found, False
        return None, True
    if ndim == 4:
        if stack is False:
            raise ValueError(f"4-D data (shape {shape}) must be a stack of multichannel planes")
        if channel_axis is not None:
            if channel_axis % 4 == 0:
                raise ValueError("the channel axis cannot be the first (plane) axis of a stack")
            return channel_axis, True
        for letter in "SC":
            if letter in axes[1:]:
                return axes.index(letter, 1), True
        if shape[1] == in_channels and shape[-1] != in_channels:
            return 1, True
        return 3, True
    raise ValueError(f"napari-unet reads 2-D to 4-D data, not shape {shape}")


def _channel_axis_3d(shape: tuple[int, ...], axes: str, in_channels: int) -> int | None:
    """The channel axis :func:`~napari_unet.engine.axes.detect_axes` finds, or ``None``."""
    from napari_unet.engine.axes import detect_axes

    found = detect_axes(shape, file_axes=axes, in_channels=in_channels)
    return found.index("C") if "C" in found else None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The TIFF files (``.tif``/``.tiff``, any case) directly in ``folder``, sorted by name.

    Hidden files (starting with ``.``) are skipped.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    NotADirectoryError
        ``folder`` is a file.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that ``path`` may be written: refuse an existing file unless ``overwrite``, and a
    folder where no file can be created.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        ``path`` is a folder.
    PermissionError, NotADirectoryError
        No file can be created where ``path`` would be (read-only folder or file system).
    """
    from napari_unet.engine.atomic import check_writable

    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"the output {path} is a folder, not a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to replace it without overwrite")
    check_writable(path)
    return path


def write_tiff(
    path: str | os.PathLike, data: np.ndarray, *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write ``data`` to a TIFF file atomically (temporary file, then ``os.replace``).

    The parent folder is created when missing. ``compress`` uses lossless zlib (deflate).

    Returns
    -------
    Path of the written file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False; nothing is written.
    OSError
        The file could not be written (the sentence names ``path``); nothing is written.
    """
    return write_tiffs([(path, data)], overwrite=overwrite, compress=compress)[0]


def write_tiffs(
    items: list[tuple[str | os.PathLike, np.ndarray]],
    *,
    overwrite: bool = False,
    compress: bool = True,
) -> list[Path]:
    """Write a set of TIFF files all or nothing (e.g. a label image and its probabilities).

    Every file is written to a temporary file beside it first; only when all are written are
    they moved into place (:func:`~napari_unet.engine.atomic.commit`). An error or an
    interrupt leaves no file of the set behind. Temporary files that killed processes left for
    these targets are removed first. The files get the mode the umask gives new files.
    """
    import tifffile

    from napari_unet.engine.atomic import commit, discard, new_temp, remove_stale_temps, write_error

    arrays = [np.asarray(data) for _, data in items]
    for data in arrays:
        if data.dtype.kind not in "biuf":
            raise ValueError(f"cannot write {data.dtype} data as a TIFF image")
    paths = [check_output(path, overwrite=overwrite) for path, _ in items]
    pairs: list[tuple[Path, Path]] = []
    try:
        for path, data in zip(paths, arrays, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path)
            pairs.append((new_temp(path), path))
            try:
                tifffile.imwrite(
                    pairs[-1][0], np.ascontiguousarray(data), compression="zlib" if compress else None,
                    photometric="minisblack",  # never planar RGB: 3 planes of labels are planes
                )
            except OSError as err:
                raise write_error(path, err) from None
    except BaseException:
        discard([tmp for tmp, _ in pairs])
        raise
    commit(pairs)
    return paths


def write_labels(
    path: str | os.PathLike, labels: np.ndarray, *, overwrite: bool = False
) -> Path:
    """Write an instance label image as a uint16 TIFF (uint32 when ids reach 65536).

    Parameters
    ----------
    path : the file to write (``.tif``).
    labels : (Y, X) or (P, Y, X) integer array, values >= 0.
    overwrite : replace an existing file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False; nothing is written.
    ValueError
        ``labels`` is not a non-negative integer array.
    """
    from napari_unet.engine.instances import as_label_dtype

    return write_tiff(path, as_label_dtype(labels), overwrite=overwrite)
