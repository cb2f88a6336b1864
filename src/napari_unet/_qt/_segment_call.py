"""The one engine call behind both the Segment panel and the Fine-tune preview, so that the
preview shows what Segment will give (same image handling, same options), and the Segment
panel's worker job around it (:func:`segment_job`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_unet._qt._layers import Layout
    from napari_unet._qt._session import ModelEntry

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


class ModelUnusable(ValueError):
    """The model of ``entry`` could not be loaded (a corrupt file, one that is no model, a file
    gone missing). The message is the sentence the user reads, naming the file; the Segment
    panel then goes back to the model it used before (:meth:`Session.fall_back`)."""

    def __init__(self, entry: ModelEntry, reason: str) -> None:
        super().__init__(reason)
        self.entry = entry


def load_entry(entry: ModelEntry) -> Any:
    """Worker thread: ``load_model(entry.resolve())``, the ``(network, Checkpoint)`` pair; a
    model that cannot be loaded raises :class:`ModelUnusable` naming ``entry``."""
    from napari_unet._qt._worker import user_message
    from napari_unet.engine.models import load_model

    try:
        return load_model(entry.resolve())
    except (ValueError, OSError) as exc:  # CheckpointError, PackageError, FileNotFoundError
        reason = user_message(exc, "Loading").removeprefix("Loading failed: ").rstrip(".")
        raise ModelUnusable(entry, reason) from exc


def fall_back_after(error: BaseException | None, session: Any) -> str | None:
    """After a job failed with ``error``: when the session's model could not be loaded
    (:class:`ModelUnusable`), make the model used before it current again
    (:meth:`~napari_unet._qt._session.Session.fall_back`), so that the next job does not fail
    the same way, and return the status line that says so, naming the file; else ``None``."""
    if not isinstance(error, ModelUnusable):
        return None
    back = session.fall_back(error.entry)
    if back is None:
        return None
    from napari_unet._qt._controls import model_description

    return f"failed: {model_description(error.entry)} could not be loaded; back to '{back.label}'"


@dataclass(frozen=True)
class RescaleQuestion:
    """What :func:`segment_job` returns instead of segmenting when the typed diameter would
    rescale the image by ``factor`` (beyond
    :data:`~napari_unet.engine.diameter.RESCALE_LIMIT` either way: often µm typed as pixels,
    and the work grows with the factor squared) and that was not confirmed."""

    factor: float
    diameter: float
    trained: float


def segment_job(
    data: Any, layout: Layout, entry: ModelEntry, *, confirmed: bool = False, **options: Any
):
    """Worker-thread generator: load the layer data, segment it, return the ``SegmentResult``
    (or a :class:`RescaleQuestion`, unless ``confirmed``).

    Parameters
    ----------
    data : the layer's (full-resolution) data; read here, not on the GUI thread.
    layout : how the layer's axes map onto the engine's.
    entry : the model to use; resolved here (a fine-tuned model may be built on first use).
    confirmed : the user has agreed to an extreme rescaling.
    **options : passed on to :func:`napari_unet.engine.segment.iter_segment`.
    """
    from napari_unet.engine.diameter import RESCALE_LIMIT, rescale_factor

    model = load_entry(entry)
    diameter, trained = options.get("diameter"), model[1].diameter
    factor = rescale_factor(diameter, trained)
    if not confirmed and not 1 / RESCALE_LIMIT <= factor <= RESCALE_LIMIT:
        return RescaleQuestion(factor, diameter, trained)
    image, channel_axis = layout.to_engine(data)
    return (yield from segment_call(image, channel_axis, model, stack=layout.stack, **options))
