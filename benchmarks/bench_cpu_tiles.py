"""CPU prediction speed against tile size and memory format: the evidence for ``CPU_MAX_TILE``
and for running the net in channels-last on the CPU (``napari_unet.engine.tiling``).

Run: ``python benchmarks/bench_cpu_tiles.py [--size 2048]``. For each net (default and
paper-size, random weights) and output tile side, ``predict()`` on a ``size`` x ``size`` uint16
image (the paper net on a quarter of the area), once in torch's contiguous (NCHW) memory format and
once in channels-last, after a warm-up tile of that shape. Prints a markdown table and writes it to
``docs/benchmarks/cpu_tiles.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.tiling import CPU_MAX_TILE, choose_tiling, predict, round_tile_size

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "cpu_tiles.md"
TILES = (196, 292, 388, 452, 516, 580, 772, 1028)


def throughput(model: UNet, image: np.ndarray, tile: int, channels_last: bool) -> float:
    """Output megapixels per second of ``predict`` with output tiles of ``tile`` pixels."""
    kwargs = {"device": "cpu", "tile_size": tile, "channels_last": channels_last}
    predict(model, image[:tile, :tile], **kwargs)  # warm-up: one tile of the run's shape
    start = time.perf_counter()
    predict(model, image, **kwargs)
    return image.size / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048, help="image side for the default net")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    for name, config, side in [
        ("default (base 16, GN)", UNetConfig.default(), args.size),
        ("paper (base 64)", UNetConfig.paper(), args.size // 2),
    ]:
        model = UNet(config).eval()
        image = rng.integers(0, 4000, (side, side), dtype=np.uint16)
        auto, _ = choose_tiling(config, torch.device("cpu"))
        for tile in TILES:
            if config.base_channels >= 64 and tile > CPU_MAX_TILE:
                continue  # gigabytes of activations per tile
            tile = round_tile_size(tile, config)
            plain = throughput(model, image, tile, channels_last=False)
            last = throughput(model, image, tile, channels_last=True)
            mark = " (auto)" if tile == auto else ""
            rows.append(f"| {name} | {side}² | {tile}{mark} | {plain:.3f} | {last:.3f} | x{last / plain:.2f} |")
            print(rows[-1], flush=True)
    text = [
        "# CPU prediction speed against tile size and memory format",
        "",
        f"Date: {datetime.date.today()}. Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads. torch {torch.__version__}.",
        "Command: `python benchmarks/bench_cpu_tiles.py`.",
        "",
        "Output megapixels per second of `predict()` (random weights, one tile per forward pass, "
        "a warm-up tile first). `(auto)` marks the tile `predict()` chooses on this machine "
        f"(`CPU_MAX_TILE` = {CPU_MAX_TILE}). Each number is one run on a shared machine: "
        "differences under ~15 % are noise.",
        "",
        "| net | image | output tile (px) | contiguous Mpx/s | channels-last Mpx/s | channels-last gain |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
