"""How tight a model's masks are on the validation images of its corpus, per background threshold.

Instances grow over the pixels whose background probability is below a threshold
(``instances_from_probabilities(background_threshold=)``). This script labels the validation
images of the training corpus (HeLa frames 14-16 and the procedural validation images of
``benchmarks/corpus.py``, never the test sets) at several thresholds and prints AP@0.5, AP@0.75,
the predicted foreground area over the reference's and the object count over the reference's.
It chose ``engine.segment.BACKGROUND_THRESHOLD`` for the bundled model, and showed that a model
trained with class balancing draws its masks too wide (area ratio above 1).

Usage::

    python benchmarks/bench_calibration.py MODEL [--corpus corpus.npz] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import Corpus, build_corpus

THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15)


def main(argv: list[str] | None = None) -> None:
    from napari_unet.engine.api import iter_segment, load_model
    from napari_unet.engine.events import drive
    from napari_unet.engine.instances import instances_from_probabilities
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.segment import _min_size_for

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--corpus", type=Path, default=None, help="a corpus .npz from corpus.py")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Corpus.load(args.corpus) if args.corpus else build_corpus(cache=args.cache)
    model = load_model(args.model, device="cpu")
    d = corpus.diameter
    pairs = list(zip(corpus.val_images, corpus.val_labels, strict=True))
    probs = [drive(iter_segment(im, model, diameter=d, device="cpu")).probabilities for im, _ in pairs]
    print("| P(background) below | AP@0.5 | AP@0.75 | area / reference | objects / reference |")
    print("|---|---|---|---|---|")
    for threshold in THRESHOLDS:
        rows = []
        for (_, gt), prob in zip(pairs, probs, strict=True):
            labels = instances_from_probabilities(
                prob, min_size=_min_size_for(None, d), background_threshold=threshold
            )
            sc = evaluate(labels, gt)
            rows.append((sc["ap@0.5"], sc["ap@0.75"], (labels > 0).mean() / (gt > 0).mean(),
                         sc["n_pred"] / sc["n_gt"]))
        m = np.mean(rows, axis=0)
        print(f"| {threshold} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
