"""``napari-unet evaluate``: score predicted instance labels against ground-truth labels:
AP@0.5..0.9, F1, precision, recall, SEG, foreground IoU, pixel error and Rand error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_unet.cli.axes import add_axes_option
from napari_unet.cli.files import (
    as_label_array,
    check_new_outputs,
    is_tiff_name,
    pair_by_name,
    path_text,
)
from napari_unet.cli.output import UsageError, say, warning


def _metric_rows(keys: Sequence[str]) -> list[tuple[str, str]]:
    rows = [(k, "AP@" + k.split("@", 1)[1]) for k in keys if k.startswith("ap@")]
    names = {
        "map": "mAP",
        "f1@0.5": "F1@0.5",
        "precision@0.5": "precision@0.5",
        "recall@0.5": "recall@0.5",
        "seg": "SEG",
        "iou": "foreground IoU",
        "pixel_error": "pixel error",
        "rand_error": "Rand error",
        "mean_matched_iou": "mean matched IoU",
        "tp@0.5": "TP@0.5",
        "fp@0.5": "FP@0.5",
        "fn@0.5": "FN@0.5",
        "n_pred": "objects (prediction)",
        "n_gt": "objects (ground truth)",
    }
    rows += [(k, name) for k, name in names.items() if k in keys]
    return rows


def _format_value(key: str, value: float) -> str:
    if key.startswith(("tp@", "fp@", "fn@", "n_")):
        return f"{round(value)}"
    return f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: score predicted labels against ground truth."""
    from napari_unet.engine.axes import detect_label_axes
    from napari_unet.engine.axes_layout import AxesLayout
    from napari_unet.engine.io import list_images, read_tiff
    from napari_unet.engine.metrics import evaluate

    pred = Path(args.prediction).expanduser()
    gt = Path(args.ground_truth).expanduser()
    for path in (pred, gt):
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
    if pred.is_dir() != gt.is_dir():
        raise UsageError("give two files or two folders (prediction and ground truth)")
    if pred.is_dir():
        # predict --probabilities DIR writes <stem>_probabilities.tif beside the labels: no labels
        predictions = [p for p in list_images(pred) if not p.stem.endswith("_probabilities")]
        pairs = pair_by_name(predictions, list_images(gt))
    else:
        pairs = [(pred, gt)]
    errors_path = Path(args.errors).expanduser() if args.errors else None
    if errors_path is not None:
        if pred.is_dir():
            raise UsageError("--errors needs one prediction file and one ground-truth file")
        if not is_tiff_name(errors_path):
            raise UsageError(f"--errors {errors_path} must be a .tif or .tiff file")
        check_new_outputs([errors_path], overwrite=args.overwrite, inputs=[pred, gt])
    if pred.is_dir() and pred.resolve() == gt.resolve():  # each file would be paired with itself
        raise UsageError(
            f"PRED and GT are both the folder {pred}: every file would be scored against itself; "
            "give the predictions and the ground truth in two folders"
        )

    results = []
    for p, g in pairs:
        a = as_label_array(read_tiff(p).data, p)
        b = as_label_array(read_tiff(g).data, g)
        if a.shape != b.shape:
            raise UsageError(f"{p.name} has shape {a.shape} but {g.name} has shape {b.shape}")
        # planes first, as the metrics read a 3-D label image; detected as in the Inspect panel
        # (a small last axis is planes, YXZ) unless --axes says otherwise
        if args.axes and "C" in args.axes.upper():
            raise UsageError("label images have no channel axis; --axes takes Y, X, Z, T, P")
        try:
            layout = AxesLayout(a.shape, args.axes or detect_label_axes(a.shape))
        except ValueError as exc:
            raise UsageError(f"{p}: {exc}") from None
        scores = evaluate(layout.to_engine(a)[0], layout.to_engine(b)[0])
        if scores["n_gt"] == 0 and scores["n_pred"] > 0:
            # no object to find: recall and SEG are undefined, shown as 0 (engine/metrics.py)
            warning(
                f"{g} has no objects: recall and SEG are undefined (shown as 0) and every "
                f"predicted object counts as a false positive (AP 0)"
            )
        results.append((p, g, scores))
        if errors_path is not None:
            _write_errors(
                errors_path, a, b, layout.axes, overwrite=args.overwrite, quiet=args.json
            )

    keys = list(results[0][2])
    mean = {k: float(np.mean([r[2][k] for r in results])) for k in keys}
    if args.json:
        payload = {
            "pairs": [
                {"prediction": str(p), "ground_truth": str(g), "metrics": m} for p, g, m in results
            ],
            "mean": mean,
        }
        say(json.dumps(payload, indent=2))
        return 0
    rows = _metric_rows(keys)
    if len(results) == 1:
        p, g, m = results[0]
        say(f"prediction:   {p}\nground truth: {g}")
        width = max(len(name) for _, name in rows)
        for key, name in rows:
            say(f"  {name:<{width}}  {_format_value(key, m[key])}")
        return 0
    short = [("ap@0.5", "AP@0.5"), ("ap@0.75", "AP@0.75"), ("ap@0.9", "AP@0.9"), ("f1@0.5", "F1@0.5"),
             ("seg", "SEG"), ("iou", "IoU"), ("pixel_error", "pix.err"), ("rand_error", "Rand err")]
    short = [(k, n) for k, n in short if k in keys]
    name_width = max(8, *(len(p.name) for p, _, _ in results))
    say(f"{'image':<{name_width}}  " + "  ".join(f"{n:>8}" for _, n in short))
    for p, _, m in results:
        say(f"{p.name:<{name_width}}  " + "  ".join(f"{m[k]:>8.4f}" for k, _ in short))
    say(f"\nmean over {len(results)} images:")
    width = max(len(name) for _, name in rows)
    for key, name in rows:
        value = f"{mean[key]:.1f}" if key.startswith(("tp@", "fp@", "fn@", "n_")) else f"{mean[key]:.4f}"
        say(f"  {name:<{width}}  {value}")
    return 0


def _write_errors(
    path: Path, pred: np.ndarray, gt: np.ndarray, axes: str, *, overwrite: bool, quiet: bool
):
    """Write the error map (codes of ``ERROR_CLASSES``) of one pair in the files' ``axes``,
    every plane scored on its own, atomically."""
    from napari_unet.engine.errors import ERROR_CLASSES, error_map
    from napari_unet.engine.io import write_tiff

    errors = error_map(pred, gt, axes=axes)
    write_tiff(path, errors.codes, overwrite=overwrite)
    if not quiet:
        legend = ", ".join(f"{code} {name}" for code, name in ERROR_CLASSES.items())
        counts = ", ".join(f"{k} {v}" for k, v in errors.counts.items())
        say(f"error map: {path} ({legend})\n  {counts}")


HELP = "score predicted labels against ground truth"


def add_arguments(e: argparse.ArgumentParser) -> None:
    """The options of ``napari-unet evaluate``."""
    e.add_argument("prediction", type=path_text, metavar="PRED", help="predicted labels: a TIFF file or a folder")
    e.add_argument("ground_truth", type=path_text, metavar="GT", help="ground-truth labels: a TIFF file or a folder")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument(
        "--errors",
        type=path_text,
        metavar="OUT.tif",
        help="write a map of the errors (0 background, 1 correct, 2 false positive, 3 miss, "
        "4 merge, 5 split) for one prediction file",
    )
    e.add_argument("--overwrite", action="store_true", help="replace an existing --errors file")
    add_axes_option(
        e,
        about="the label images' axes, e.g. YXZ for planes last (default: detected; a small "
        "last axis is planes, YXZ, otherwise planes come first)",
    )
