"""The training corpus of the bundled generalist nucleus model.

Six sources, each image rescaled so that its median nucleus diameter equals the model's
training diameter (:data:`TRAIN_DIAMETER`):

* Fluo-N2DL-HeLa frames 0-13 (CTC reference segmentation), frames 14-16 for validation;
* BBBC007 folders ``f96 (17)`` and ``f9620`` (machine-made Voronoi-Otsu labels);
* the ``train`` crops of the scratch assay, the cells3d volume and the light-sheet volume (the
  left part of each image, more than a nucleus diameter away from the ``test`` crops; machine-made
  labels; see ``datasets.py``);
* procedural nuclei from :mod:`napari_unet.engine.nucleus_generator` (exact labels), drawn with
  seeds that the synthetic test set never uses.

Held out and never trained on: HeLa frames 17-19, BBBC007 folder ``A9``, the ``test`` crops of
the scratch assay, cells3d and light-sheet, CHO (no part of it) and the synthetic test draw.

Machine-made labels are noisy. Where they are unreliable the pixels get weight 0 (the
"annotated regions" mechanism of training, :func:`trusted_region`): bright blobs that no label
covers (missed nuclei) and labels that look like merged clusters (much larger than the median
nucleus and clearly non-convex). Everything else counts, background included.

A corpus can be written to one ``.npz`` file (``python benchmarks/corpus.py -o corpus.npz``) and
read back by the training script, for a machine that has no access to the wheels.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Median nucleus diameter (pixels) every training image is rescaled to; stored in the model.
TRAIN_DIAMETER = 24.0
#: Share of the training tiles drawn from each source.
SHARES = {
    "hela": 0.25, "bbbc007": 0.25, "synthetic": 0.3, "scratch": 0.08, "cells3d": 0.06,
    "lightsheet": 0.06,
}
#: Sets whose ``train`` split (a spatial crop, see ``datasets.py``) joins the corpus as it is
#: loaded, each image rescaled by the set's median diameter and masked by :func:`trusted_region`.
CROPPED_SETS = ("scratch", "cells3d", "lightsheet")
#: How a set's nucleus size is measured for its rescaling (see :func:`build_corpus`).
SIZE_RULES = ("all", "whole")
#: Synthetic training images drawn (seeds from 0; the synthetic test set uses 90000+).
N_SYNTHETIC = 160
N_SYNTHETIC_VAL = 4


@dataclass
class Corpus:
    """Training and validation images at the training diameter.

    ``images`` are float32 (rows, columns), ``labels`` int32 instances, ``regions`` bool (True
    where the labels are trusted) or None, ``shares`` the per-image sampling weights passed to
    ``iter_train(image_weights=...)``, ``sources`` the set each image comes from.
    """

    diameter: float
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    regions: list[np.ndarray | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    val_images: list[np.ndarray] = field(default_factory=list)
    val_labels: list[np.ndarray] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def shares(self) -> list[float]:
        """Per-image weights so that each source gets its :data:`SHARES` of the tiles whatever
        its number and size of images (sampling is proportional to weight times area)."""
        area = {}
        for src, lab in zip(self.sources, self.labels, strict=True):
            area[src] = area.get(src, 0) + lab.size
        return [SHARES[src] / area[src] for src in self.sources]

    def save(self, path: str | Path) -> None:
        """Write the real images (rounded to uint16) to one ``.npz``; the synthetic ones are
        redrawn from their seed by :meth:`load`, which is faster than reading them."""
        import json

        def as_uint16(image):
            return np.clip(np.round(image), 0, 65535).astype(np.uint16)

        real = [i for i, src in enumerate(self.sources) if src != "synthetic"]
        arrays = {}
        for k, i in enumerate(real):
            arrays[f"image_{k}"] = as_uint16(self.images[i])
            arrays[f"labels_{k}"] = self.labels[i]
            if self.regions[i] is not None:
                arrays[f"region_{k}"] = self.regions[i]
        n_val = self.meta["hela"]["n_val"]
        for k in range(n_val):
            arrays[f"val_image_{k}"] = as_uint16(self.val_images[k])
            arrays[f"val_labels_{k}"] = self.val_labels[k]
        sources = [self.sources[i] for i in real]
        meta = {**self.meta, "diameter": self.diameter, "sources": sources}
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        """Read a corpus written by :meth:`save` and redraw its synthetic images."""
        import json

        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            corpus = cls(diameter=float(meta.pop("diameter")))
            sources = meta.pop("sources")
            corpus.meta = meta
            for i, src in enumerate(sources):
                corpus.images.append(data[f"image_{i}"].astype(np.float32))
                corpus.labels.append(data[f"labels_{i}"])
                key = f"region_{i}"
                corpus.regions.append(data[key] if key in data else None)
                corpus.sources.append(src)
            i = 0
            while f"val_image_{i}" in data:
                corpus.val_images.append(data[f"val_image_{i}"].astype(np.float32))
                corpus.val_labels.append(data[f"val_labels_{i}"])
                i += 1
        synthetic = meta["synthetic"]
        add_synthetic(
            corpus, synthetic["train"], synthetic["val"], seed=synthetic["seed"],
            size_rule=meta.get("size_rule", "all"),  # files older than the option: v3's rule
        )
        return corpus


def trusted_region(image: np.ndarray, labels: np.ndarray, diameter: float) -> np.ndarray:
    """Where machine-made ``labels`` can be trusted: bool (rows, columns), False around bright
    blobs that no label covers and around labels that look like merged clusters.

    Parameters
    ----------
    image : (rows, columns) image, nuclei bright.
    labels : (rows, columns) int instance labels.
    diameter : median nucleus diameter in pixels (sets the blur and the margins).
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops

    smooth = ndi.gaussian_filter(image.astype(np.float32), max(diameter / 12, 0.7))
    bright = smooth > threshold_otsu(smooth)
    margin = max(2, int(round(diameter / 6)))
    covered = ndi.binary_dilation(labels > 0, iterations=margin)
    missed, n = ndi.label(bright & ~covered)
    untrusted = np.zeros(labels.shape, bool)
    if n:
        sizes = np.bincount(missed.ravel())
        big = sizes > 0.15 * np.pi * (diameter / 2) ** 2
        big[0] = False
        untrusted |= big[missed]
    areas = np.bincount(labels.ravel())[1:]
    median_area = np.median(areas[areas > 0]) if (areas > 0).any() else 0
    for region in regionprops(labels):
        if region.area > 1.8 * median_area and region.solidity < 0.9:
            r0, c0, r1, c1 = region.bbox
            untrusted[r0:r1, c0:c1] |= region.image
    untrusted = ndi.binary_dilation(untrusted, iterations=margin)
    return ~untrusted


