"""The one-call segmentation API shared by the command line, the widgets and scripts.

``iter_segment()`` is a generator twin: it yields the engine's progress events and *returns* a
:class:`SegmentResult`; ``segment()`` drains it and returns the labels. Both go through the same
steps:

1. check the image (axes, channels, values) against the model;
2. rescale it so that its cells have the diameter the model was trained at (the diameter is
   stored in the model file, ``checkpoint.diameter``);
3. predict class probabilities with the overlap-tile strategy (:func:`tiling.iter_predict`);
4. resize the probabilities back to the input's spatial shape;
5. turn them into instance labels (:func:`instances.instances_from_probabilities`).

Cell diameter
-------------
A U-Net sees a fixed neighbourhood, so it segments best when cells have the size it was trained
at. With ``diameter=D`` (pixels, in the input) the image is rescaled by
``model_diameter / D``; with ``diameter=None`` the diameter is *estimated*: a first pass at the
native scale finds cells, their median equivalent diameter is measured (weighted by area, so
that noise specks and the fragments of cells far larger than the model's do not pull it down),
and when it differs from the model's by more than 15 % the image is segmented again at the
corrected scale. With a diameter given or estimated, objects under 10 % of a cell's area are
removed unless ``min_size`` says otherwise. To keep the
first pass cheap on large inputs it only looks at a sample: the middle plane of a stack, and at
most a central 1024 x 1024 crop of that plane. (A crop, not a downsampled copy: downsampling
would shrink the very cells whose size is being measured.) Models without a stored training
diameter are never rescaled.

Heavy modules (torch, the network) are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.engine.diameter import (
    AUTO_DIAMETER_TOLERANCE,
    MIN_DIAMETER,
    RESCALE_TOLERANCE,
    check_diameter,
    estimate_diameter,
    model_diameter,
    rescale_factor,
    rescale_training_data,
    scaled_shape,
)
from napari_unet.engine.events import PlaneDone, TileDone, TileSizeReduced, drive, relay

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.checkpoint import Checkpoint
    from napari_unet.engine.model import UNet

__all__ = [
    "AUTO_DIAMETER_TOLERANCE",
    "MIN_DIAMETER",
    "SegmentResult",
    "bundled_model_path",
    "check_image_shape",
    "estimate_diameter",
    "iter_segment",
    "load_model",
    "model_diameter",
    "nuclei_sample_arrays",
    "rescale_factor",
    "rescale_training_data",
    "segment",
]

#: The rescaled image may hold at most this many pixels per plane (1 GiB of float32).
MAX_RESCALED_PIXELS = 2**28
#: The first pass of the automatic diameter estimate looks at most at a crop of this side.
ESTIMATE_CROP = 1024
#: Most extra passes on the estimation sample: after a first measurement at the native scale,
#: the sample is measured again at the scale that estimate asks for (where the cells are near
#: the model's training size and it measures them best), until two measurements agree within
#: ``ESTIMATE_AGREEMENT``.
ESTIMATE_REFINEMENTS = 2
ESTIMATE_AGREEMENT = 0.1
#: With a known cell diameter and no ``min_size``, objects smaller than this fraction of the
#: cell's disc area are removed.
MIN_AREA_OF_CELL = 0.1

_BUNDLED = ("models", "default.pt")


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """What :func:`iter_segment` returns.

    Attributes
    ----------
    labels : (Y, X) or (P, Y, X) uint16 (uint32 when there are 65536 or more cells)
        Instance labels with the input's spatial shape; 0 is background. In a stack every plane
        has its own ids (no id is used in two planes).
    probabilities : (n_classes, Y, X) or (P, n_classes, Y, X) float32
        Class probabilities (0 background, 1 cell interior, 2 border) at the input's scale.
    diameter : float or None
        The cell diameter in input pixels that was used: the one given, or the estimate;
        ``None`` when the model stores no training diameter and none was given, or when the
        estimate found too few cells.
    scale : float
        The factor the image was rescaled by before prediction (1.0 when it was not).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    diameter: float | None
    scale: float = 1.0


# ---------------------------------------------------------------------------------------------
# models


