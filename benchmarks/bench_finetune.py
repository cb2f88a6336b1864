"""Few-shot fine-tuning: the bundled nuclei model adapted to a new kind of data with 5-20 cells.

For each set of a different kind than the training nuclei (see ``benchmarks/datasets.py``):

* ``trpl``: bacteria in phase contrast; annotate from frames 0-15, test on frames 16-19;
* ``huh7``: Fluo-C2DL-Huh7 whole cells; annotate from the 10 cells left of column 400, test on
  the 9 others (inside the annotated-region mask);
* ``epithelium``: epithelial membranes; annotate from the top half, test on the bottom half.

A user who annotates ``n`` cells is simulated by drawing ``n`` cells at random (seeded; the 5 are
among the 10, the 10 among the 20) from the training part. Only those cells are labelled; the
region that counts for the loss is, around each of them, the rectangle a user would draw in the
Fine-tune panel: the cell's bounding box grown by ``--context`` pixels on every side (default:
one median cell diameter of the set), less every other cell of the ground truth grown by one
pixel (the simulated user draws around cells they did not paint, so a neighbour never counts as
background) and, for Huh7, only inside the set's annotated-region mask. Everything else carries
weight 0. The user also marks ``n`` of the starting model's false detections on the training
part as background (a rectangle drawn over each, grown the same way; see
:func:`false_detections`), as one does after a first *Segment*. (A ring of a few pixels around
each painted cell, tried first, taught the background near cells only: the fine-tuned models then
fired on texture far from any cell, with hundreds of false objects on the bacteria.)

Fine-tuning starts from the bundled model (or ``--model``) with
``napari_unet.engine.training.iter_train`` (Adam, constant learning rate), on this CPU, and is
stopped when the wall-clock budget (``--budget``, 120 s, counted from the call, data preparation
included) is spent: the generator is closed, which keeps the last completed step. The images are
rescaled so that the annotated cells' median diameter matches the model's training diameter when
the two differ by more than 15 % (``match_training_diameter``, the rule of the Fine-tune panel and
``napari-unet train``; the tables below were measured with a 5 % threshold), as
``napari_unet.segment`` does at prediction time with the same diameter.

Each fine-tuned model is scored with the minimum confidence chosen on its own annotation, as the
Fine-tune panel and ``napari-unet train`` leave it (:func:`fine_tuned_pair`; docs/benchmarks/finetune.md
was measured before that rule, with the bundled model's 0.35).

Rows per set: the classical baseline; the bundled model without fine-tuning; fine-tuned on
5/10/20 cells; and the reference, fine-tuned on **all** labels of the training part for
``--ref-budget`` seconds (240 s by default, twice the few-shot budget). The score is AP@0.5 on the
test part; the ratio is to the reference's AP@0.5.

Usage::

    python benchmarks/bench_finetune.py [--model PATH] [--sets trpl huh7 epithelium]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline import classical_segment
from benchmarks.bench_accuracy import _machine, _model_summary, _versions
from benchmarks.datasets import DataSet, Sample, load, median_diameter

from napari_unet.engine.training import FINE_TUNE_FOREGROUND_FRACTION

REPO = Path(__file__).resolve().parent.parent
SHOTS = (5, 10, 20)
#: As in the Fine-tune panel, half the tiles are centred on a labelled cell, in every run: with
#: all labels of a set whose cells cover a few % of the image (the bacteria), uniform tiles were
#: mostly background, and the reference trained in 240 s scored below the 10-cell fine-tune
#: (AP@0.5 0.50 against 0.83).
FOREGROUND_FRACTION = FINE_TUNE_FOREGROUND_FRACTION


def draw_cells(planes: list[Sample], n_max: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A seeded random order of the training cells as (plane, id), at most ``n_max`` of them.

    Cells whose pixels lie mostly outside the plane's mask are skipped. A prefix of the order is
    the annotation of the first ``n`` cells, so smaller annotations are nested in larger ones.
    """
    cells = []
    for i, s in enumerate(planes):
        ids, counts = np.unique(s.labels[s.labels > 0], return_counts=True)
        for cid, count in zip(ids, counts, strict=True):
            if s.mask is not None and s.mask[s.labels == cid].sum() * 2 <= count:
                continue
            cells.append((i, int(cid)))
    order = rng.permutation(len(cells))
    return [cells[k] for k in order[:n_max]]


