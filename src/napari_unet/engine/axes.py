"""Axes strings: one letter per axis of an image, checked, detected from the shape and offered.

An axes string names every axis of an image with one letter: Y rows, X columns, C channels
(tifffile's S, RGB samples, is read as C), and Z, T or P for an axis of planes (Z slices,
time points, any other stack). Plane axes may stand anywhere (Y, X, Z is a stack with its
planes last); they are flattened, in their order, into the engine's planes
(:class:`~napari_unet.engine.axes_layout.AxesLayout`).
"""

from __future__ import annotations

from napari_unet.engine.wording import count

__all__ = [
    "COMMON_AXES",
    "PLANE_LETTERS",
    "SMALL_AXIS",
    "axes_choices",
    "axes_from_layout",
    "check_axes",
    "detect_axes",
    "detect_label_axes",
    "other_readings",
]

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
        raise ValueError(
            f"axes '{axes}' name {count(len(text), 'axis', 'axes')} but the image has "
            f"{count(ndim, 'dimension')}"
        )
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


def other_readings(
    shape: tuple[int, ...], *, file_axes: str = "", rgb: bool = False, in_channels: int = 1
) -> list[str]:
    """Readings of an image of ``shape`` as likely as :func:`detect_axes`'s, which then only
    guessed; empty when the detection is sure.

    The guess is between readings when two or more axes besides Y and X are small (at most
    :data:`SMALL_AXIS`) and neither the file's axes nor the RGB flag say which holds channels:
    each of them may be the channels (for a multichannel model, only one of its channel count)
    and, for a one-channel model, none (all planes).

    Examples
    --------
    >>> other_readings((2, 3, 64, 64))
    ['CZYX', 'TZYX']
    >>> other_readings((20, 3, 64, 64))
    []
    """
    detected = detect_axes(shape, file_axes=file_axes, rgb=rgb, in_channels=in_channels)
    if rgb or (file_axes and _from_file_axes(file_axes, len(shape)) is not None):
        return []
    extra = [i for i, c in enumerate(detected) if c not in "YX"]
    if sum(shape[i] <= SMALL_AXIS for i in extra) < 2:
        return []
    sizes = (in_channels,) if in_channels > 1 else range(1, SMALL_AXIS + 1)
    channels: list[int | None] = [i for i in extra if shape[i] in sizes]
    if in_channels == 1:
        channels.append(None)
    readings = [_reading(detected, extra, channel) for channel in channels]
    return [r for r in dict.fromkeys(readings) if r != detected]


def _reading(axes: str, extra: list[int], channel: int | None) -> str:
    """``axes`` with the axes ``extra`` renamed: ``channel`` as C, the others planes (``Z``
    for one, ``TZ``/``TZP`` for more, as :func:`detect_axes` names them)."""
    planes = [i for i in extra if i != channel]
    letters = "Z" if len(planes) == 1 else "TZP"
    out = list(axes)
    for i, letter in zip(planes, letters, strict=False):
        out[i] = letter
    if channel is not None:
        out[channel] = "C"
    return "".join(out)


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
