"""Files named on the command line: folders expanded, images paired with their labels by name,
outputs checked before anything is written, label images checked."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_unet.cli.output import UsageError

#: Suffixes that mark a label image's file name; stripped when pairing files by name.
LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_ground_truth", "_gt", "_seg")


def non_empty(expected: str, hint: str = "") -> Callable[[str], str]:
    """An argparse ``type`` that refuses an empty or blank string (an unset shell variable),
    which would otherwise stand for the option's default, or for ``Path``'s current folder,
    without a word: "expected ``expected``, got an empty string``hint``"."""

    def given(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {expected}, got an empty string{hint}")
        return text

    return given


#: a path option's ``type``
path_text = non_empty("a path")


def is_tiff_name(path: Path) -> bool:
    """Whether ``path`` has a TIFF suffix."""
    from napari_unet.engine.io import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(items: Sequence[str], what: str) -> list[Path]:
    """Files named on the command line, with every folder replaced by its TIFF files."""
    from napari_unet.engine.io import list_images

    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UsageError(f"the {what} folder {path} holds no .tif/.tiff files")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return paths


def output_stem(source: Path) -> str:
    """The name ``predict``'s outputs of ``source`` are named after (``<stem>_labels.tif``,
    ``<stem>_probabilities.tif``, ``<stem>_labels.zarr``), in memory and block by block alike:
    the name without its suffix and an ``.ome`` before it (``a.tif``, ``a.ome.tif`` and
    ``a.ome.zarr`` give ``a``; ``day.1.tif`` gives ``day.1``)."""
    stem = Path(source.name).stem
    return stem[:-4] if stem.lower().endswith(".ome") and len(stem) > 4 else stem


def base_stem(path: Path) -> str:
    """The file name without suffix, ``.ome`` and label suffixes such as ``_labels``."""
    stem = path.stem
    if stem.lower().endswith(".ome"):
        stem = stem[:-4]
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def pair_files(
    first: list[Path], second: list[Path], names: tuple[str, str]
) -> list[tuple[Path, Path]]:
    """Pair two file lists by name (suffixes like ``_labels`` ignored), else, when no two names
    match, by sorted order; ``names`` says what each list holds, in the singular (``("image",
    "label image")``).

    Lists whose names match only in part are refused, naming the files without a partner:
    sorted order would pair those files with each other's data.
    """
    from napari_unet.engine.wording import count

    if len(first) != len(second):
        raise UsageError(
            f"{count(len(first), names[0])} but {count(len(second), names[1])}; give one "
            f"{names[1]} per {names[0]}"
        )
    for key in (lambda p: p.stem, base_stem):
        a = {key(p): p for p in first}
        b = {key(p): p for p in second}
        if len(a) == len(first) and len(b) == len(second) and a.keys() == b.keys():
            return [(a[k], b[k]) for k in sorted(a)]
    a = {base_stem(p) for p in first}
    b = {base_stem(p) for p in second}
    if a & b:
        lonely = [p for p in sorted(first) if base_stem(p) not in b]
        strays = [p for p in sorted(second) if base_stem(p) not in a]
        if not (lonely and strays):  # names repeat (a.tif and a.ome.tif)
            raise UsageError(
                f"the {names[0]}s and {names[1]}s cannot be paired by name; give one {names[1]} "
                f"named after each {names[0]}"
            )
        example = lonely[0].stem + ("_labels" if "label" in names[1] else "_mask")
        raise UsageError(
            f"{_some_names(lonely)} {'has' if len(lonely) == 1 else 'have'} no {names[1]} named "
            f"like {'it' if len(lonely) == 1 else 'them'} and {_some_names(strays)} no "
            f"{names[0]}; name each {names[1]} after its {names[0]} ({example}"
            f"{lonely[0].suffix})"
        )
    return list(zip(sorted(first), sorted(second), strict=True))


def _some_names(paths: list[Path], most: int = 3) -> str:
    """``"a.tif, b.tif and 2 more"``: the first ``most`` file names of ``paths``."""
    shown = ", ".join(p.name for p in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def check_new_outputs(
    paths: Sequence[Path], *, overwrite: bool, inputs: Sequence[Path] = ()
) -> None:
    """Refuse outputs that exist (unless ``overwrite``), repeat, are folders or are inputs."""
    from napari_unet.engine.io import check_output

    seen: set[Path] = set()
    resolved_inputs = {p.resolve() for p in inputs}
    for path in paths:
        resolved = path.resolve()
        if resolved in resolved_inputs:
            raise UsageError(f"the output {path} would replace an input file; choose another name")
        if resolved in seen:
            raise UsageError(f"two results would be written to the same file {path}")
        seen.add(resolved)
        try:
            check_output(path, overwrite=overwrite)
        except FileExistsError:
            raise UsageError(f"{path} already exists; pass --overwrite to replace it") from None
        except IsADirectoryError:
            raise UsageError(f"the output {path} is a folder, not a file name") from None


def as_label_array(data: np.ndarray, path: Path) -> np.ndarray:
    """``data`` read from ``path`` (2 to 4 axes) as int32 labels, or a UsageError.

    Ids too large for int32 are renumbered (:func:`~napari_unet.engine.layout.instance_ids`).
    A bool mask is returned as it is: its cells are its connected regions in each (Y, X) plane
    (:func:`~napari_unet.engine.layout.mask_cells`), which only the axes, read afterwards, say
    (a ``YXZ`` file's planes are its last axis, not its last two): give it to
    :func:`instance_ids` once it is in the engine's order, as the engine's functions do.
    """
    from napari_unet.engine.layout import instance_ids

    if data.ndim not in (2, 3, 4):  # 4: two plane axes (TZYX), as predict writes them
        raise UsageError(
            f"{path} is not a label image of shape (Y, X), (P, Y, X) or (T, Z, Y, X): {data.shape}"
        )
    if data.dtype.kind == "b":
        return data  # its connected regions are taken in the engine's order, planes first
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise UsageError(f"{path} is not a label image: it holds NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            raise UsageError(f"{path} is not a label image: it holds fractional values")
    elif data.dtype.kind not in "iu":
        raise UsageError(f"{path} is not a label image (dtype {data.dtype})")
    if data.size and data.min() < 0:
        raise UsageError(f"{path} is not a label image: it holds negative values")
    return instance_ids(data)


def pair_by_name(pred: list[Path], gt: list[Path]) -> list[tuple[Path, Path]]:
    """Pair predictions with ground truth by name; every prediction needs one."""
    if not pred:
        raise UsageError("the prediction folder holds no .tif/.tiff files")
    if not gt:
        raise UsageError("the ground-truth folder holds no .tif/.tiff files")
    by_stem = {p.stem: p for p in gt}
    by_base = {base_stem(p): p for p in gt}
    pairs, missing = [], []
    for p in pred:
        match = by_stem.get(p.stem) or by_stem.get(base_stem(p)) or by_base.get(base_stem(p))
        if match is None:
            missing.append(p.name)
        else:
            pairs.append((p, match))
    if missing:
        raise UsageError(
            f"no ground truth for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
            "(files are paired by name; suffixes like _labels are ignored)"
        )
    return pairs
