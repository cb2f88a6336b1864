"""What bright debris does to Segment, and what a given intensity range restores.

The model normalises each plane by its 1st and 99.8th percentiles. A bright object larger than
0.2 % of the image (debris, a saturated region, a bright well edge) takes the top percentile,
and the cells look dim to the network. This script paints a square ten times as bright as the
brightest nucleus over 0-3 % of a held-out test image, segments it with the diameter estimated,
once normalised automatically and once with ``intensity_range`` set to the percentiles of the
image without the square (what a user gets by setting napari's contrast limits to show the
cells), and scores both outside the square. Prints a table and writes
``docs/benchmarks/debris.md``.

Usage::

    python benchmarks/bench_debris.py --cache .cache/data
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import cpu_model, one_table_arguments, write_one_table
from benchmarks.datasets import load

SETS = ("hela", "bbbc007")
#: share of the image the bright square covers
SHARES = (0.0, 0.002, 0.01, 0.03)
#: how much brighter than the brightest pixel of the image the square is
BRIGHTNESS = 10.0


def scored(model, image, truth, side: int, intensity_range) -> tuple[float, float | None]:
    """AP@0.5 outside the top-left ``side`` square, and the diameter used."""
    from napari_unet.engine.events import drive
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.segment import iter_segment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = drive(
            iter_segment(image, model, device="cpu", intensity_range=intensity_range)
        )
    labels = np.asarray(result.labels).copy()
    truth = truth.copy()
    labels[:side, :side] = 0
    truth[:side, :side] = 0
    return float(evaluate(labels, truth)["ap@0.5"]), result.diameter


def main(argv=None) -> list[str]:
    args = one_table_arguments(__doc__, "debris.md", argv)
    model = cpu_model(args.model, threads=1)
    rows = []
    for key in SETS:
        sample = load(key, cache=args.cache).splits["test"][0]
        clean = sample.image.astype(np.float32)
        contrast = tuple(float(v) for v in np.percentile(clean, (1.0, 99.8)))
        for share in SHARES:
            image = clean.copy()
            side = int(round(np.sqrt(share * image.size)))
            image[:side, :side] = BRIGHTNESS * clean.max()
            auto, d_auto = scored(model, image, sample.labels, side, None)
            given, d_given = scored(model, image, sample.labels, side, contrast)
            rows.append(
                f"| {key} test image 0 | {100 * share:g} % | {auto:.3f} ({d_auto or 0:.1f} px) | "
                f"{given:.3f} ({d_given or 0:.1f} px) |"
            )
            print(rows[-1], flush=True)
    notes = [
        f"A square {BRIGHTNESS:g} times as bright as the image's brightest pixel over a share "
        "of the first held-out test image; AP@0.5 outside the square, with the diameter used "
        "in brackets (estimated). *automatic*: each plane's 1st-99.8th percentiles; *intensity "
        "range*: the same percentiles of the image without the square (`intensity_range` in "
        "the API, `predict --intensity-range`), the range napari's contrast limits give when "
        "set to show the cells."
    ]
    table = ["| image | square | automatic | intensity range |", "|---|---|---|---|", *rows]
    title = "Bright debris and the intensity range"
    write_one_table(args, "bench_debris.py", title, notes, table)
    return rows


if __name__ == "__main__":
    main()
