"""Segmentation time with and without the batch norms folded into the convolutions: the evidence
for ``napari_unet.engine.model.inference_copy``.

Run: ``python benchmarks/bench_batchnorm_fold.py [--model A.pt --model B.pt ...]`` (the bundled
model when none is given). For each model, ``iter_segment`` on one 1024 x 1024 plane (a HeLa
test frame mirrored to that size, or the bundled sample's image with ``--synthetic``) at the
model's own training diameter (no rescaling), prediction and instance extraction included, as
``benchmarks/bench_accuracy.py`` times it. The two variants alternate (A, B, A, B, ...) so that
the load of this shared machine falls on both alike; the table gives the fastest of
``--repeats`` runs each, their ratio and the largest difference of the class probabilities.
Prints a markdown table and writes it to ``docs/benchmarks/batchnorm_fold.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import _machine, _versions

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "batchnorm_fold.md"


def _unfolded(model):
    """What prediction ran before the fold: the model itself in eval mode (here a copy)."""
    return copy.deepcopy(model).eval()


def _plane(args) -> np.ndarray:
    if args.synthetic:
        from napari_unet.engine.api import nuclei_sample_arrays

        image = np.asarray(nuclei_sample_arrays()[0], np.float32)
    else:
        from benchmarks.datasets import load

        image = load("hela", cache=args.cache).splits["test"][0].image
    rows, cols = image.shape
    pad = ((0, max(0, 1024 - rows)), (0, max(0, 1024 - cols)))
    return np.pad(image, pad, mode="symmetric")[:1024, :1024]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model file (repeatable)")
    parser.add_argument("--cache", default=None, help="dataset cache folder")
    parser.add_argument("--synthetic", action="store_true", help="time the bundled sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    from napari_unet.engine.api import iter_segment, load_model, model_diameter
    from napari_unet.engine.events import drive
    from napari_unet.engine.tiling import predict

    plane = _plane(args)
    rows = []
    for source in args.model or ["default"]:
        model = load_model(source, device="cpu")
        net, ckpt = model
        d = model_diameter(ckpt)

        def run(model=model, d=d) -> float:
            start = time.perf_counter()
            drive(iter_segment(plane, model, diameter=d, device="cpu"))
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"folded": [], "unfolded": []}
        run()  # warm-up: oneDNN picks its kernels on first use
        for _ in range(args.repeats):
            times["folded"].append(run())
            with mock.patch("napari_unet.engine.tiling.inference_copy", _unfolded):
                times["unfolded"].append(run())
        folded = predict(net, plane[:512, :512], device="cpu")
        with mock.patch("napari_unet.engine.tiling.inference_copy", _unfolded):
            unfolded = predict(net, plane[:512, :512], device="cpu")
        diff = float(np.abs(folded - unfolded).max())
        best_f, best_u = min(times["folded"]), min(times["unfolded"])
        name = Path(source).name if source != "default" else "bundled"
        rows.append(
            f"| {name} | {net.config.base_channels} | {net.config.norm} | {best_u:.2f} | "
            f"{best_f:.2f} | x{best_u / best_f:.2f} | {diff:.1e} |"
        )
        print(rows[-1], flush=True)

    text = "\n".join(
        [
            "# Prediction time with the batch norms folded into the convolutions",
            "",
            f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by "
            f"`python benchmarks/bench_batchnorm_fold.py {' '.join(sys.argv[1:])}`.",
            "",
            f"- Machine: {_machine()}.",
            f"- Versions: {_versions()}.",
            f"- Image: one 1024 x 1024 plane ({'the bundled sample' if args.synthetic else 'a HeLa test frame'}, "
            "mirrored to size), segmented at the model's training diameter (prediction and "
            "instance extraction). The variants alternate; the fastest of "
            f"{args.repeats} runs each counts. Timings on this shared machine move by up to 2x "
            "between runs: compare within one row.",
            "- max |Δp|: the largest difference of a class probability between the two, on a "
            "512 x 512 crop.",
            "",
            "| model | base channels | norm | s per 1024², unfolded | s per 1024², folded | "
            "speed-up | max abs Δp |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "In eval mode a batch norm is a fixed per-channel affine map: `inference_copy` folds "
            "it into the convolution before it, so prediction makes one pass over the feature "
            "maps fewer. A net without batch norm has nothing to fold (its two rows time the "
            "same computation).",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
