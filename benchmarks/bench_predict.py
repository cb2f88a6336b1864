"""Prediction throughput, tiling overhead, the MONAI peer, GFLOP/s and peak memory.

Run: ``python benchmarks/bench_predict.py`` (add ``--full`` for the paper net at 4096x4096, the
whole-image reference at 4096x4096 and the real 8192x8192 memory run with the default net).
Prints a markdown table and writes it to ``docs/benchmarks/predict.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_unet.engine.device import free_memory_bytes
from napari_unet.engine.model import UNet, UNetConfig, border, valid_input_size
from napari_unet.engine.tiling import (
    activation_bytes,
    axis_tiling,
    choose_tiling,
    normalize,
    predict,
    valid_output_at_least,
)

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "predict.md"


def conv_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs (2 per multiply-add) of the convolutions of one forward pass on ``shape``."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            total += 2 * k * module.in_channels * module.out_channels * inputs[0][0, 0].numel() * output.shape[0]
        else:
            total += 2 * k * module.in_channels * module.out_channels * output[0, 0].numel() * output.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.inference_mode():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


def sgemm_gflops(n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


CL = torch.channels_last  # what predict() uses on the CPU; the references get it too


def tiled_conv_flops(model: UNet, size: int, tile: int) -> int:
    """Convolution FLOPs of ``predict`` on a ``size`` x ``size`` image: the tiles that
    :func:`axis_tiling` lays out, each a forward pass of its input side."""
    axis = axis_tiling(size, tile, model.config)
    return conv_flops(model, (1, 1, axis.input, axis.input)) * len(axis.starts) ** 2


def whole_image_fits(config: UNetConfig, size: int) -> bool:
    """Whether one forward pass over the whole image fits in half of the free memory."""
    need = activation_bytes(config, valid_output_at_least(size, config.depth))
    return need < free_memory_bytes(torch.device("cpu")) // 2


def whole_image(model: UNet, image: np.ndarray) -> None:
    """The no-tiling reference: one forward pass on the whole mirror-extended image."""
    depth, b = model.config.depth, border(model.config.depth)
    n = image.shape[0]
    out = valid_output_at_least(n, depth)
    x = np.pad(normalize(image), ((b, b + out - n), (b, b + out - n)), mode="symmetric")
    model.to(memory_format=CL)
    with torch.inference_mode():
        y = model(torch.from_numpy(x)[None, None].contiguous(memory_format=CL))
        torch.softmax(y, 1)[0, :, :n, :n].numpy()


def monai_peer(model_same: UNet, image: np.ndarray, roi: int) -> None:
    from monai.inferers import sliding_window_inference

    model_same.to(memory_format=CL)
    x = torch.from_numpy(normalize(image))[None, None]
    with torch.inference_mode():
        y = sliding_window_inference(
            x, (roi, roi), 1, lambda t: model_same(t.contiguous(memory_format=CL)), overlap=0.25
        )
        torch.softmax(y, 1)[0].numpy()


def rss_bytes(field: str = "VmHWM") -> int:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory in bytes, from
    /proc (``ru_maxrss`` survives ``exec`` on Linux, so a child would inherit its parent's
    peak). Elsewhere the peak, from ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def rss_child(size: int, base: int) -> None:
    """Run in a subprocess: predict a size x size uint16 image, print peak RSS above in+out."""
    image = np.random.default_rng(0).integers(0, 4000, (size, size), dtype=np.uint16)
    model = UNet(UNetConfig.default(base_channels=base))
    before = rss_bytes("VmRSS")
    out = predict(model, image, device="cpu")
    peak = rss_bytes("VmHWM")
    print(peak, before, out.nbytes)


def gpu_section(rng) -> list[str]:
    """512² latency and batch throughput on CUDA, as markdown lines; empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    lines = [
        f"GPU: {torch.cuda.get_device_name(0)}, amp float16, torch {torch.__version__}.",
        "",
        "| net | 512² latency, ms (median of 20) | 32 x 512² stack, Mpx/s | 4096² Mpx/s |",
        "|---|---|---|---|",
    ]
    for name, config in [("default", UNetConfig.default()), ("paper", UNetConfig.paper())]:
        model = UNet(config)
        image = (rng.random((512, 512)) * 4000).astype(np.uint16)
        for _ in range(5):
            predict(model, image, device=dev)
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            predict(model, image, device=dev)
            times.append(time.perf_counter() - t)
        stack = (rng.random((32, 512, 512)) * 4000).astype(np.uint16)
        predict(model, stack[:2], stack=True, device=dev)
        t_stack = timed(lambda m=model, s=stack: predict(m, s, stack=True, device=dev))
        big = (rng.random((4096, 4096)) * 4000).astype(np.uint16)
        predict(model, big[:1024, :1024], device=dev)
        t_big = timed(lambda m=model, b=big: predict(m, b, device=dev))
        lines.append(f"| {name} | {1000 * np.median(times):.1f} | {32 * 0.262144 / t_stack:.1f} | {16.777216 / t_big:.1f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also the slow measurements (paper net at 4096, 8192 memory run with the default net)")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU section; prints it, writes nothing")
    parser.add_argument("--rss-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    if args.gpu_only:
        print("\n".join(gpu_section(rng)))
        return
    gemm = sgemm_gflops()
    cpu = torch.device("cpu")
    print(f"sgemm: {gemm:.1f} GFLOP/s, threads {torch.get_num_threads()}", flush=True)
    for name, config in [("default (base 16, GN)", UNetConfig.default()), ("paper (base 64)", UNetConfig.paper())]:
        model = UNet(config).eval()
        same = UNet(UNetConfig(**{**config.to_dict(), "padding": "same"})).eval()
        tile, _ = choose_tiling(config, cpu)
        tile_in = tile + 2 * border(config.depth)
        sizes = [1024, 4096] if (args.full or config.base_channels < 64) else [1024]
        for size in sizes:
            image = (rng.random((size, size)) * 4000).astype(np.uint16)
            mpx = size * size / 1e6
            predict(model, image[:tile, :tile], device="cpu")  # warm-up: one tile of the run's shape
            t_tiled = timed(lambda m=model, im=image: predict(m, im, device="cpu"))
            gflops = tiled_conv_flops(model, size, tile) / t_tiled / 1e9
            ref = "skipped"
            if (size <= 1024 or args.full) and not whole_image_fits(config, size):
                ref = "does not fit in memory"
            elif size <= 1024 or args.full:
                whole_image(model, image[:256, :256])  # warm-up
                t_whole = timed(lambda m=model, im=image: whole_image(m, im))
                ref = f"{mpx / t_whole:.3f} ({100 * (t_tiled / t_whole - 1):+.0f} %)"
            peer = "skipped"
            if size <= 1024 or args.full:
                roi = valid_input_size(tile_in, config.depth) // 16 * 16
                monai_peer(same, image[:roi, :roi], roi)  # warm-up, as predict() had
                t_monai = timed(lambda s=same, im=image, r=roi: monai_peer(s, im, r))
                peer = f"{mpx / t_monai:.3f} (x{t_monai / t_tiled:.2f})"
            rows.append(
                f"| {name} | {size}² | {tile} | {mpx / t_tiled:.3f} | {ref} | {peer} | {gflops:.1f} ({100 * gflops / gemm:.0f} %) |"
            )
            print(rows[-1], flush=True)

    size, base = (8192, 16) if args.full else (8192, 4)
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(size), str(base)], capture_output=True, text=True, check=True)
    peak, before, out_bytes = map(int, out.stdout.split())
    rss = (
        f"Peak RSS, {size}² uint16, depth-4 net with base {base}: {peak / 2**30:.2f} GiB in all, "
        f"{(peak - before - out_bytes) / 2**30:.2f} GiB above the process before `predict()` "
        f"(interpreter, torch, net and the {size * size * 2 / 2**30:.2f} GiB input: "
        f"{before / 2**30:.2f} GiB) plus the float32 output ({out_bytes / 2**30:.2f} GiB). "
        "Goal: at most 1.5 GiB."
    )
    print(rss, flush=True)

    gpu = gpu_section(rng)

    header = (
        "| net | image | CPU tile (output px) | tiled Mpx/s | whole-image pass Mpx/s (tiling overhead) "
        "| MONAI sliding window, same net, Mpx/s (our speed-up) | achieved GFLOP/s (of sgemm) |\n"
        "|---|---|---|---|---|---|---|"
    )
    text = [
        "# Prediction benchmark",
        "",
        f"Date: {datetime.date.today()}. Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, {platform.system()}. torch {torch.__version__}, numpy {np.__version__}.",
        f"Command: `python benchmarks/bench_predict.py{' --full' if args.full else ''}`. sgemm (2048³) in the same run: {gemm:.1f} GFLOP/s.",
        "",
        "Throughput counts output megapixels per second of `predict()` on a uint16 image with random "
        "weights (normalisation, tiling, softmax and stitching included). The whole-image pass is one "
        "forward pass over the mirror-extended image. MONAI runs `sliding_window_inference` "
        "(overlap 0.25, batch 1, roi = our tile's input side) on the same net with 'same' padding. "
        "All three run the net in channels-last memory format, as `predict()` does on the CPU. "
        "GFLOP/s counts the multiply-adds of a direct convolution (2 FLOPs each) over the tiles "
        "`predict()` lays out; oneDNN may compute 3x3 convolutions with fewer operations "
        "(e.g. Winograd), so this effective rate can exceed sgemm. "
        "Each number is one timed run after a warm-up on a shared 2-core machine: single rows moved by up to 2x between runs of this script (MONAI, default net, 1024²: 0.35 to 1.04 Mpx/s), so compare within a run.",
        "",
        header,
        *rows,
        "",
        rss,
    ]
    if gpu:
        text += ["", *gpu]
    else:
        text += ["", "GPU: none in this run."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