def false_detections(
    base, planes: list[Sample], diameter: float, rng: np.random.Generator
) -> list[tuple[int, tuple[slice, slice]]]:
    """The starting model's false detections on the training planes, in a seeded random order.

    An object of ``segment(plane, base, diameter=diameter)`` is false when less than 10 % of it
    covers a reference cell (and, with a mask, it touches the annotated area). Returns
    ``(plane index, bounding box)`` pairs: the mistakes a user sees after the first *Segment*.
    """
    from napari_unet.engine.api import segment

    found = []
    for i, s in enumerate(planes):
        pred = segment(s.image, base, diameter=diameter, device="cpu")
        for pid, box in enumerate(ndi.find_objects(pred), start=1):
            if box is None:
                continue
            obj = pred[box] == pid
            if (s.labels[box][obj] > 0).mean() >= 0.1:
                continue
            if s.mask is not None and not s.mask[box][obj].any():
                continue
            found.append((i, box))
    order = rng.permutation(len(found))
    return [found[k] for k in order]


def sparse_annotation(
    planes: list[Sample],
    chosen: list[tuple[int, int]],
    *,
    context: int,
    background: list[tuple[int, tuple[slice, slice]]] = (),
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, labels, region) for every plane holding a chosen cell or a background box.

    ``labels`` keeps only the chosen cells; ``region`` is the union of their bounding boxes and
    of the ``background`` boxes (false detections the user marks as background), all grown by
    ``context`` pixels, less the other ground-truth cells grown by one pixel, within the plane's
    mask, plus the chosen cells themselves.
    """
    out = []
    for i, s in enumerate(planes):
        ids = [cid for j, cid in chosen if j == i]
        extra = [box for j, box in background if j == i]
        if not ids and not extra:
            continue
        keep = np.isin(s.labels, ids)
        boxes = ndi.find_objects(np.where(keep, s.labels, 0))
        region = np.zeros(s.labels.shape, bool)
        rows, cols = s.labels.shape
        for box in [boxes[cid - 1] for cid in ids] + extra:
            r0, r1 = max(box[0].start - context, 0), min(box[0].stop + context, rows)
            c0, c1 = max(box[1].start - context, 0), min(box[1].stop + context, cols)
            region[r0:r1, c0:c1] = True
        others = ndi.binary_dilation((s.labels > 0) & ~keep)
        region &= ~others
        if s.mask is not None:
            region &= s.mask
        region |= keep
        out.append((s.image, np.where(keep, s.labels, 0).astype(np.int32), region))
    return out


def full_annotation(planes: list[Sample]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(image, labels, region) with every label of the training part; region = the set's mask."""
    return [(s.image, s.labels, s.mask) for s in planes]


def _disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


class _BudgetSpent(Exception):
    """Raised from the event handler to end a fine-tune when its time is up."""


def finetune(
    base, annotation, *, diameter: float, budget: float, seed: int, lr: float, tile: int,
    steps: int = 100_000, schedule: str = "constant",
):
    """Fine-tune a copy of ``base`` (UNet, Checkpoint) on ``annotation`` for ``budget`` seconds.

    The annotation, with cells of ``diameter`` px, is brought to the model's training diameter
    by the rule of the Fine-tune panel and ``napari-unet train`` (``match_training_diameter``).
    ``steps`` caps the number of steps (whichever of it and ``budget`` comes first);
    ``schedule``: the learning rate's (``TrainConfig.schedule``; the Fine-tune panel's default is
    constant).
    Returns (UNet, steps done, seconds used).
    """
    from napari_unet.engine.diameter import match_training_diameter
    from napari_unet.engine.events import StepDone, drive
    from napari_unet.engine.training import TrainConfig, iter_train

    net = copy.deepcopy(base[0])
    images, labels, regions, _ = match_training_diameter(
        *zip(*annotation, strict=True), model_diameter=base[1].diameter, diameter=diameter
    )
    config = TrainConfig(
        steps=steps,
        optimizer="adam",
        lr=lr,
        schedule=schedule,
        tile_size=tile,
        batch_size=1,
        foreground_fraction=FOREGROUND_FRACTION,
        val_fraction=0.0,
        sample_every=0,
        seed=seed,
    )
    t0 = time.perf_counter()
    done = 0
    gen = iter_train(
        net,
        images,
        labels,
        regions=regions,
        config=config,
        device="cpu",
        normalization=dict(base[1].normalization or {"low": 1.0, "high": 99.8}),
    )

    def count(event) -> None:
        nonlocal done
        if isinstance(event, StepDone):
            done = event.step
            if time.perf_counter() - t0 >= budget:
                raise _BudgetSpent

    try:
        drive(gen, count)
    except _BudgetSpent:
        pass
    net.to("cpu").eval()
    return net, done, time.perf_counter() - t0


