"""Tile geometry of overlap-tile prediction: valid tile sizes, memory budgets, tile layouts.

Pure arithmetic on a network's configuration (no tensors): which output tile sides a net
accepts, how much activation memory a tile needs, which tile size and batch fit a device, where
the tiles of a plane start, and the blending window of ``"same"`` nets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.engine.device import free_memory_bytes
from napari_unet.engine.model import UNetConfig, border, output_size, valid_input_size

CPU_ACTIVATION_BUDGET = 1024**3  # bytes of activations on CPU (and at most a quarter of free RAM)
# Output side beyond which CPU tiles get slower again (activations fall out of the caches):
# benchmarks/bench_cpu_tiles.py, default net on 2048² in channels-last: 1.5 Mpx/s with 196 px
# tiles, 2.1-2.7 at 388-580, 1.6 at 772, 1.4 at 1028 (docs/benchmarks/cpu_tiles.md).
CPU_MAX_TILE = 580
GPU_BUDGET_FRACTION = 0.5  # of the free device memory
MAX_TILE = 2048  # output pixels per side; larger tiles gain nothing
MAX_BATCH = 16


def valid_output_at_least(size: int, depth: int) -> int:
    """The smallest output side ``>= size`` that a ``"valid"`` net of ``depth`` can produce."""
    return output_size(valid_input_size(size + 2 * border(depth), depth), depth)


def valid_output_at_most(size: int, depth: int) -> int:
    """The largest valid output side ``<= size`` (at least the smallest possible output)."""
    out = valid_output_at_least(size, depth)
    while out > size and out - 2**depth >= valid_output_at_least(1, depth):
        out -= 2**depth
    return out


def round_tile_size(tile_size: int, config: UNetConfig) -> int:
    """``tile_size`` rounded down to an output side the net accepts (valid output size, or a
    multiple of ``2**depth`` for ``"same"`` nets)."""
    if config.padding == "same":
        return max(2**config.depth, int(tile_size) // 2**config.depth * 2**config.depth)
    return valid_output_at_most(int(tile_size), config.depth)


def input_side(tile_size: int, config: UNetConfig) -> int:
    """Input side in pixels for an output tile side (``tile_size + 2 * border`` if valid)."""
    return tile_size + 2 * border(config.depth) if config.padding == "valid" else tile_size


def activation_bytes(
    config: UNetConfig, tile_size: int, *, batch_size: int = 1, bytes_per_value: int = 4
) -> int:
    """Rough peak activation memory in bytes of one forward pass on ``batch_size`` tiles.

    Counts the skip connections held by the contracting path plus the largest working set (input,
    up-convolution, concatenation and output at the top level). ``tile_size`` is the output side.
    """
    side = input_side(tile_size, config)
    values = 0
    for level in range(config.depth + 1):
        values += config.channels(level) * side * side
        side = max(side // 2, 1)
    top = input_side(tile_size, config)
    values += 5 * config.channels(0) * top * top
    return int(values * batch_size * bytes_per_value)


def tile_size_for_budget(
    config: UNetConfig, budget_bytes: int, *, batch_size: int = 1, bytes_per_value: int = 4
) -> int:
    """The largest output tile side whose :func:`activation_bytes` fits ``budget_bytes``.

    Never smaller than the smallest tile the net accepts nor larger than ``MAX_TILE``.
    """
    smallest = round_tile_size(1, config) if config.padding == "same" else valid_output_at_least(1, config.depth)
    step = 2**config.depth
    best = smallest
    tile = smallest
    while tile <= MAX_TILE:
        if activation_bytes(config, tile, batch_size=batch_size, bytes_per_value=bytes_per_value) > budget_bytes:
            break
        best = tile
        tile += step
    return best


def choose_tiling(
    config: UNetConfig, device: torch.device, *, amp: bool = True, free_bytes: int | None = None
) -> tuple[int, int]:
    """Default ``(tile_size, batch_size)`` for ``device`` from its memory budget.

    CPU (and MPS): one large tile at a time, activations under ``CPU_ACTIVATION_BUDGET`` and the
    output side at most ``CPU_MAX_TILE`` (large tiles waste less on borders than batches of small
    ones, up to the size where they fall out of the caches). CUDA: half of the free memory
    (:func:`~napari_unet.engine.device.free_memory_bytes`); tiles of up to 1024 pixels output,
    then as many per batch as fit (at most ``MAX_BATCH``).
    """
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    if device.type != "cuda":
        budget = min(CPU_ACTIVATION_BUDGET, free // 4)
        return min(tile_size_for_budget(config, budget), round_tile_size(CPU_MAX_TILE, config)), 1
    bpv = 2 if amp else 4
    budget = int(free * GPU_BUDGET_FRACTION)
    tile = min(tile_size_for_budget(config, budget, bytes_per_value=bpv), round_tile_size(1024, config))
    per_tile = activation_bytes(config, tile, bytes_per_value=bpv)
    return tile, int(max(1, min(MAX_BATCH, budget // max(per_tile, 1))))


@dataclass(frozen=True)
class AxisTiling:
    """Tiles along one axis: output starts, the output tile side, and the input side."""

    starts: tuple[int, ...]
    tile: int
    input: int


def axis_tiling(size: int, tile_size: int, config: UNetConfig) -> AxisTiling:
    """Tile positions along one axis of ``size`` pixels with output tiles of at most
    ``tile_size`` (already rounded with :func:`round_tile_size`).

    Valid nets: starts are multiples of a stride that is a multiple of ``2**depth``; the last
    tile may reach past the image (mirror extrapolation). An axis shorter than a tile gets one
    tile of the smallest valid size covering it. Same nets: overlapping tiles inside the image.
    """
    step = 2**config.depth
    if config.padding == "valid":
        single = valid_output_at_least(size, config.depth)
        if single <= tile_size:
            return AxisTiling((0,), single, input_side(single, config))
        max_stride = max(step, tile_size - tile_size % step)
        count = math.ceil(size / max_stride)
        stride = math.ceil(math.ceil(size / count) / step) * step
        tile = valid_output_at_least(stride, config.depth)
        return AxisTiling(tuple(i * stride for i in range(count)), tile, input_side(tile, config))
    single = math.ceil(size / step) * step
    if single <= tile_size:
        return AxisTiling((0,), single, single)
    overlap = max(step, tile_size // 4 // step * step)
    stride = tile_size - overlap
    count = math.ceil((size - tile_size) / stride) + 1
    starts = [min(i * stride, size - tile_size) for i in range(count)]
    return AxisTiling(tuple(starts), tile_size, tile_size)


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1D float32 weights for a ``"same"`` tile: a linear ramp over ``overlap`` pixels at both
    ends, 1 inside, never 0 (image borders covered by one tile keep their value)."""
    w = np.ones(tile, np.float32)
    ramp = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
    n = min(overlap, tile // 2)
    w[:n] = ramp[:n]
    w[tile - n :] = ramp[:n][::-1]
    return w


def whole_plane_tile(shape: tuple[int, int], config: UNetConfig) -> int:
    """The smallest output tile side that covers a plane of ``shape`` in one tile."""
    side = max(int(shape[0]), int(shape[1]))
    if config.padding == "same":
        step = 2**config.depth
        return -(-side // step) * step
    return valid_output_at_least(side, config.depth)