def load_model(model: Any = None, *, device: Any = "cpu") -> tuple[UNet, Checkpoint]:
    """Return a network and its metadata from any of the ways a model can be named.

    Parameters
    ----------
    model : None, "default", str or os.PathLike, UNet, or (UNet, Checkpoint)
        ``None`` or ``"default"``: the bundled model ``napari_unet/models/default.pt``. A path:
        a model file written by :func:`~napari_unet.engine.checkpoint.save_checkpoint` (e.g. by
        ``napari-unet train``). A bare :class:`~napari_unet.engine.model.UNet`: used as is, with
        default metadata (percentile normalisation 1-99.8, no training diameter). A
        ``(UNet, Checkpoint)`` pair (what this function returns) is passed through.
    device : str or torch.device
        Where the weights of a loaded file are put (``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    (UNet, Checkpoint)

    Raises
    ------
    FileNotFoundError
        The file does not exist, or the bundled model is not installed.
    napari_unet.engine.checkpoint.CheckpointError
        The file is not a napari-unet model, or is corrupt or incompatible.
    TypeError
        ``model`` is none of the above.
    """
    from napari_unet.engine.checkpoint import load_checkpoint
    from napari_unet.engine.model import UNet

    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], UNet):
        return model[0], model[1]
    if isinstance(model, UNet):
        return model, _default_checkpoint(model)
    if model is None or (isinstance(model, str) and model == "default"):
        path = bundled_model_path()
        if path is None:
            raise FileNotFoundError(
                "the bundled model is not installed (napari_unet/models/default.pt is missing); "
                "pass a model file instead, e.g. one written by `napari-unet train`"
            )
        return load_checkpoint(path, device=device)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        if path.is_dir():
            raise FileNotFoundError(f"the model path is a folder, not a model file: {path}")
        return load_checkpoint(path, device=device)
    raise TypeError(
        "model must be None, 'default', a path to a model file, a UNet or a (UNet, Checkpoint) "
        f"pair, not {type(model).__name__}"
    )


def bundled_model_path() -> Path | None:
    """The path of the bundled default model, or ``None`` when it is not installed."""
    from importlib.resources import files

    resource = files("napari_unet").joinpath(*_BUNDLED)
    try:
        path = Path(os.fspath(resource))
    except TypeError:  # pragma: no cover - a zipped install; not supported for models
        return None
    return path if path.is_file() else None


def _default_checkpoint(net: UNet) -> Checkpoint:
    """Metadata for a network that came without a model file."""
    from napari_unet.engine import checkpoint as ckpt_module

    cls = ckpt_module.Checkpoint
    known = {
        "config": net.config,
        "normalization": {"low": 1.0, "high": 99.8},
        "training": None,
        "history": [],
        "extra": {},
    }
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in known:
            kwargs[f.name] = known[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    return cls(**kwargs)


def _normalization(checkpoint: Any) -> dict | None:
    norm = getattr(checkpoint, "normalization", None)
    return dict(norm) if isinstance(norm, dict) and norm else None


# ---------------------------------------------------------------------------------------------
# cell diameter


def _check_scaled_size(spatial: tuple[int, int], factor: float, diameter: float | None) -> None:
    rows, cols = scaled_shape(spatial, factor)
    if rows * cols > MAX_RESCALED_PIXELS:
        raise ValueError(
            f"a cell diameter of {diameter:g} px would enlarge the image {factor:.3g}-fold to "
            f"{rows} x {cols} pixels per plane, more than can be processed; check the diameter"
        )


# ---------------------------------------------------------------------------------------------
# input checks and axis handling


def check_image_shape(
    shape: tuple[int, ...],
    *,
    in_channels: int,
    channel_axis: int | None = None,
    stack: bool = False,
) -> None:
    """Check, before reading any pixels, that data of ``shape`` fits a model.

    Raises the same ``ValueError`` as :func:`iter_segment` would for wrong dimensions or a
    channel count other than ``in_channels``.
    """
    _as_planes(
        np.broadcast_to(np.zeros((), np.uint8), tuple(shape)),
        channel_axis=channel_axis,
        stack=stack,
        in_channels=in_channels,
        check_values=False,
    )


def _as_planes(
    image: Any,
    *,
    channel_axis: int | None,
    stack: bool,
    in_channels: int,
    check_values: bool = True,
) -> np.ndarray:
    """Validate ``image`` and return it as a (P, Y, X, C) view (no copy where possible)."""
    array = np.asarray(image)
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise ValueError(f"image must be a real-valued numeric array, got dtype {array.dtype}")
    expected = 2 + int(channel_axis is not None) + int(bool(stack))
    if array.ndim != expected:
        layout = "(Y, X)"
        if stack:
            layout = "(P, Y, X)"
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
                f"channel_axis={channel_axis} is out of range for an image with {array.ndim} dimensions"
            )
        array = np.moveaxis(array, channel_axis, -1)
        if stack and channel_axis % expected == 0:
            raise ValueError("channel_axis must not be the plane axis (axis 0) of a stack")
    else:
        array = array[..., np.newaxis]
    if not stack:
        array = array[np.newaxis]
    if array.size == 0 or min(array.shape[1:3]) < 1:
        raise ValueError(f"image is empty (shape {np.shape(image)})")
    n_channels = array.shape[-1]
    if n_channels != in_channels:
        raise ValueError(
            f"the model expects {in_channels} channel{'s' if in_channels != 1 else ''} but the "
            f"image has {n_channels}"
            + ("; pass channel_axis=... for a multichannel image" if channel_axis is None else "")
        )
    if check_values and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    return array


