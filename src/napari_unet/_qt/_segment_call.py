"""The one engine call behind both the Segment panel and the Fine-tune preview, so that the
preview shows what Segment will give (same image handling, same options)."""

from __future__ import annotations

from typing import Any

#: the Segment panel's options that decide its result (besides the model and the device)
SEGMENT_OPTION_NAMES = (
    "diameter", "threshold", "min_size", "min_confidence", "background_threshold", "tta"
)


def engine_options(options: dict[str, Any], layer: Any) -> dict[str, Any]:
    """The Segment panel's ``options`` as the engine takes them for the image ``layer``: the
    choice ``use_contrast_limits`` becomes ``intensity_range``, the layer's contrast limits
    (the intensities shown black and white are mapped to the model's 0 and 1)."""
    options = dict(options)
    if options.pop("use_contrast_limits", False) and layer is not None:
        low, high = (float(v) for v in layer.contrast_limits)
        options["intensity_range"] = (low, high)
    return options


def segment_call(
    image: Any, channel_axis: int | None, model: Any, *, stack: bool = False, **options: Any
):
    """Worker-thread generator: segment ``image`` (engine layout: ``(Y, X[, C])`` or, with
    ``stack``, ``(P, Y, X[, C])``; ``channel_axis`` ``-1`` or ``None``) with ``model`` (what
    ``load_model`` accepts); yields the engine's events, returns the ``SegmentResult``.

    RGB(A) is averaged to gray for a one-channel model; a diameter is passed only to a model
    that stores its training diameter (others are never rescaled). ``options``: the keywords
    of :func:`~napari_unet.engine.segment.iter_segment` (``device`` and
    :data:`SEGMENT_OPTION_NAMES`).
    """
    import numpy as np

    from napari_unet.engine.layout import gray_for_model
    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import iter_segment

    net, checkpoint = load_model(model)
    image, channel_axis = gray_for_model(
        np.asarray(image), channel_axis=channel_axis, in_channels=int(net.config.in_channels)
    )
    if checkpoint.diameter is None:
        options.pop("diameter", None)
    return (
        yield from iter_segment(
            image, (net, checkpoint), channel_axis=channel_axis, stack=stack, **options
        )
    )
