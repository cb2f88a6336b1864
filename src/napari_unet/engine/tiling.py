"""Normalisation and overlap-tile prediction with mirror extrapolation (Ronneberger et al., Fig. 2).

Geometry for ``"valid"`` nets
-----------------------------
A tile's *output* is ``tile_size`` pixels per side; its input window is ``border(depth)`` pixels
larger on each side. Windows that reach past the image read the image mirrored at its borders
(``numpy.pad(mode="symmetric")`` semantics: the edge pixel is repeated, ``... c b a | a b c ...``;
for windows far outside a small image the mirroring repeats with period ``2 * n``). Output tiles
start at multiples of a stride that is itself a multiple of ``2**depth``, so every tile sees its
2x2 poolings in the same phase as one forward pass over the whole mirrored image would: the
stitched result equals that forward pass to float tolerance and has no seams. Neighbouring tiles
may overlap by a few pixels (their values there are identical).

Geometry for ``"same"`` nets
----------------------------
Input and output tiles coincide (``tile_size`` is a multiple of ``2**depth``). Tiles overlap by a
quarter of a tile and are blended with a separable linear ramp window; images smaller than a tile
are mirror-extended to the next multiple of ``2**depth``.

Normalisation
-------------
Inputs (uint8, uint16, any integer or float) are mapped to float32 by per-channel percentiles:
``(x - p_low) / (p_high - p_low)``, by default ``p_low, p_high`` = 1st and 99.8th percentile.
:func:`iter_predict` computes the percentiles **per plane** for stacks (each Z slice or time point
on its own, which follows bleaching) and applies them per tile, so the whole image is never held
as float32.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import numpy as np
import torch

from napari_unet.engine.device import release_memory, resolve_device
from napari_unet.engine.events import Event, PlaneDone, TileDone, TileSizeReduced, drive
from napari_unet.engine.layout import as_planes
from napari_unet.engine.limits import normalization_percentiles
from napari_unet.engine.model import UNet, UNetConfig, border, inference_copy
from napari_unet.engine.normalization import (  # noqa: F401 - normalize re-exported
    DEFAULT_HIGH,
    DEFAULT_LOW,
    _scale,
    normalize,
    percentile_range,
)
from napari_unet.engine.tile_geometry import (  # noqa: F401 - re-exported
    CPU_ACTIVATION_BUDGET,
    CPU_MAX_TILE,
    GPU_BUDGET_FRACTION,
    MAX_BATCH,
    MAX_TILE,
    AxisTiling,
    activation_bytes,
    axis_tiling,
    blend_window,
    choose_tiling,
    input_side,
    round_tile_size,
    tile_size_for_budget,
    valid_output_at_least,
    valid_output_at_most,
    whole_plane_tile,
)

MIRROR_MODE = "symmetric"
OUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


# ---------------------------------------------------------------------------------------------
# mirror extrapolation
# ---------------------------------------------------------------------------------------------


def mirror_indices(start: int, stop: int, n: int, *, mode: str = MIRROR_MODE) -> np.ndarray:
    """Indices into an axis of length ``n`` for positions ``start..stop-1`` of its mirrored
    extension.

    ``mode="symmetric"`` repeats the edge pixel (period ``2n``), ``mode="reflect"`` does not
    (period ``2n - 2``); both as ``numpy.pad`` for any pad width, i.e. ``x[mirror_indices(-p,
    n + q, n)] == np.pad(x, (p, q), mode=mode)``.
    """
    pos = np.arange(start, stop)
    if mode == "symmetric":
        period = 2 * n
        r = np.mod(pos, period)
        return np.where(r < n, r, period - 1 - r)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(pos)
        period = 2 * n - 2
        r = np.mod(pos, period)
        return np.where(r < n, r, period - r)
    raise ValueError(f"mirror mode must be 'symmetric' or 'reflect', got {mode!r}")


def _axis_index(start: int, stop: int, n: int, mode: str) -> slice | np.ndarray:
    if 0 <= start and stop <= n:
        return slice(start, stop)
    return mirror_indices(start, stop, n, mode=mode)


def mirrored_window(
    image: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], *, mode: str = MIRROR_MODE
) -> np.ndarray:
    """The window ``[rows[0]:rows[1], cols[0]:cols[1]]`` of the mirror-extended image.

    ``image`` is (..., Y, X); the window may reach past any border (by any amount). Equal to
    slicing ``np.pad(image, ..., mode=mode)`` but only the window is ever materialised; inside the
    image it is a view.
    """
    r = _axis_index(rows[0], rows[1], image.shape[-2], mode)
    c = _axis_index(cols[0], cols[1], image.shape[-1], mode)
    if isinstance(r, np.ndarray):
        image = np.take(image, r, axis=-2)
        r = slice(None)
    if isinstance(c, np.ndarray):
        image = np.take(image, c, axis=-1)
        c = slice(None)
    return image[..., r, c]


# ---------------------------------------------------------------------------------------------
# tile geometry and memory budget
# ---------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _check_finite(plane: np.ndarray, index: int, n_planes: int) -> None:
    if np.issubdtype(plane.dtype, np.floating) and not np.isfinite(plane).all():
        where = f" (plane {index})" if n_planes > 1 else ""
        raise ValueError(f"the image contains NaN or infinite values{where}")


# ---------------------------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------------------------


def _is_oom(err: BaseException) -> bool:
    oom_types = tuple(
        t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
    )
    return isinstance(err, oom_types)


def _smaller_tile(tile: int, config: UNetConfig) -> int | None:
    smallest = round_tile_size(1, config) if config.padding == "same" else valid_output_at_least(1, config.depth)
    if tile <= smallest:
        return None
    return max(round_tile_size(tile // 2, config), smallest)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, enabled=False)


class _PlanePredictor:
    """Predicts one normalised plane into a preallocated (n_classes, Y, X) array."""

    def __init__(self, model, config, device, *, amp, channels_last, tta=False):
        self.model, self.config, self.device = model, config, device
        self.amp, self.channels_last, self.tta = amp, channels_last, tta

    def tiles(self, shape: tuple[int, int], tile_size: int) -> tuple[AxisTiling, AxisTiling]:
        return axis_tiling(shape[0], tile_size, self.config), axis_tiling(shape[1], tile_size, self.config)

    def run(
        self, plane: np.ndarray, lo: np.ndarray, scale: np.ndarray, out: np.ndarray,
        tile_size: int, batch_size: int,
    ) -> Iterator[int]:
        """Fill ``out`` from ``plane`` (C, Y, X); yields the number of tiles after each batch."""
        rows, cols = self.tiles(plane.shape[-2:], tile_size)
        n_rows, n_cols = plane.shape[-2:]
        same = self.config.padding == "same"
        pad = 0 if same else border(self.config.depth)
        positions = [(r, c) for r in rows.starts for c in cols.starts]
        n_ch = plane.shape[0]
        lo = lo.reshape(n_ch, 1, 1)
        scale = scale.reshape(n_ch, 1, 1)
        if same:
            weight_sum = np.zeros((n_rows, n_cols), np.float32)
            acc = out if out.dtype == np.float32 else np.zeros(out.shape, np.float32)
            acc[...] = 0.0
            w_rows = blend_window(rows.tile, max(rows.tile - _min_stride(rows), 0))
            w_cols = blend_window(cols.tile, max(cols.tile - _min_stride(cols), 0))
            window = w_rows[:, None] * w_cols[None, :]
        batch = np.empty((min(batch_size, len(positions)), n_ch, rows.input, cols.input), np.float32)
        for first in range(0, len(positions), batch_size):
            chunk = positions[first : first + batch_size]
            for i, (r, c) in enumerate(chunk):
                win = mirrored_window(plane, (r - pad, r - pad + rows.input), (c - pad, c - pad + cols.input))
                np.subtract(win, lo, out=batch[i], casting="unsafe")
                batch[i] *= scale
            probs = self._forward(batch[: len(chunk)])
            for i, (r, c) in enumerate(chunk):
                h, w = min(rows.tile, n_rows - r), min(cols.tile, n_cols - c)
                if same:
                    acc[:, r : r + h, c : c + w] += probs[i, :, :h, :w] * window[:h, :w]
                    weight_sum[r : r + h, c : c + w] += window[:h, :w]
                else:
                    out[:, r : r + h, c : c + w] = probs[i, :, :h, :w]
            yield len(chunk)
        if same:
            acc /= weight_sum
            if acc is not out:
                out[...] = acc

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        # inference mode per batch, never across a yield: the mode is the thread's, and a
        # generator suspended in it and closed from another thread (a GUI job that napari
        # aborted) left a worker thread in inference mode, where a later training failed
        with torch.inference_mode():
            return self._forward_batch(batch)

    def _forward_batch(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if not self.tta:
            return self._probabilities(x).cpu().numpy()
        total = None
        transforms = test_time_transforms()
        for k, flip in transforms:
            xt = torch.rot90(x, k, dims=(-2, -1))
            probs = self._probabilities(xt.flip(-1) if flip else xt)
            probs = torch.rot90(probs.flip(-1) if flip else probs, -k, dims=(-2, -1))
            total = probs if total is None else total + probs
        return (total / len(transforms)).cpu().numpy()

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, self.amp):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)


def test_time_transforms() -> list[tuple[int, bool]]:
    """The (quarter turns, flip columns) pairs averaged by test-time augmentation: the eight
    symmetries of the square.

    A quarter turn swaps a tile's sides; the U-Net's size arithmetic is the same along both
    axes, so a turned tile is as valid as the tile and its turned-back output has the tile's
    output shape: non-square tiles (an image smaller than a tile along one side) get all eight
    too, where they got the four that keep the shape, and a transposed image gets the
    transposed average.
    """
    return [(k, flip) for k in range(4) for flip in (False, True)]


def _min_stride(axis: AxisTiling) -> int:
    if len(axis.starts) < 2:
        return axis.tile
    return min(b - a for a, b in zip(axis.starts, axis.starts[1:], strict=False))


def iter_predict(
    model: UNet,
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    stack: bool = False,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    amp: bool = True,
    out_dtype=np.float32,
    normalization: dict | bool | None = None,
    channels_last: bool | None = None,
    tta: bool = False,
) -> Generator[Event, None, np.ndarray]:
    """Class probabilities of ``image`` by overlap-tile prediction; yields progress events.

    Parameters
    ----------
    model : UNet
        The network. It predicts through :func:`~napari_unet.engine.model.inference_copy` (eval
        mode, batch norms folded), moved to ``device`` (and to channels-last memory format
        where used); ``model`` itself is not changed or moved.
    image : ndarray
        (Y, X); (Y, X, C) or (C, Y, X) with ``channel_axis``; (P, Y, X) or (P, Y, X, C) with
        ``stack=True`` (P planes: Z slices or time points, predicted one by one). uint8, uint16,
        any integer or float dtype; at least 2x2 pixels, finite.
    channel_axis : int, optional
        Axis of the channels in ``image``; their number must equal ``model.config.in_channels``.
    stack : bool
        The first axis indexes planes.
    tile_size : int, optional
        Side in pixels of each tile's **output** (``"valid"`` nets: the input window is
        ``2 * border(depth)`` larger); rounded down to a size the net accepts. ``None`` chooses
        it from the device's memory budget (:func:`choose_tiling`).
    batch_size : int, optional
        Tiles per forward pass; ``None`` chooses it with the tile size.
    device : {"auto", "cuda", "mps", "cpu"} or torch.device
    amp : bool
        On CUDA, run the network in float16 autocast (softmax in float32). Ignored elsewhere.
    out_dtype : np.float32 or np.float16
        dtype of the returned probabilities.
    normalization : None, dict or False
        ``None``: percentiles 1 and 99.8 per channel and per plane; a dict ``{"low": ..,
        "high": ..}`` (percentiles, e.g. from a checkpoint); ``False``: ``image`` is already
        normalised and is only cast to float32.
    channels_last : bool, optional
        Use torch's channels-last memory format; ``None`` uses it on the CPU (1.2 to 1.8 times
        the throughput with oneDNN, docs/benchmarks/cpu_tiles.md) and on CUDA for nets without
        group norm (GroupNorm is slower in that format there).
    tta : bool
        Test-time augmentation: average the probabilities over the flips and quarter turns of
        each tile (:func:`test_time_transforms`), at 8 times the network's cost. Measured in docs/benchmarks/accuracy.md.

    Yields
    ------
    TileDone
        After each batch of tiles; ``done``/``total`` count over all planes.
    PlaneDone
        After each plane.
    TileSizeReduced
        When the device ran out of memory; the plane is redone with half the tile size.

    Returns
    -------
    ndarray
        Softmax probabilities, ``out_dtype``, shaped (n_classes, Y, X), or (P, n_classes, Y, X)
        with ``stack=True``. Closing the generator stops after the current batch; nothing is
        returned then.

    Raises
    ------
    ValueError
        For wrong dimensions, a channel count that does not match the model, NaN/inf, an empty
        or too small image, or bad options.
    """
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a UNet, got {type(model).__name__}")
    config = model.config
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be float32 or float16, got {out_dtype}")
    data = as_planes(
        image,
        in_channels=config.in_channels,
        channel_axis=channel_axis,
        stack=stack,
        check_values=False,  # per plane below, as each is predicted
    )
    if normalization is None:
        low, high = DEFAULT_LOW, DEFAULT_HIGH
    elif normalization is False:
        low = high = None
    elif isinstance(normalization, dict):
        low, high = normalization_percentiles(normalization)
    else:
        raise ValueError(f"normalization must be None, False or a dict, got {normalization!r}")
    if batch_size is not None and (int(batch_size) < 1):
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tile_size is not None and int(tile_size) < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")

    dev = resolve_device(device)
    auto_tile, auto_batch = choose_tiling(config, dev, amp=amp)
    tile = round_tile_size(tile_size, config) if tile_size is not None else auto_tile
    if tile_size is None and not config.seamless:
        # the norm takes its statistics from each tile: one tile over the whole plane, so that
        # the result does not depend on the machine's memory (halved only on out-of-memory)
        tile = whole_plane_tile(data.shape[-2:], config)
    batch = int(batch_size) if batch_size is not None else auto_batch
    if channels_last is None:
        use_cl = dev.type == "cpu" or (dev.type == "cuda" and config.norm != "group")
    else:
        use_cl = bool(channels_last)

    # a copy, batch norms folded, on the device: the caller's model stays where it is, as it is
    net = inference_copy(model)
    net.to(dev, memory_format=torch.channels_last) if use_cl else net.to(dev)
    predictor = _PlanePredictor(net, config, dev, amp=amp, channels_last=use_cl, tta=bool(tta))

    n_planes, _, n_rows, n_cols = data.shape
    out = np.empty((n_planes, config.n_classes, n_rows, n_cols), out_dtype)

    def tiles_per_plane(t: int) -> int:
        r, c = predictor.tiles((n_rows, n_cols), t)
        return len(r.starts) * len(c.starts)

    done = 0
    try:
        for p in range(n_planes):
            plane = data[p]
            _check_finite(plane, p, n_planes)
            if low is None:
                lo = np.zeros(plane.shape[0], np.float32)
                scale = np.ones(plane.shape[0], np.float32)
            else:
                lo, hi = percentile_range(plane, low=low, high=high, channel_axis=0)
                scale = _scale(lo, hi)
            while True:
                total = done + (n_planes - p) * tiles_per_plane(tile)
                done_before = done
                try:
                    for n in predictor.run(plane, lo, scale, out[p], tile, batch):
                        done += n
                        yield TileDone(done, total, p, n_planes)
                    break
                except Exception as err:
                    if not _is_oom(err):
                        raise
                    del err  # drop the traceback's references to device tensors
                    release_memory(dev)
                    smaller = _smaller_tile(tile, config)
                    if smaller is None:
                        if batch > 1:
                            batch = max(1, batch // 2)
                            done = done_before
                            continue
                        raise MemoryError(
                            f"the device {dev} ran out of memory even with the smallest tile "
                            f"({tile} pixels) and batch size 1"
                        ) from None
                    yield TileSizeReduced(tile, smaller)
                    tile, done = smaller, done_before
            yield PlaneDone(p, n_planes)
    finally:
        # drop the device copy and free the cache it leaves, so that a GUI session or a
        # notebook holds no device memory between calls
        net = predictor = None
        if dev.type != "cpu":
            release_memory(dev)
    return out if stack else out[0]


def predict(model: UNet, image: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`iter_predict` run to the end; same arguments, returns the probabilities."""
    return drive(iter_predict(model, image, **kwargs))
