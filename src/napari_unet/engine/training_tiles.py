"""Training tiles: cut around annotated pixels, augmented, drawn inline or by worker processes.

:class:`TileSource` hands :func:`~napari_unet.engine.training.iter_train` the tiles of each step:
with ``TrainConfig.workers == 0`` drawn in the training thread with the run's generator, else by a
pool of forked processes a few steps ahead, each tile seeded by (seed, step, index).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["TileSource", "draw_tile", "sampling_probabilities", "training_tile_sizes", "window"]


def draw_tile(
    samples, probabilities, tile_in, augmenter, n_classes, rng, *, foreground_fraction=0.0
):
    """Cut one augmented training tile of side ``tile_in`` around an annotated pixel (with
    probability ``foreground_fraction``, around an annotated pixel of a labelled cell).

    Returns (image (C, T, T) float32, labels (T, T) int32, target (T, T) int64,
    weights (T, T) float32). Outside the image the image is mirrored and the weights are 0.
    """
    from napari_unet.engine.weights import class_targets

    s = samples[rng.choice(len(samples), p=probabilities)]
    annotated = np.flatnonzero(s.weights > 0)
    # no extra draw when the fraction is 0, so earlier seeded runs reproduce
    if foreground_fraction > 0 and rng.random() < foreground_fraction:
        cells = np.flatnonzero((s.weights > 0) & (s.labels > 0))
        if cells.size:
            annotated = cells
    rows, cols = s.labels.shape
    if annotated.size:
        r, c = np.unravel_index(annotated[rng.integers(annotated.size)], (rows, cols))
        # jitter so the annotated pixel is not always in the tile's center
        r = int(r + rng.integers(-tile_in // 4, tile_in // 4 + 1))
        c = int(c + rng.integers(-tile_in // 4, tile_in // 4 + 1))
    else:
        r, c = int(rng.integers(rows)), int(rng.integers(cols))
    top, left = r - tile_in // 2, c - tile_in // 2
    image = window(s.image, top, left, tile_in, mode="symmetric")
    labels = window(s.labels, top, left, tile_in, mode="constant")
    weights = window(s.weights, top, left, tile_in, mode="constant")
    image, labels, weights, _ = augmenter(image, labels, weights, None)
    labels = labels.astype(np.int32, copy=False)
    # The class target is recomputed from the deformed labels so that separation borders stay
    # one pixel wide; the weights were warped along (nearest neighbour).
    target = class_targets(labels, n_classes=n_classes)
    return (
        np.ascontiguousarray(image, dtype=np.float32),
        labels,
        target.astype(np.int64, copy=False),
        np.ascontiguousarray(weights, dtype=np.float32),
    )


class TileSource:
    """The tiles of each step: drawn here with the run's generator (``workers=0``), or by a pool
    of processes a few steps ahead, each tile seeded by (seed, step, index)."""

    def __init__(self, samples, probabilities, tile_in, augmenter, n_classes, rng, config):
        self.args = (samples, probabilities, tile_in, augmenter, n_classes)
        self.rng, self.config = rng, config
        self.pool = None
        self.pending: dict[int, list] = {}
        if config.workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork: the workers inherit the prepared samples instead of unpickling them
            self.pool = ProcessPoolExecutor(
                config.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_tile_worker,
                initargs=self.args,
            )

    def batch(self, step: int) -> list[tuple]:
        config = self.config
        if self.pool is None:
            samples, probabilities, tile_in, augmenter, n_classes = self.args
            return [
                draw_tile(
                    samples, probabilities, tile_in, augmenter, n_classes, self.rng,
                    foreground_fraction=config.foreground_fraction,
                )
                for _ in range(config.batch_size)
            ]
        ahead = max(2, 2 * config.workers // config.batch_size + 1)
        for s in range(step, min(step + ahead, config.steps) + 1):
            if s not in self.pending:
                self.pending[s] = [
                    self.pool.submit(_seeded_tile, config.seed, s, i, config.foreground_fraction)
                    for i in range(config.batch_size)
                ]
        return [future.result() for future in self.pending.pop(step)]

    def close(self) -> None:
        if self.pool is not None:
            for futures in self.pending.values():
                for future in futures:
                    future.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


_WORKER_ARGS: tuple = ()


def _init_tile_worker(*args) -> None:
    global _WORKER_ARGS
    _WORKER_ARGS = args
    torch.set_num_threads(1)


def _seeded_tile(seed: int, step: int, index: int, foreground_fraction: float) -> tuple:
    from copy import copy

    samples, probabilities, tile_in, augmenter, n_classes = _WORKER_ARGS
    rng = np.random.default_rng([seed, step, index])
    augmenter = copy(augmenter)
    augmenter.rng = rng
    return draw_tile(
        samples, probabilities, tile_in, augmenter, n_classes, rng,
        foreground_fraction=foreground_fraction,
    )


def window(array: np.ndarray, top: int, left: int, size: int, *, mode: str) -> np.ndarray:
    """The ``size`` x ``size`` window at (top, left) of the last two axes, padded outside.

    ``mode="symmetric"`` mirrors the array (numpy.pad semantics, edge pixel repeated);
    ``mode="constant"`` fills with 0.
    """
    rows, cols = array.shape[-2:]
    r0, r1 = max(top, 0), min(top + size, rows)
    c0, c1 = max(left, 0), min(left + size, cols)
    core = array[..., r0:r1, c0:c1]
    pad = [(0, 0)] * (array.ndim - 2) + [
        (r0 - top, top + size - r1),
        (c0 - left, left + size - c1),
    ]
    if not any(p for pair in pad for p in pair):
        return core.copy()
    if mode == "symmetric":
        # numpy's symmetric padding cannot pad by more than the array's size in one go
        while any(
            before > n or after > n
            for (before, after), n in zip(pad[-2:], core.shape[-2:], strict=True)
        ):
            step = [(0, 0)] * (array.ndim - 2) + [
                (min(b, n), min(a, n)) for (b, a), n in zip(pad[-2:], core.shape[-2:], strict=True)
            ]
            core = np.pad(core, step, mode="symmetric")
            pad = pad[:-2] + [
                (b - sb, a - sa) for (b, a), (sb, sa) in zip(pad[-2:], step[-2:], strict=True)
            ]
        return np.pad(core, pad, mode="symmetric")
    return np.pad(core, pad, mode="constant")


def training_tile_sizes(
    model: torch.nn.Module, largest_side: int, tile_size: int | None, device: torch.device
) -> tuple[int, int]:
    """(input side, output side) in pixels of a training tile for ``model``.

    ``tile_size`` is the wanted output side; ``None`` means 192 px on the CPU and 384 px on a GPU
    (the paper used 388). Never much larger than ``largest_side``, the largest training image.
    """
    from napari_unet.engine.model import output_size, valid_input_size

    depth = int(model.config.depth)
    padding = model.config.padding
    largest = int(largest_side)
    out = tile_size or (384 if device.type == "cuda" else 192)
    out = max(16, min(out, largest + 2**depth))
    if padding == "same":
        side = int(math.ceil(out / 2**depth) * 2**depth)
        return side, side
    size_in = valid_input_size(out, depth)
    while output_size(size_in, depth) < out:
        size_in = valid_input_size(size_in + 1, depth)
    return size_in, output_size(size_in, depth)


def sampling_probabilities(samples: list) -> np.ndarray:
    """Probability of drawing each prepared sample: its annotated weight times its share.

    Raises ValueError when no sample has both: every tile would have weight 0 and teach nothing.
    """
    mass = np.array([float(s.weights.sum()) * s.share for s in samples])
    if not mass.sum() > 0:
        raise ValueError("no training image has an annotated pixel to draw tiles from")
    return mass / mass.sum()
