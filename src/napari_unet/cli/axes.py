"""The ``--axes`` option of the commands that read images: one letter per axis, detected when
not given (:func:`napari_unet.engine.axes.detect_axes`)."""

from __future__ import annotations

import argparse
from typing import Any

from napari_unet.cli.files import non_empty

AXES_HELP = (
    "the image's axes, one letter each: Y, X, C (channels), Z/T (planes), e.g. YX, ZYX, YXC, "
    "CYX, YXZ, ZCYX (default: detected; a trailing axis of at most 4 after two larger ones is "
    "channels, or planes for a one-channel model unless it holds 3-4 colours)"
)


#: ``--axes``' ``type``: an empty string would mean "detect" without a word; leaving the
#: option out detects
axes_text = non_empty("one letter per axis (e.g. ZYX)", "; leave --axes out to detect the axes")


def add_axes_option(parser: argparse.ArgumentParser, about: str = AXES_HELP) -> None:
    """Add ``--axes`` to ``parser``."""
    parser.add_argument("--axes", type=axes_text, metavar="AXES", help=about)


def choose_axes(
    shape: tuple[int, ...],
    file_axes: str,
    args: Any,
    *,
    in_channels: int,
    name: Any,
    warn: bool = True,
) -> str:
    """The axes of an input of ``shape``: ``--axes``, else those of ``--channel-axis`` /
    ``--stack`` where the command has them, else detected
    (:func:`~napari_unet.engine.axes_layout.guess_axes`; a guess between readings is said in a
    warning naming the file, the axes chosen and ``--axes``, unless not ``warn``). Raises
    ``UsageError`` with the file's ``name`` for a choice that does not fit."""
    from napari_unet.cli.output import UsageError, warning
    from napari_unet.engine.axes import axes_from_layout, check_axes
    from napari_unet.engine.axes_layout import guess_axes
    from napari_unet.engine.io import infer_layout

    channel_axis = getattr(args, "channel_axis", None)
    stack = getattr(args, "stack", None)
    try:
        if args.axes:
            if channel_axis is not None or stack is not None:
                raise ValueError("give --axes or --channel-axis/--stack, not both")
            return check_axes(args.axes, len(shape))
        if channel_axis is not None or stack is not None:
            channel_axis, stack = infer_layout(
                shape, file_axes, in_channels=in_channels, channel_axis=channel_axis, stack=stack
            )
            return axes_from_layout(len(shape), channel_axis=channel_axis, stack=stack)
        axes, guess = guess_axes(shape, file_axes=file_axes, in_channels=in_channels)
        if guess and warn:
            warning(f"{name}: {guess}; pass --axes to choose")
        return axes
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
