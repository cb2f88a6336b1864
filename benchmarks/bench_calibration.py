"""Calibrate the instance step of a model on the validation images of its corpus.

Two tables, both on the validation images of the training corpus (HeLa frames 14-16 and the
procedural validation images of ``benchmarks/corpus.py``; never a test set):

1. **Background threshold.** Instances grow over the pixels whose background probability is
   below a threshold (``instances_from_probabilities(background_threshold=)``): AP@0.5, AP@0.75,
   the predicted foreground area over the reference's and the object count over the reference's.
   It chose ``engine.label_step.BACKGROUND_THRESHOLD`` for the bundled model, and showed that a
   model trained with class balancing draws its masks too wide (area ratio above 1).
2. **Object filters.** Objects smaller than a fraction of the disc of the cell diameter, and
   objects whose mean interior probability is below a confidence, are removed. The pair with the
   best AP@0.5 (then AP@0.75) is the one marked; it chose ``MIN_AREA_OF_CELL`` and
   ``MIN_CONFIDENCE`` in ``engine/label_step.py``.
3. **Seed threshold.** Each object grows from a connected region of confident interior,
   ``P(interior) > threshold``; a higher threshold narrows those regions, so that touching
   cells joined by a band of half-sure interior start from two seeds, while the outline stays
   where the background threshold draws it. With the filters in use: AP@0.5, AP@0.75, merges
   and splits (:func:`napari_unet.engine.errors.merges_and_splits`). It chose
   ``SEED_THRESHOLD``.

Scores are pooled over the images (one matching over the stack of validation planes).

Usage::

    python benchmarks/bench_calibration.py MODEL [--corpus corpus.npz] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.corpus import Corpus, build_corpus  # noqa: E402

THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15)
AREA_FRACTIONS = (0.1, 0.2, 0.25, 0.3, 0.35, 0.4)
CONFIDENCES = (0.0, 0.3, 0.35, 0.4, 0.45, 0.5)
SEED_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _stack(planes: list[np.ndarray]) -> np.ndarray:
    """Label planes of any shapes as one padded stack with ids unique across planes."""
    from benchmarks.bench_accuracy import pad_stack

    unique, offset = [], 0
    for p in planes:
        p = p.astype(np.int64)
        unique.append(np.where(p > 0, p + offset, 0))
        offset += int(p.max())
    return pad_stack(unique)


def _filtered(labels: np.ndarray, prob: np.ndarray, min_area: float, confidence: float):
    from napari_unet.engine.instances import object_confidence

    area = np.bincount(labels.reshape(-1), minlength=int(labels.max()) + 1)
    keep = (area >= min_area) & (object_confidence(labels, prob) >= confidence)
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def _sweep_row(value: float, used: float, pred: np.ndarray, gt: np.ndarray, more) -> str:
    """One row of a one-parameter sweep: the value (marked when in use), AP@0.5, AP@0.75, then
    the cells ``more(scores)`` adds."""
    from napari_unet.engine.metrics import evaluate

    sc = evaluate(pred, gt)
    mark = " (used)" if value == used else ""
    row = f"| {value:g}{mark} | {sc['ap@0.5']:.3f} | {sc['ap@0.75']:.3f} | "
    row += " | ".join(more(sc)) + " |"
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    from napari_unet.engine.api import iter_segment, load_model
    from napari_unet.engine.errors import merges_and_splits
    from napari_unet.engine.events import drive
    from napari_unet.engine.instances import instances_from_probabilities
    from napari_unet.engine.label_step import (
        BACKGROUND_THRESHOLD,
        MIN_AREA_OF_CELL,
        MIN_CONFIDENCE,
        SEED_THRESHOLD,
    )
    from napari_unet.engine.metrics import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--corpus", type=Path, default=None, help="a corpus .npz from corpus.py")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "calibration.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Corpus.load(args.corpus) if args.corpus else build_corpus(cache=args.cache)
    model = load_model(args.model, device="cpu")
    d = corpus.diameter
    gts = list(corpus.val_labels)
    probs = [
        drive(iter_segment(im, model, diameter=d, device="cpu")).probabilities
        for im in corpus.val_images
    ]
    gt = _stack(gts)
    lines = [
        "# Calibration of the instance step",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        "`benchmarks/bench_calibration.py` on the validation images of the bundled model's "
        f"corpus ({len(gts)} images: HeLa frames 14-16 and procedural validation images; no "
        f"test set), model `{args.model}`, cell diameter {d:.1f} px. Scores pooled over the "
        "images.",
        "",
        "## Background threshold (objects kept: all above 10 % of a cell's area)",
        "",
        "| P(background) below | AP@0.5 | AP@0.75 | area / reference | objects / reference |",
        "|---|---|---|---|---|",
    ]
    base_area = 0.1 * math.pi / 4.0 * d * d
    for threshold in THRESHOLDS:
        planes = [
            _filtered(instances_from_probabilities(pr, min_size=0, background_threshold=threshold),
                      pr, base_area, 0.0)
            for pr in probs
        ]
        pred = _stack(planes)
        lines.append(_sweep_row(threshold, BACKGROUND_THRESHOLD, pred, gt, lambda sc, pred=pred: (
            f"{(pred > 0).mean() / (gt > 0).mean():.3f}", f"{sc['n_pred'] / sc['n_gt']:.3f}"
        )))

    raw = [instances_from_probabilities(pr, min_size=0, background_threshold=BACKGROUND_THRESHOLD)
           for pr in probs]
    grid = {}
    for fraction in AREA_FRACTIONS:
        for confidence in CONFIDENCES:
            min_area = fraction * math.pi / 4.0 * d * d
            pred = _stack([_filtered(lab, pr, min_area, confidence)
                           for lab, pr in zip(raw, probs, strict=True)])
            sc = evaluate(pred, gt)
            grid[fraction, confidence] = (sc["ap@0.5"], sc["ap@0.75"], sc["n_pred"] / sc["n_gt"])
    best = max(grid, key=lambda k: (round(grid[k][0], 4), round(grid[k][1], 4)))
    lines += [
        "",
        "## Object filters: AP@0.5 (AP@0.75), by minimum area and minimum confidence",
        "",
        "Minimum area as a fraction of the disc of the cell diameter; minimum confidence = the "
        "mean interior probability an object needs. **Bold**: the best AP@0.5 (then AP@0.75); "
        f"the defaults in use are area {MIN_AREA_OF_CELL:g}, confidence {MIN_CONFIDENCE:g}.",
        "",
        "| area \\ confidence | " + " | ".join(f"{c:g}" for c in CONFIDENCES) + " |",
        "|---|" + "---|" * len(CONFIDENCES),
    ]
    for fraction in AREA_FRACTIONS:
        cells = []
        for confidence in CONFIDENCES:
            a50, a75, _ = grid[fraction, confidence]
            cell = f"{a50:.3f} ({a75:.3f})"
            cells.append(f"**{cell}**" if (fraction, confidence) == best else cell)
        lines.append(f"| {fraction:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Best: area {best[0]:g}, confidence {best[1]:g}.", ""]
    lines += [
        "## Seed threshold (the filters in use)",
        "",
        f"Objects grow from the connected regions of P(interior) above the seed threshold over "
        f"the pixels with P(background) below {BACKGROUND_THRESHOLD:g}; objects under "
        f"{MIN_AREA_OF_CELL:g} of a cell's disc or with a mean interior probability under "
        f"{MIN_CONFIDENCE:g} are removed.",
        "",
        "| P(interior) above | AP@0.5 | AP@0.75 | merges | splits | objects / reference |",
        "|---|---|---|---|---|---|",
    ]
    min_area = math.ceil(MIN_AREA_OF_CELL * math.pi / 4.0 * d * d)
    for threshold in SEED_THRESHOLDS:
        pred = _stack([
            instances_from_probabilities(
                pr, threshold=threshold, min_size=min_area, min_confidence=MIN_CONFIDENCE,
                background_threshold=BACKGROUND_THRESHOLD,
            )
            for pr in probs
        ])
        ms = merges_and_splits(pred, gt)
        lines.append(_sweep_row(threshold, SEED_THRESHOLD, pred, gt, lambda sc, ms=ms: (
            str(ms.merges), str(ms.splits), f"{sc['n_pred'] / sc['n_gt']:.3f}"
        )))
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