def _edge_band(labels: np.ndarray, width: int) -> np.ndarray:
    """bool (rows, columns): pixels within ``width`` pixels of a label's edge."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(labels, mode="inner") | find_boundaries(labels, mode="outer")
    return ndi.binary_dilation(edges, iterations=max(int(width) - 1, 0)) if width > 1 else edges


def _rescale(image, labels, factor):
    from napari_unet.engine.api import rescale_training_data

    image, labels, _ = rescale_training_data(image, labels, None, factor)
    return image, labels


def build_corpus(
    *,
    cache=None,
    diameter: float = TRAIN_DIAMETER,
    n_synthetic: int = N_SYNTHETIC,
    seed: int = 0,
    edge_band: int = 0,
    size_rule: str = "all",
) -> Corpus:
    """Load, rescale and mask the training and validation images (see the module docstring).

    ``edge_band`` > 0 also gives weight 0 to the pixels within that many pixels of a label's
    edge in the cropped sets (:data:`CROPPED_SETS`), whose labels draw the nucleus edge by other
    conventions than the rest (an experiment; the bundled v3 was built with 0).

    ``size_rule`` says how a set's nucleus size is measured for its rescaling: ``"all"`` (the
    default, v3's corpus) counts every labelled object, those cut by an image or crop edge
    included (:func:`~benchmarks.datasets.median_diameter_all`); ``"whole"`` only the whole
    ones (:func:`~benchmarks.datasets.median_diameter`, the benchmarks' reference rule). The
    light-sheet training crop, whose nuclei are mostly cut, then reaches training at 24 px
    instead of 1.36x that. Two models trained on each (docs/model_card.md) scored a mean
    AP@0.5 of 0.782 and 0.784 with "all", 0.760 and 0.759 with "whole"."""
    from benchmarks.datasets import (
        load,
        load_bbbc007,
        load_hela,
        median_diameter,
        median_diameter_all,
    )

    if size_rule not in SIZE_RULES:
        raise ValueError(f"size_rule must be one of {SIZE_RULES}, not {size_rule!r}")
    measure = median_diameter_all if size_rule == "all" else median_diameter

    corpus = Corpus(diameter=float(diameter))
    hela = load_hela(cache=cache)
    hela_factor = diameter / measure([s.labels for s in hela.splits["train"]])
    for s in hela.splits["train"]:
        image, labels = _rescale(s.image, s.labels, hela_factor)
        corpus.images.append(image)
        corpus.labels.append(labels)
        corpus.regions.append(None)  # the CTC reference: reviewed, used as it is
        corpus.sources.append("hela")
    for s in hela.splits["val"]:
        image, labels = _rescale(s.image, s.labels, hela_factor)
        corpus.val_images.append(image)
        corpus.val_labels.append(labels)

    bbbc = load_bbbc007(cache=cache)
    n_trusted = []
    for s in bbbc.splits["train"]:
        image, labels = _rescale(s.image, s.labels, diameter / measure([s.labels]))
        region = trusted_region(image, labels, diameter)
        n_trusted.append(float(region.mean()))
        corpus.images.append(image)
        corpus.labels.append(labels)
        corpus.regions.append(region)
        corpus.sources.append("bbbc007")

    for name in CROPPED_SETS:
        ds = load(name, cache=cache)
        factor = diameter / measure([s.labels for s in ds.splits["train"]])
        trusted = []
        for s in ds.splits["train"]:
            image, labels = _rescale(s.image, s.labels, factor)
            region = trusted_region(image, labels, diameter)
            if edge_band > 0:
                region &= ~_edge_band(labels, edge_band)
            trusted.append(float(region.mean()))
            corpus.images.append(image)
            corpus.labels.append(labels)
            corpus.regions.append(region)
            corpus.sources.append(name)
        corpus.meta[name] = {
            "train": ds.title,
            "factor": round(factor, 4),
            "trusted_fraction": round(float(np.mean(trusted)), 3),
            "edge_band": int(edge_band),
        }

    corpus.meta |= {
        "hela": {
            "train": "frames 0-13",
            "val": "frames 14-16",
            "factor": round(hela_factor, 4),
            "n_val": len(hela.splits["val"]),
        },
        "bbbc007": {
            "train": "folders f96 (17), f9620",
            "trusted_fraction": round(float(np.mean(n_trusted)), 3),
        },
        "synthetic": {"train": n_synthetic, "val": N_SYNTHETIC_VAL, "seed": seed},
        "shares": SHARES,
        "size_rule": size_rule,
    }
    add_synthetic(corpus, n_synthetic, N_SYNTHETIC_VAL, seed=seed, size_rule=size_rule)
    return corpus


def add_synthetic(
    corpus: Corpus, n_train: int, n_val: int, *, seed: int, size_rule: str = "all"
) -> None:
    """Append ``n_train`` training and ``n_val`` validation images of the procedural generator
    (random styles from ``seed``), rescaled to the corpus' diameter (nucleus size measured by
    ``size_rule``, see :func:`build_corpus`)."""
    from benchmarks.datasets import median_diameter, median_diameter_all

    from napari_unet.engine.nucleus_generator import generate_nuclei, random_style

    diameter = corpus.diameter
    rng = np.random.default_rng(seed)
    for i in range(n_train + n_val):
        style = random_style(rng)
        side = int(np.clip(style.diameter * 12, 128, 900))
        image, labels = generate_nuclei((side, side), style, rng=rng)
        d = (median_diameter_all if size_rule == "all" else median_diameter)([labels])
        if not np.isfinite(d):
            continue
        image, labels = _rescale(image, labels, diameter / d)
        if i < n_train:
            corpus.images.append(image)
            corpus.labels.append(labels)
            corpus.regions.append(None)
            corpus.sources.append("synthetic")
        else:
            corpus.val_images.append(image)
            corpus.val_labels.append(labels)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="build the generalist training corpus")
    p.add_argument("-o", "--out", type=Path, required=True, help=".npz file to write")
    p.add_argument("--cache", default=None)
    p.add_argument("--synthetic", type=int, default=N_SYNTHETIC)
    p.add_argument(
        "--edge-band", type=int, default=0,
        help="weight 0 within N px of label edges in the cropped sets (an experiment)",
    )
    p.add_argument(
        "--size-rule", choices=SIZE_RULES, default="all",
        help="measure each set's nucleus size over all labelled objects (v3's corpus, the "
        "default) or over the whole ones only (an experiment)",
    )
    args = p.parse_args(argv)
    corpus = build_corpus(
        cache=args.cache, n_synthetic=args.synthetic, edge_band=args.edge_band,
        size_rule=args.size_rule,
    )
    corpus.save(args.out)
    counts = {src: corpus.sources.count(src) for src in SHARES}
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {counts}, "
          f"{len(corpus.val_images)} validation images; {corpus.meta}")


if __name__ == "__main__":
    main()
