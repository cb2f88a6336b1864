"""How large the models draw nuclei against each set's references, on the training and the test
images: the median area of a predicted nucleus over that of its matched reference
(:func:`napari_unet.engine.metrics.size_ratio`), at the reference's diameter (given).

Scoring the *training* images too separates two questions: whether a model draws a set's
outline the way its labels do on images it learnt from, and on images it never saw. Prints a
table and writes ``docs/benchmarks/mask_size.md``.

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
#: (set, splits): the sets with a training part in the bundled model's corpus, and the exact one
SETS = {
    "bbbc007": ("train", "test"),
    "hela": ("train", "test"),
    "scratch": ("train", "test"),
    "lightsheet": ("train", "test"),
    "synthetic": ("test",),
}


def stack_size_ratio(fn, planes, diameter: float) -> tuple[float, int]:
    """The size ratio of method ``fn`` over ``planes`` (ids unique across planes) and the
    number of matched nuclei it rests on."""
    from napari_unet.engine.metrics import match_instances, size_ratio

    preds, gts, offset, gt_offset = [], [], 0, 0
    for s in planes:
        labels = np.asarray(fn(s.image, diameter)[0]).astype(np.int64)
        preds.append(np.where(labels > 0, labels + offset, 0))
        offset += int(labels.max())
        ref = s.labels.astype(np.int64)
        gts.append(np.where(ref > 0, ref + gt_offset, 0))
        gt_offset += int(ref.max())
    pred, gt = pad_stack(preds), pad_stack(gts)
    return size_ratio(pred, gt), match_instances(pred, gt).tp


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--previous", default=str(PREVIOUS_MODEL))
    p.add_argument("--cache", default=None)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "mask_size.md")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)

    import torch

    from napari_unet.engine.api import load_model

    torch.set_num_threads(1)
    prev = previous_name(args.previous)
    methods = [
        ("new", _unet(load_model(args.model, device="cpu"))),
        (prev, _unet(load_model(args.previous, device="cpu"))),
        ("baseline", _baseline),
    ]
    rows = []
    for key in args.sets:
        ds = load(key, cache=args.cache)
        for split in SETS[key]:
            planes = [s for s in ds.splits[split] if s.labels.max() > 0]
            d = ds.diameter(split)
            cells = [f"{key} {split} (d = {d:.1f})"]
            for _, fn in methods:
                ratio, n = stack_size_ratio(fn, planes, d)
                cells.append(f"{ratio:.2f} ({n})")
            rows.append("| " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
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
        "out.",
        "",
        f"| set, split | new (`{Path(args.model).name}`) | {prev} | baseline |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    if not args.no_write:
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
