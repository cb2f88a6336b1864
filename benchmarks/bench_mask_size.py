"""How large the models draw nuclei against each set's references, on the training and the test
images: the median area of a predicted nucleus over that of its matched reference
(:func:`napari_unet.engine.metrics.size_ratio`), at the reference's diameter (given).

Scoring the *training* images too separates two questions: whether a model draws a set's
outline the way its labels do on images it learnt from, and on images it never saw. The same
ratio by thirds of the reference nuclei's brightness shows a reference's own bias: one global
threshold (BBBC007's Voronoi-Otsu labels, the classical baseline) draws dim nuclei tighter than
bright ones. Prints a table and writes ``docs/benchmarks/mask_size.md`` and an outline figure
(``mask_size_bbbc007.png``).

Usage::

    python benchmarks/bench_mask_size.py --cache .cache/data
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import (
    PREVIOUS_MODEL,
    _baseline,
    _machine,
    _unet,
    _versions,
    pad_stack,
    previous_name,
)
from benchmarks.datasets import load

REPO = Path(__file__).resolve().parent.parent
#: the set whose first test image the figure shows
FIGURE_SET = "bbbc007"
#: (set, splits): the sets with a training part in the bundled model's corpus, and the exact one
SETS = {
    "bbbc007": ("train", "test"),
    "hela": ("train", "test"),
    "scratch": ("train", "test"),
    "lightsheet": ("train", "test"),
    "synthetic": ("test",),
}


def size_by_brightness(fn, planes, diameter: float) -> dict:
    """Size ratios of method ``fn`` over ``planes``: ``all`` (the median over every matched
    pair, :func:`~napari_unet.engine.metrics.matched_area_ratios`) and by the reference nucleus'
    brightness (its mean intensity above the plane's median background), in terciles ``dim``,
    ``mid`` and ``bright``; ``n`` matched nuclei."""
    from napari_unet.engine.metrics import evaluate, matched_area_ratios

    ratios, brightness, preds, refs = [], [], [], []
    for s in planes:
        pred = np.asarray(fn(s.image, diameter)[0]).astype(np.int64)
        ref = s.labels.astype(np.int64)
        preds.append(pred)
        refs.append(ref)
        pairs, plane_ratios = matched_area_ratios(pred, ref)
        ref_area = np.bincount(ref.ravel())
        ref_sum = np.bincount(ref.ravel(), weights=s.image.astype(np.float64).ravel())
        background = float(np.median(s.image[ref == 0])) if (ref == 0).any() else 0.0
        ratios.extend(plane_ratios)
        brightness.extend(ref_sum[pairs[:, 1]] / ref_area[pairs[:, 1]] - background)
    scores = evaluate(pad_stack(preds), pad_stack(refs))  # planes scored one by one
    ap = {"ap50": float(scores["ap@0.5"]), "ap75": float(scores["ap@0.75"])}
    ratios, brightness = np.asarray(ratios), np.asarray(brightness)
    if ratios.size == 0:
        return {"all": float("nan"), "dim": float("nan"), "mid": float("nan"),
                "bright": float("nan"), "n": 0, **ap}  # fmt: skip
    low, high = np.quantile(brightness, [1 / 3, 2 / 3])
    parts = {"dim": brightness <= low, "mid": (brightness > low) & (brightness <= high),
             "bright": brightness > high}  # fmt: skip
    out = {"all": float(np.median(ratios)), "n": int(ratios.size), **ap}
    for name, keep in parts.items():
        out[name] = float(np.median(ratios[keep])) if keep.any() else float("nan")
    return out


def write_figure(path: Path, fn, sample, diameter: float) -> None:
    """A 3x enlarged 200 px crop of ``sample`` around its false positives (predicted objects
    matching no reference at IoU 0.5) with the outlines: reference yellow, prediction cyan,
    both green."""
    from skimage import exposure, io, segmentation

    from napari_unet.engine.errors import error_map

    pred = np.asarray(fn(sample.image, diameter)[0]).astype(np.int64)
    ref = sample.labels.astype(np.int64)
    codes = error_map(pred, ref).codes
    low, high = np.percentile(sample.image, (1, 99.8))
    gray = exposure.rescale_intensity(
        sample.image.astype(float), in_range=(low, high), out_range=(0, 1)
    )
    rgb = np.stack([gray] * 3, axis=-1)
    ref_edge = segmentation.find_boundaries(ref, mode="inner")
    pred_edge = segmentation.find_boundaries(pred, mode="inner")
    rgb[ref_edge] = (1, 1, 0)
    rgb[pred_edge] = (0, 1, 1)
    rgb[ref_edge & pred_edge] = (0, 1, 0)
    rows, cols = np.nonzero(codes == 2)
    r0 = int(np.clip(np.median(rows) - 100, 0, max(gray.shape[0] - 200, 0))) if rows.size else 0
    c0 = int(np.clip(np.median(cols) - 100, 0, max(gray.shape[1] - 200, 0))) if cols.size else 0
    crop = np.kron(rgb[r0 : r0 + 200, c0 : c0 + 200], np.ones((3, 3, 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, (crop * 255).astype(np.uint8), check_contrast=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--previous", default=str(PREVIOUS_MODEL))
    p.add_argument("--cache", default=None)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "mask_size.md")
    p.add_argument("--no-write", action="store_true")
    p.add_argument(
        "--figure",
        type=Path,
        default=REPO / "docs" / "benchmarks" / "mask_size_bbbc007.png",
        help="where to write the outline figure (none with --no-figure)",
    )
    p.add_argument("--no-figure", action="store_true")
    p.add_argument(
        "--outlines",
        nargs="*",
        type=float,
        default=[0.3],
        help="also score the new model at these outline thresholds (background_threshold)",
    )
    args = p.parse_args(argv)
    if args.no_figure or args.no_write:
        args.figure = None

    import torch

    from napari_unet.engine.api import load_model

    torch.set_num_threads(1)
    prev = previous_name(args.previous)
    new = load_model(args.model, device="cpu")
    methods = [
        ("new", _unet(new)),
        *(
            (f"new, outline threshold {t:g}", _unet(new, background_threshold=t))
            for t in args.outlines
        ),
        (prev, _unet(load_model(args.previous, device="cpu"))),
        ("baseline", _baseline),
    ]
    rows = []
    for key in args.sets:
        ds = load(key, cache=args.cache)
        for split in SETS[key]:
            planes = [s for s in ds.splits[split] if s.labels.max() > 0]
            d = ds.diameter(split)
            for name, fn in methods:
                r = size_by_brightness(fn, planes, d)
                rows.append(
                    f"| {key} {split} (d = {d:.1f}) | {name} | {r['all']:.2f} | {r['dim']:.2f} | "
                    f"{r['mid']:.2f} | {r['bright']:.2f} | {r['n']} | {r['ap50']:.3f} | "
                    f"{r['ap75']:.3f} |"
                )
                print(rows[-1], flush=True)
            if args.figure is not None and key == FIGURE_SET and split == "test":
                write_figure(args.figure, methods[0][1], planes[0], d)
    lines = [
        "# Mask size against each set's references",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by "
        "`benchmarks/bench_mask_size.py`; machine: " + _machine() + "; " + _versions() + ".",
        "",
        "The median area of a predicted nucleus over that of the reference nucleus it matches "
        "(IoU >= 0.5), with the number of matched nuclei in brackets; each model is given the "
        "set's reference diameter. 1.00 is the reference's own outline. Only the synthetic "
        "references are exact; the others are machine-made, each set by its own method "
        "(`docs/data.md`). *train*: images in the bundled model's training corpus; *test*: held "
        "out. *dim / mid / bright*: the same median over the matched nuclei in each third of "
        "the references by brightness (mean intensity above the median background): a "
        "reference made by one global threshold outlines dim nuclei tighter than bright ones. "
        "*outline threshold*: the new model with `background_threshold` (the Segment panel's "
        "*outline threshold*, `predict --background-threshold`) below the default 0.5, which "
        "draws tighter outlines. AP over the set's planes (one matching per plane).",
        "",
        f"New: `{Path(args.model).name}`; {prev}: `{Path(args.previous).name}`.",
        "",
        "| set, split | method | size | dim | mid | bright | matched nuclei | AP@0.5 | AP@0.75 |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if args.figure is not None:
        lines += [
            f"![The new model (cyan) and the references (yellow; green where both agree) on a "
            f"crop of the first {FIGURE_SET} test image]({args.figure.name})",
            "",
        ]
    if not args.no_write:
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