def _resize_planes(planes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize the spatial axes of (P, Y, X, C) (bilinear, anti-aliased when shrinking)."""
    from skimage.transform import resize

    out = np.empty((planes.shape[0], *shape, planes.shape[-1]), np.float32)
    shrink = shape[0] < planes.shape[1] or shape[1] < planes.shape[2]
    for p in range(planes.shape[0]):
        for c in range(planes.shape[-1]):
            out[p, :, :, c] = resize(
                planes[p, :, :, c].astype(np.float32, copy=False),
                shape,
                order=1,
                mode="reflect",
                anti_aliasing=shrink,
                preserve_range=True,
            )
    return out


def _resize_probabilities(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (P, K, y, x) probabilities to (P, K, *shape), keeping them summing to 1."""
    from skimage.transform import resize

    if prob.shape[2:] == tuple(shape):
        return prob.astype(np.float32, copy=False)
    shrink = shape[0] < prob.shape[2] or shape[1] < prob.shape[3]
    out = np.empty((*prob.shape[:2], *shape), np.float32)
    for p in range(prob.shape[0]):
        for k in range(prob.shape[1]):
            out[p, k] = resize(
                prob[p, k].astype(np.float32, copy=False),
                shape,
                order=1,
                mode="edge",
                anti_aliasing=shrink,
                preserve_range=True,
            )
    np.clip(out, 0.0, 1.0, out=out)
    return out


# ---------------------------------------------------------------------------------------------
# segmentation


def _predict_pass(
    net: Any,
    planes: np.ndarray,
    *,
    factor: float,
    stack: bool,
    normalization: dict | None,
    options: dict,
    offset: int,
    total_for: Any,
    keep_plane_events: bool,
    state: dict,
) -> Generator[Any, None, np.ndarray]:
    """Predict (P, Y, X, C) planes at ``factor``; return (P, K, Y, X) float32 probabilities.

    ``TileDone`` events are re-counted for the whole job: ``done`` is offset by ``offset`` and
    ``total`` is ``total_for(pass_total)``.
    """
    from napari_unet.engine.tiling import iter_predict

    spatial = planes.shape[1:3]
    if factor != 1.0:
        work = _resize_planes(planes, scaled_shape(spatial, factor))
    else:
        work = planes
    x = work[..., 0] if work.shape[-1] == 1 else work
    if not stack:
        x = x[0]
    gen = iter_predict(
        net,
        x,
        channel_axis=-1 if work.shape[-1] > 1 else None,
        stack=stack,
        tile_size=state.get("tile_size"),
        device=options["device"],
        amp=options["amp"],
        out_dtype=np.float32,
        normalization=normalization,
        tta=options.get("tta", False),
    )

    def recount(event: Any) -> Any:
        match event:
            case TileDone():
                state["pass_total"] = event.total
                return TileDone(
                    done=offset + event.done,
                    total=total_for(event.total),
                    plane=event.plane,
                    n_planes=event.n_planes,
                )
            case PlaneDone():
                return event if keep_plane_events else None
            case TileSizeReduced():
                state["tile_size"] = event.new
        return event

    prob = np.asarray((yield from relay(gen, recount)))
    if not stack:
        prob = prob[np.newaxis]
    return _resize_probabilities(prob, spatial)


def _min_size_for(min_size: int | None, diameter: float | None) -> int | None:
    """The minimum object area: the caller's, else a fraction of a cell of ``diameter`` px.

    ``MIN_AREA_OF_CELL`` (10 %) of the disc of the given or estimated diameter; the smallest
    1 % of the nuclei of a HeLa test frame have about a third of the median area (226 vs 628
    px), so this removes noise specks and debris, not cells. ``None`` when neither is known (the
    label step then adapts to the objects' median area).
    """
    if min_size is not None or diameter is None:
        return min_size
    from napari_unet.engine.instances import DEFAULT_MIN_SIZE

    return max(DEFAULT_MIN_SIZE, math.ceil(MIN_AREA_OF_CELL * math.pi / 4.0 * diameter**2))


def _label(prob: np.ndarray, *, threshold: float, min_size: int | None, stack: bool) -> np.ndarray:
    from napari_unet.engine.instances import as_label_dtype, instances_from_probabilities

    labels = instances_from_probabilities(
        prob if stack else prob[0], threshold=threshold, min_size=min_size
    )
    return as_label_dtype(labels)


def iter_segment(
    image: np.ndarray,
    model: Any = None,
    *,
    channel_axis: int | None = None,
    stack: bool = False,
    diameter: float | None = None,
    device: Any = "auto",
    threshold: float = 0.5,
    min_size: int | None = None,
    tile_size: int | None = None,
    amp: bool = True,
    tta: bool = False,
) -> Generator[Any, None, SegmentResult]:
    """Segment cells, yielding progress events; return a :class:`SegmentResult`.

    Parameters
    ----------
    image : array
        (Y, X); (Y, X, C) or (C, Y, X) with ``channel_axis``; (P, Y, X) or (P, Y, X, C) with
        ``stack=True``. Any real dtype (uint8, uint16, float, ...); normalised like the model's
        training data (percentiles stored in the model file).
    model : None, "default", path, UNet or (UNet, Checkpoint)
        See :func:`load_model`. ``None`` is the bundled model.
    channel_axis : int or None
        The channel axis of a multichannel image; ``None`` for grayscale.
    stack : bool
        The first axis is a stack of planes (Z slices or time points), segmented one by one.
    diameter : float or None
        The typical cell diameter in pixels of ``image``. The image is rescaled by
        ``model_diameter / diameter`` (skipped within 5 %) and the result resized back. ``None``
        estimates it from a first pass (see the module notes); ignored, with a warning, for a
        model that stores no training diameter.
    device : "auto", "cpu", "cuda", "mps" or torch.device
    threshold : float in (0, 1)
        Probability above which a pixel is a confident cell interior.
    min_size : int or None
        Objects with fewer pixels (in the input's scale) are removed; ``None``: 10 % of the
        area of a cell of the given or estimated diameter, or, when no diameter is known,
        adapted to the object sizes (see :func:`~napari_unet.engine.instances.resolve_min_size`).
    tile_size : int or None
        Side of the tiles in pixels (of the rescaled image); ``None`` chooses from the memory.
    amp : bool
        Mixed precision on CUDA.
    tta : bool
        Test-time augmentation: average the network's output over the flips and quarter turns
        of every tile (8 times the network's work; gains and cost in
        docs/benchmarks/accuracy.md).

    Yields
    ------
    TileDone
        Counted over the whole job, both passes of an automatic diameter included. While the
        first pass runs the total assumes that a second full pass follows; when it is not
        needed, a final ``TileDone(done=total, total=total)`` closes the count.
    PlaneDone
        For each plane of the final result (not for the first pass of an estimate).
    TileSizeReduced
        Re-yielded from the prediction; the smaller tile is kept for a second pass.

    Returns
    -------
    SegmentResult

    Raises
    ------
    ValueError
        Before any work, for an image that does not fit (dimensions, channels, non-finite
        values) or a diameter that is not a sensible number of pixels.
    FileNotFoundError, CheckpointError
        From :func:`load_model`.

    Examples
    --------
    >>> gen = iter_segment(image, "model.pt", diameter=18)  # doctest: +SKIP
    >>> result = drive(gen)  # doctest: +SKIP
    """
    net, checkpoint = load_model(model, device="cpu")
    in_channels = int(net.config.in_channels)
    planes = _as_planes(image, channel_axis=channel_axis, stack=stack, in_channels=in_channels)
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    if min_size is not None and (int(min_size) != min_size or min_size < 0):
        raise ValueError(f"min_size must be a whole number of pixels >= 0, not {min_size}")
    if tile_size is not None and (int(tile_size) != tile_size or tile_size < 1):
        raise ValueError(f"tile_size must be a positive whole number of pixels, not {tile_size}")
    spatial = (int(planes.shape[1]), int(planes.shape[2]))
    trained = model_diameter(checkpoint)
    normalization = _normalization(checkpoint)
    options = {"device": device, "amp": amp, "tta": bool(tta)}
    state: dict[str, Any] = {"tile_size": tile_size}
    common = dict(normalization=normalization, options=options, state=state)

    if diameter is not None:
        diameter = check_diameter(diameter, spatial)
        if trained is None:
            warnings.warn(
                "the model stores no training diameter, so the image is not rescaled; "
                f"diameter={diameter:g} is ignored",
                stacklevel=2,
            )
        factor = rescale_factor(diameter, trained)
        _check_scaled_size(spatial, factor, diameter)
        prob = yield from _predict_pass(
            net,
            planes,
            factor=factor,
            stack=stack,
            offset=0,
            total_for=lambda t: t,
            keep_plane_events=True,
            **common,
        )
        labels = _label(
            prob, threshold=threshold, min_size=_min_size_for(min_size, diameter), stack=stack
        )
        return SegmentResult(labels, prob if stack else prob[0], diameter, factor)

    if trained is None:
        prob = yield from _predict_pass(
            net,
            planes,
            factor=1.0,
            stack=stack,
            offset=0,
            total_for=lambda t: t,
            keep_plane_events=True,
            **common,
        )
        labels = _label(prob, threshold=threshold, min_size=min_size, stack=stack)
        return SegmentResult(labels, prob if stack else prob[0], None, 1.0)

    # automatic diameter: a first pass on a sample at the native scale
    sample, whole = _estimation_sample(planes)
    full_pixels = planes.shape[0] * spatial[0] * spatial[1]
    sample_pixels = sample.shape[1] * sample.shape[2]
    ratio = full_pixels / sample_pixels

    def first_total(t: int) -> int:
        return t + max(1, round(t * ratio))

    sample_prob = yield from _predict_pass(
        net,
        sample,
        factor=1.0,
        stack=False,
        offset=0,
        total_for=first_total,
        keep_plane_events=False,
        **common,
    )
    done_first = int(state.get("pass_total", 0))
    sample_labels = _label(sample_prob, threshold=threshold, min_size=None, stack=False)
    estimate = estimate_diameter(sample_labels, weighting="area")
    estimate, last_pass = yield from _refine_estimate(
        net,
        sample,
        estimate,
        trained,
        threshold=threshold,
        progress=TileDone(done=done_first, total=first_total(done_first)),
        common=common,
    )
    state["pass_total"] = done_first
    factor = 1.0
    if estimate is not None and abs(estimate / trained - 1.0) > AUTO_DIAMETER_TOLERANCE:
        factor = rescale_factor(estimate, trained)
        try:
            _check_scaled_size(spatial, factor, estimate)
        except ValueError:
            warnings.warn(
                f"the estimated cell diameter ({estimate:.3g} px) would need an unreasonable "
                "rescaling; segmenting at the native scale instead",
                stacklevel=2,
            )
            factor = 1.0
    if whole and last_pass is not None and abs(last_pass[0] / factor - 1.0) < RESCALE_TOLERANCE:
        # the last refinement already segmented the whole image at (about) this scale
        factor, prob = last_pass
        yield TileDone(done=first_total(done_first), total=first_total(done_first))
        yield PlaneDone(plane=0, n_planes=1)
        labels = _label(
            prob, threshold=threshold, min_size=_min_size_for(min_size, estimate), stack=stack
        )
    elif whole and factor == 1.0:
        yield TileDone(done=done_first, total=done_first)
        yield PlaneDone(plane=0, n_planes=1)
        labels = _label(
            sample_prob,
            threshold=threshold,
            min_size=_min_size_for(min_size, estimate),
            stack=stack,
        )
        prob = sample_prob
    else:
        prob = yield from _predict_pass(
            net,
            planes,
            factor=factor,
            stack=stack,
            offset=done_first,
            total_for=lambda t: done_first + t,
            keep_plane_events=True,
            **common,
        )
        labels = _label(
            prob, threshold=threshold, min_size=_min_size_for(min_size, estimate), stack=stack
        )
    return SegmentResult(labels, prob if stack else prob[0], estimate, factor)


def _refine_estimate(net, sample, estimate, trained, *, threshold, progress, common):
    """Measure the cell diameter of ``sample`` again at the scale the last estimate asks for.

    A network measures cells best near its training size; at the native scale cells far from it
    come out fragmented or merged, and the first estimate is off. Each refinement rescales the
    sample by ``trained / estimate`` and measures again (in input pixels), at most
    :data:`ESTIMATE_REFINEMENTS` times, stopping when an estimate needs no rescaling or two
    agree within :data:`ESTIMATE_AGREEMENT`. Yields ``progress`` (the job's count does not move)
    once per batch of tiles, so that the pass can be cancelled.

    Returns the estimate and ``(factor, probabilities)`` of the last refinement pass, or None.
    """
    last_pass = None
    for _ in range(ESTIMATE_REFINEMENTS):
        if estimate is None or abs(trained / estimate - 1.0) <= AUTO_DIAMETER_TOLERANCE:
            break
        factor = rescale_factor(estimate, trained)
        try:
            _check_scaled_size(sample.shape[1:3], factor, estimate)
        except ValueError:
            break
        gen = _predict_pass(
            net,
            sample,
            factor=factor,
            stack=False,
            offset=0,
            total_for=lambda t: t,
            keep_plane_events=False,
            **common,
        )
        prob = yield from _only_progress(gen, progress)
        last_pass = (factor, prob)
        refined = estimate_diameter(
            _label(prob, threshold=threshold, min_size=None, stack=False), weighting="area"
        )
        if refined is None:
            break
        agree = abs(refined / estimate - 1.0) < ESTIMATE_AGREEMENT
        estimate = refined
        if agree:
            break
    return estimate, last_pass


def _only_progress(gen, progress):
    """Run ``gen``, yielding ``progress`` in place of its tile events; return its value."""

    def swap(event: Any) -> Any:
        match event:
            case TileDone():
                return progress
            case PlaneDone():
                return None
        return event

    return (yield from relay(gen, swap))


def _estimation_sample(planes: np.ndarray) -> tuple[np.ndarray, bool]:
    """The (1, y, x, C) part of (P, Y, X, C) looked at by the first pass, and whether it is all."""
    n, rows, cols = planes.shape[:3]
    plane = planes[n // 2 : n // 2 + 1]
    r0 = max(0, (rows - ESTIMATE_CROP) // 2)
    c0 = max(0, (cols - ESTIMATE_CROP) // 2)
    sample = plane[:, r0 : r0 + ESTIMATE_CROP, c0 : c0 + ESTIMATE_CROP]
    return sample, sample.shape[:3] == planes.shape[:3]


def segment(image: np.ndarray, model: Any = None, **kwargs: Any) -> np.ndarray:
    """Segment cells in ``image`` and return the instance labels.

    :func:`iter_segment` without the events; every keyword is passed on to it.

    Returns
    -------
    (Y, X) or (P, Y, X) uint16 (or uint32) instance labels, 0 background.

    Examples
    --------
    >>> from napari_unet.engine.api import segment
    >>> labels = segment(image, "my_model.pt", diameter=20)  # doctest: +SKIP
    """
    return drive(iter_segment(image, model, **kwargs)).labels


# ---------------------------------------------------------------------------------------------
# sample data


def nuclei_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled sample: a procedural 512 x 512 uint16 nuclei image and its int32 labels.

    A hard draw of :func:`napari_unet.engine.nucleus_generator.generate_nuclei` (seed 2015):
    about 300 nuclei of about 20 px, most of them in touching clusters, dim, bright mitotic and
    elongated ones, uneven background, defocus and Poisson-Gaussian noise. Shared by napari's
    *File > Open Sample* menu and ``napari-unet sample nuclei``.
    """
    from dataclasses import replace

    from napari_unet.engine.nucleus_generator import generate_nuclei, random_style

    style = replace(random_style(2015, diameter=24.0, hard=True), bit_depth=16)
    return generate_nuclei((512, 512), style, rng=2015)