def score(model_pair, ds: DataSet, diameter: float) -> dict:
    """Segment the test part with ``model_pair`` at ``diameter`` and evaluate it."""
    from napari_unet.engine.api import segment

    planes = ds.splits["test"]
    preds = [segment(s.image, model_pair, diameter=diameter, device="cpu") for s in planes]
    return _evaluate(ds, preds)


def _evaluate(ds: DataSet, preds: list[np.ndarray]) -> dict:
    from napari_unet.engine.metrics import evaluate

    planes = ds.splits["test"]
    masks = [s.mask for s in planes]
    mask = (
        None
        if all(m is None for m in masks)
        else np.stack(
            [
                np.ones(s.labels.shape, bool) if m is None else m
                for s, m in zip(planes, masks, strict=True)
            ]
        )
    )
    return evaluate(
        np.stack([np.asarray(p).astype(np.int32) for p in preds]),
        np.stack([s.labels for s in planes]),
        mask=mask,
    )


def with_diameter(net, base_checkpoint, diameter: float):
    """A (UNet, Checkpoint) pair whose checkpoint says it was trained at ``diameter``."""
    import dataclasses

    return net, dataclasses.replace(base_checkpoint, config=net.config, diameter=float(diameter))


def fine_tuned_pair(net, base_checkpoint, annotation, *, diameter: float):
    """The (UNet, Checkpoint) a fine-tune leaves, as the Fine-tune panel and ``napari-unet
    train`` leave it: the start model's metadata, and the minimum confidence chosen on the
    annotated cells (``annotation``: (image, labels, region) triples at cells of ``diameter``
    px; :mod:`napari_unet.engine.confidence_calibration`). Returns (pair, chosen value)."""
    import dataclasses

    from napari_unet.engine.confidence_calibration import (
        calibrate_min_confidence,
        with_calibration,
    )

    net, checkpoint = with_diameter(net, base_checkpoint, base_checkpoint.diameter)
    images, labels, regions = zip(*annotation, strict=True)
    calibration = calibrate_min_confidence(
        (net, checkpoint), images, labels, regions, diameter=diameter, device="cpu"
    )
    checkpoint = dataclasses.replace(
        checkpoint, extra=with_calibration(checkpoint.extra, calibration)
    )
    return (net, checkpoint), calibration.min_confidence


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the few-shot benchmark, print the table and write ``docs/benchmarks/finetune.md``."""
    from napari_unet.engine.api import load_model, model_diameter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the model to start from (default: bundled)")
    p.add_argument("--sets", nargs="+", default=["trpl", "huh7", "epithelium"])
    p.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    p.add_argument("--budget", type=float, default=120.0, help="seconds per few-shot fine-tune")
    p.add_argument("--ref-budget", type=float, default=240.0, help="seconds for the reference")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tile", type=int, default=160, help="output tile side while fine-tuning")
    p.add_argument(
        "--context",
        type=int,
        default=None,
        help="px of background around each painted cell's box (default: one cell diameter)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "finetune.md")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    machine = _machine()
    base = load_model(args.model, device="cpu")
    d_model = model_diameter(base[1])
    if d_model is None:
        raise SystemExit("the model stores no training diameter ")

    rows: list[dict] = []

    def add(ds, method, n, scores, steps=None, seconds=None, d=None):
        row = {
            "set": ds.name,
            "method": method,
            "n": n,
            "ap50": float(scores["ap@0.5"]),
            "ap75": float(scores["ap@0.75"]),
            "f1": float(scores["f1@0.5"]),
            "n_pred": int(scores["n_pred"]),
            "n_gt": int(scores["n_gt"]),
            "steps": steps,
            "seconds": seconds,
            "d": d,
        }
        rows.append(row)
        print(
            f"{ds.name:10s} {method:28s} n={n!s:>4s} AP@0.5 {row['ap50']:.3f} AP@0.75 "
            f"{row['ap75']:.3f} F1 {row['f1']:.3f} objects {row['n_pred']}/{row['n_gt']}"
            + (f" steps {steps} in {seconds:.0f} s" if steps is not None else "")
            + (f" d {d:.1f}" if d is not None else ""),
            flush=True,
        )
        return row

    for name in args.sets:
        ds = load(name, cache=args.cache)
        train = ds.splits["train"]
        n_pool = ds.n_cells("train")
        d_all = ds.diameter("train")
        context = args.context if args.context is not None else max(1, round(d_all))
        baseline = [
            classical_segment(s.image, diameter=d_all, bright_objects=ds.bright_objects)
            for s in ds.splits["test"]
        ]
        add(ds, "baseline (d given)", "-", _evaluate(ds, baseline), d=d_all)
        add(ds, "bundled, no fine-tuning", "0", score(base, ds, d_all), d=d_all)

        rng = np.random.default_rng(args.seed)
        order = draw_cells(train, max(args.shots), rng)
        mistakes = false_detections(base, train, d_all, rng)
        for n in args.shots:
            if n > len(order):
                print(f"{name}: only {len(order)} cells to annotate; skipping n={n}", flush=True)
                continue
            chosen = order[:n]
            annotation = sparse_annotation(train, chosen, context=context, background=mistakes[:n])
            d_annot = median_diameter([lab for _, lab, _ in annotation if lab.any()])
            net, steps, secs = finetune(
                base,
                annotation,
                diameter=d_annot,
                budget=args.budget,
                seed=args.seed,
                lr=args.lr,
                tile=args.tile,
            )
            pair, _ = fine_tuned_pair(net, base[1], annotation, diameter=d_annot)
            add(ds, "fine-tuned", str(n), score(pair, ds, d_annot), steps, secs, d_annot)

        net, steps, secs = finetune(
            base,
            full_annotation(train),
            diameter=d_all,
            budget=args.ref_budget,
            seed=args.seed,
            lr=args.lr,
            tile=args.tile,
        )
        pair, _ = fine_tuned_pair(net, base[1], full_annotation(train), diameter=d_all)
        add(ds, "fine-tuned, all labels", f"{n_pool}", score(pair, ds, d_all), steps, secs, d_all)

    for r in rows:
        ref = next(
            x for x in rows if x["set"] == r["set"] and x["method"] == "fine-tuned, all labels"
        )
        r["ratio"] = r["ap50"] / ref["ap50"] if ref["ap50"] > 0 else float("nan")
    if not args.no_write:
        write_report(args, rows, machine)
    return rows


def write_report(args, rows: list[dict], machine: str) -> None:
    """The markdown report: setting, table, goal check."""
    lines = [
        "# Few-shot fine-tuning",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`benchmarks/bench_finetune.py`.",
        "",
        f"- Machine: {machine}.",
        f"- Versions: {_versions()}.",
        f"- Command: `python benchmarks/bench_finetune.py {' '.join(sys.argv[1:])}`",
        f"- Starting model: {_model_summary(args.model)}.",
        f"- Few-shot budget {args.budget:.0f} s of wall clock on this CPU per run (data "
        f"preparation included), reference (all labels) {args.ref_budget:.0f} s; Adam, learning "
        f"rate {args.lr:g} constant, output tiles of {args.tile} px, one tile per step, seed "
        f"{args.seed}; background counts inside a box around each painted cell and around as many "
        "of the starting model's false detections on the training part, each bounding box grown "
        "by one median cell diameter of the set (or `--context`); half the tiles centred on a "
        "labelled cell (`foreground_fraction` 0.5) in every run, the reference included.",
    ]
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += [
        "",
        "The test part is never annotated: trpL frames 16-19 (annotation from frames 0-15), the "
        "Huh7 cells right of column 400 scored inside the annotated-region mask (annotation from "
        "the 10 cells left of it), the epithelium's bottom half (annotation from the top half). "
        "`n` = annotated cells; `ratio` = AP@0.5 / AP@0.5 of the model fine-tuned on all labels. "
        "Goal: with 10 cells, ratio >= 0.90. `d` = cell diameter (px) handed to "
        "`segment`: for a fine-tuned model the median of the annotated cells, else of all "
        "training cells.",
        "",
        "| set | method | n cells | AP@0.5 | ratio | AP@0.75 | F1@0.5 | objects (pred/ref) "
        "| steps in s | d |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = f"{r['steps']} in {r['seconds']:.0f}" if r["steps"] is not None else ""
        d = f"{r['d']:.1f}" if r["d"] is not None else ""
        lines.append(
            f"| {r['set']} | {r['method']} | {r['n']} | {r['ap50']:.3f} | {r['ratio']:.2f} | "
            f"{r['ap75']:.3f} | {r['f1']:.3f} | {r['n_pred']}/{r['n_gt']} | {steps} | {d} |"
        )
    goal = [r for r in rows if r["n"] == "10" and r["method"] == "fine-tuned"]
    if goal:
        lines += ["", "Goal check (10 cells, >= 90 % of the fully supervised AP@0.5):", ""]
        for r in goal:
            verdict = "met" if r["ratio"] >= 0.9 else "missed"
            lines.append(f"- {r['set']}: ratio {r['ratio']:.2f}, {verdict}.")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
