"""CPU training speed in float32 against bfloat16 autocast: the evidence for
``TrainConfig.amp`` on CPUs with bfloat16 in hardware (``napari_unet.engine.device.autocast_dtype``).

Run: ``python benchmarks/bench_cpu_precision.py``. One optimisation step of the bundled network's
architecture (depth 4, 16 base channels, batch norm) on a batch of 4 training tiles of 128 output
pixels (the CPU recipe of ``benchmarks/train_default_model.py``), forward, weighted
cross-entropy, backward and Adam, with 1 and 2 torch threads. The two precisions alternate
(A, B, A, B, ...) so that the load of this shared machine falls on both alike; the table gives
the median of ``--repeats`` steps each and the ratio. Prints a markdown table and writes it to
``docs/benchmarks/cpu_precision.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from napari_unet.engine.device import cpu_has_native_bf16
from napari_unet.engine.losses import weighted_cross_entropy
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.training_tiles import training_tile_sizes

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "cpu_precision.md"


def step_seconds(model, optimizer, x, target, weights, dtype) -> float:
    """Seconds of one training step with autocast to ``dtype`` (``None``: float32)."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = model(x)
    loss = weighted_cross_entropy(logits.float(), target, weights)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="steps per precision and threads")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = UNet(UNetConfig.default(norm="batch")).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tile_in, tile_out = training_tile_sizes(model, 10_000, 128, torch.device("cpu"))
    x = torch.randn(4, 1, tile_in, tile_in)
    target = torch.randint(0, 3, (4, tile_out, tile_out))
    weights = torch.rand(4, tile_out, tile_out) + 0.5
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for dtype in (None, torch.bfloat16):  # warm-up: oneDNN picks its kernels on first use
            step_seconds(model, optimizer, x, target, weights, dtype)
        for _ in range(args.repeats):
            times["float32"].append(step_seconds(model, optimizer, x, target, weights, None))
            times["bfloat16"].append(
                step_seconds(model, optimizer, x, target, weights, torch.bfloat16)
            )
        fp32, bf16 = (statistics.median(times[k]) for k in ("float32", "bfloat16"))
        rows.append(f"| {threads} | {fp32:.3f} | {bf16:.3f} | x{fp32 / bf16:.2f} |")
        print(rows[-1], flush=True)

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    text = "\n".join(
        [
            "# CPU training speed: float32 against bfloat16 autocast",
            "",
            f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by "
            "`benchmarks/bench_cpu_precision.py`.",
            "",
            f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
            f"CPUs, bfloat16 in hardware: {'yes' if cpu_has_native_bf16() else 'no'} "
            f"(`cpu_has_native_bf16`); load average {load} (1/5/15 min).",
            f"- torch {torch.__version__}, Python {platform.python_version()}.",
            f"- One training step of the bundled network's architecture: 4 tiles of {tile_in} px "
            f"in, {tile_out} px out, forward, weighted cross-entropy, backward, Adam; median of "
            f"{args.repeats} steps each, the precisions alternating.",
            "",
            "| torch threads | float32 s/step | bfloat16 autocast s/step | speed-up |",
            "|---|---|---|---|",
            *rows,
            "",
            "Training uses bfloat16 autocast on the CPU only where the CPU has the unit "
            "(AVX512-BF16 or AMX, read from `/proc/cpuinfo`): elsewhere oneDNN emulates it. The "
            "weights, the optimiser state and the loss stay float32; prediction stays float32 on "
            "the CPU (its probabilities are tested seamless to 1e-4 in float32). Timings on this "
            "shared machine move by up to 2x between runs: compare within one row.",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        OUT.write_text(text)


if __name__ == "__main__":
    main()
