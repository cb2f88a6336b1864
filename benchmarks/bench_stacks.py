"""Z stacks: one diameter estimate for the whole stack (what Segment and ``predict`` do) against
the estimate of its middle plane alone (the rule before), an estimate per plane, and the
diameter given.

In a volume of nuclei cut into planes, a nucleus' section shrinks towards its caps, so the
section diameter changes from plane to plane; ``segment(stack=True)`` measures one diameter on
three planes side by side (``diameter_estimate.estimation_sample``) and rescales every plane by
it. This script segments contiguous planes of the held-out test crops of the two nucleus
volumes (cells3d and the light-sheet volume; crops and planes as in docs/data.md, every plane
between the first and the last test plane) four ways with the bundled model, in one run: the
stack with its estimate; the stack with the estimate of its middle plane alone, the rule before;
each plane on its own with its own estimate (as ``bench_accuracy.py`` scores its test planes);
and the stack with the set's diameter given. Prints a table and writes
``docs/benchmarks/stacks.md``.

Usage::

    python benchmarks/bench_stacks.py --cache .cache/data
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import cpu_model, one_table_arguments, write_one_table
from benchmarks.datasets import (
    CELLS3D_COLUMNS,
    CELLS3D_PLANES,
    LIGHTSHEET_COLUMNS,
    LIGHTSHEET_PLANES,
    load_cells3d,
    load_lightsheet,
)


def held_out_stack(name: str, cache=None):
    """(title, list of Samples): every plane of the set's test crop from its first to its last
    test plane."""
    if name == "cells3d":
        planes, columns, loader = CELLS3D_PLANES["test"], CELLS3D_COLUMNS, load_cells3d
    else:
        planes, columns, loader = LIGHTSHEET_PLANES["test"], LIGHTSHEET_COLUMNS, load_lightsheet
    every = tuple(range(min(planes), max(planes) + 1))
    ds = loader(cache=cache, planes={"test": every}, columns={"test": columns["test"]})
    return f"{name}, planes {every[0]}-{every[-1]}", ds.splits["test"]


def main(argv=None) -> list[str]:
    from benchmarks.datasets import median_diameter

    from napari_unet.engine.events import drive
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.segment import iter_segment

    args = one_table_arguments(__doc__, "stacks.md", argv)
    model = cpu_model(args.model, threads=2)

    def run(image, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return drive(iter_segment(image, model, device="cpu", **kwargs))

    rows = []
    for name in ("cells3d", "lightsheet"):
        title, samples = held_out_stack(name, args.cache)
        stack = np.stack([s.image for s in samples])
        truth = np.stack([s.labels for s in samples])
        given = median_diameter([s.labels for s in samples])
        ways = {}
        t0 = time.perf_counter()
        one = run(stack, stack=True)
        ways["one estimate for the stack"] = (
            one.labels, f"{one.diameter or 0:.1f}", time.perf_counter() - t0
        )
        t0 = time.perf_counter()
        middle = run(stack[len(samples) // 2]).diameter  # the rule before: the middle plane
        before = run(stack, stack=True, diameter=middle) if middle else one
        ways["the middle plane's estimate (the rule before)"] = (
            before.labels, f"{middle or 0:.1f}", time.perf_counter() - t0
        )
        t0 = time.perf_counter()
        each = [run(s.image) for s in samples]
        found = [r.diameter for r in each if r.diameter is not None]
        spread = f"{min(found):.1f}-{max(found):.1f}" if found else "-"
        ways["an estimate per plane"] = (
            np.stack([r.labels for r in each]), spread, time.perf_counter() - t0
        )
        t0 = time.perf_counter()
        fixed = run(stack, stack=True, diameter=given)
        ways["diameter given"] = (fixed.labels, f"{given:.1f}", time.perf_counter() - t0)
        # the seconds of each way's own segmentation (they used to run on to this loop's
        # scoring, adding the later ways' time to the earlier ones)
        for way, (labels, d, seconds) in ways.items():
            m = evaluate(np.asarray(labels).astype(np.int32), truth)
            rows.append(
                f"| {title} ({len(samples)} planes) | {way} | {m['ap@0.5']:.3f} | "
                f"{m['ap@0.75']:.3f} | {int(m['n_pred'])}/{int(m['n_gt'])} | {d} | {seconds:.1f} |"
            )
            print(rows[-1], flush=True)
    notes = [
        "One run; seconds on a shared 2-core CPU (torch 2 threads): compare within the table.",
        "Contiguous planes of the held-out test crops of the two nucleus volumes (the planes "
        "between the first and the last test plane of docs/data.md; no plane of these crops was "
        "trained on). *one estimate for the stack*: `segment(stack=True)`, what the Segment "
        "panel and `predict` do with a stack, measured on three planes side by side; *the "
        "middle plane's estimate*: the rule before, measured on the middle plane alone; "
        "*an estimate per plane*: each plane segmented on its own (a plane with too few cells "
        "is segmented at the model's 24 px); *diameter given*: the median equivalent diameter "
        "of the crop's whole reference sections. Objects are matched plane by plane. *d*: the "
        "diameter(s) used, px.",
    ]
    table = [
        "| stack | diameter | AP@0.5 | AP@0.75 | objects (pred/ref) | d | s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    title = "Z stacks: one diameter for the stack or one per plane"
    write_one_table(args, "bench_stacks.py", title, notes, table)
    return rows


if __name__ == "__main__":
    main()
