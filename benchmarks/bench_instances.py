"""Which instance extraction separates touching nuclei best: a measurement over the held-out sets.

The network's three-class output (background, interior, border) is turned into instances by
growing the connected confident interiors over interior + border
(:func:`napari_unet.engine.instances.instances_from_probabilities`). Where the border between
two touching nuclei is predicted too weakly their interiors join and the nuclei merge. The
variant measured here cuts a joined interior at its necks first (``interior_split``: one seed
per maximum of the interior's distance transform that rises a given depth above the saddle; the
depth is a fraction of the nucleus diameter, so it means the same at every scale).

For each held-out set the model's probabilities are computed once (at the reference diameter),
then every variant labels them, otherwise as ``napari_unet.segment`` does (its background
threshold). Columns as in ``bench_accuracy.py``, plus merges and splits.

Usage::

    python benchmarks/bench_instances.py [--model PATH] [--cache DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import SETS, _machine, _model_summary, _versions, pad_stack
from benchmarks.datasets import load

REPO = Path(__file__).resolve().parent.parent
FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2)


def main(argv: list[str] | None = None) -> list[dict]:
    from napari_unet.engine.api import iter_segment, load_model
    from napari_unet.engine.errors import merges_and_splits
    from napari_unet.engine.events import drive
    from napari_unet.engine.instances import instances_from_probabilities
    from napari_unet.engine.label_step import BACKGROUND_THRESHOLD, min_size_for
    from napari_unet.engine.metrics import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "instances.md")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = _machine()
    model = load_model(args.model, device="cpu")
    rows = []
    for key, title, split, _real in SETS:
        ds = load(key, cache=args.cache)
        planes = [s for s in ds.splits[split] if s.labels.max() > 0]
        d = ds.diameter(split)
        probs = [
            drive(iter_segment(s.image, model, diameter=d, device="cpu")).probabilities
            for s in planes
        ]
        for fraction in FRACTIONS:
            preds, gts, offset, g_offset = [], [], 0, 0
            for s, prob in zip(planes, probs, strict=True):
                lab = instances_from_probabilities(
                    prob,
                    min_size=min_size_for(None, d),
                    interior_split=fraction * d,
                    background_threshold=BACKGROUND_THRESHOLD,
                ).astype(np.int64)
                preds.append(np.where(lab > 0, lab + offset, 0))
                gts.append(np.where(s.labels > 0, s.labels.astype(np.int64) + g_offset, 0))
                offset += int(lab.max())
                g_offset += int(s.labels.max())
            pred, gt = pad_stack(preds), pad_stack(gts)
            scores = evaluate(pred, gt)
            ms = merges_and_splits(pred, gt)
            row = {
                "set": title,
                "fraction": fraction,
                **{k: float(scores[k]) for k in ("ap@0.5", "ap@0.75", "seg")},
                "merges": ms.merges,
                "splits": ms.splits,
                "objects": f"{int(scores['n_pred'])}/{int(scores['n_gt'])}",
            }
            rows.append(row)
            print(
                f"{title:20s} split {fraction:.2f} AP@0.5 {row['ap@0.5']:.3f} "
                f"AP@0.75 {row['ap@0.75']:.3f} SEG {row['seg']:.3f} merges {ms.merges} "
                f"splits {ms.splits} objects {row['objects']}",
                flush=True,
            )
    means = [
        (f, np.mean([r["ap@0.5"] for r in rows if r["fraction"] == f and r["set"] != SETS[-1][1]]))
        for f in FRACTIONS
    ]
    for f, m in means:
        print(f"interior split {f:.2f}: mean AP@0.5 over the real sets {m:.3f}")
    if not args.no_write:
        lines = [
            "# Instance extraction: cutting joined interiors at their necks",
            "",
            f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
            "`benchmarks/bench_instances.py` (see its docstring for the method).",
            "",
            f"- Machine: {machine}.",
            f"- Versions: {_versions()}.",
            f"- Model: {_model_summary(args.model)}.",
            "- Diameter: the reference's median, given. `split` is the neck depth as a fraction "
            "of the diameter (0: off).",
            "",
            "| split | mean AP@0.5 over the real sets |",
            "|---|---|",
            *[f"| {f:.2f} | {m:.3f} |" for f, m in means],
            "",
            "| set | split | AP@0.5 | AP@0.75 | SEG | merges | splits | objects (pred/ref) |",
            "|---|---|---|---|---|---|---|---|",
            *[
                f"| {r['set']} | {r['fraction']:.2f} | {r['ap@0.5']:.3f} | {r['ap@0.75']:.3f} | "
                f"{r['seg']:.3f} | {r['merges']} | {r['splits']} | {r['objects']} |"
                for r in rows
            ],
            "",
        ]
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
