"""Large images in and out: zarr and OME-Zarr stores, and TIFF files read lazily.

Reading: :func:`open_lazy` returns a dask array of a plain zarr array, of the full-resolution
level of an OME-Zarr image (``multiscales[0].datasets[0]``, NGFF 0.4 attributes or 0.5's
``ome`` key), or of a TIFF file (its first series through tifffile's zarr store), together with
the axis names when the file has them. Nothing is read until a region is asked for; the array
pickles (a worker re-opens the file), so it can be sent to dask workers that share the file
system.

Writing: :class:`LabelStore` writes labels to a new zarr store *beside* the target, named like
the engine's other temporary files (``.<name>.<pid>.<random>.tmp``), and moves it into place
only when the job finished (:meth:`LabelStore.commit`); on an error or an interrupt the
temporary store is removed, so a store at the target is always complete. The store is an
OME-Zarr image (NGFF 0.4, zarr format 2, which ome-zarr-py, napari-ome-zarr and Fiji read) with
one full-resolution level ``0`` holding uint32 labels, chunked like the blocks, whatever the
target's suffix (``.zarr`` or ``.ome.zarr``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LabelStore", "LazyTiff", "is_zarr_path", "open_lazy", "remove_stale_stores"]


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a ``.zarr`` suffix, or a folder holding zarr
    metadata)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


class LazyTiff:
    """The first series of a TIFF file as a sliceable array, opened on first use in each
    process (picklable: the open file is not sent)."""

    def __init__(self, path: str | os.PathLike):
        import tifffile

        self.path = str(path)
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.shape = tuple(series.shape)
            self.dtype = np.dtype(series.dtype)
            self.axes = str(series.axes)
            chunks = None
            with contextlib.suppress(Exception):
                page = series.keyframe
                if getattr(page, "is_tiled", False):
                    chunks = (1,) * (len(self.shape) - 2) + (page.tilelength, page.tilewidth)
            self.chunks = chunks
        self.ndim = len(self.shape)
        self._array = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_array"} | {"_array": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._array is None:
            import tifffile
            import zarr

            self._array = zarr.open(tifffile.imread(self.path, aszarr=True), mode="r")
        return np.asarray(self._array[key])


def open_lazy(path: str | os.PathLike) -> tuple[Any, str]:
    """A lazy dask array of the image at ``path`` and its axis names (``""`` when unknown).

    Raises
    ------
    FileNotFoundError
    ValueError
        A zarr group that is no OME-Zarr image, or a store that cannot be read.
    """
    import dask.array as da

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if not is_zarr_path(path):
        tiff = LazyTiff(path)
        chunks = tiff.chunks or (1,) * (tiff.ndim - 2) + (min(tiff.shape[-2], 4096), min(tiff.shape[-1], 4096))
        if len(chunks) != tiff.ndim:
            chunks = "auto"
        return da.from_array(tiff, chunks=chunks, meta=np.empty((0,) * tiff.ndim, tiff.dtype)), tiff.axes
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise ValueError(f"{path} is not a readable zarr store ({exc})") from None
    axes = ""
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if not multiscales:
            raise ValueError(
                f"{path} is a zarr group without OME-Zarr multiscales metadata; name the array "
                f"inside it (e.g. {path / '0'})"
            )
        first = multiscales[0]
        names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in first.get("axes", [])]
        axes = "".join(n[:1].upper() for n in names)
        node = node[first["datasets"][0]["path"]]
    return da.from_zarr(node), axes


def squeeze_axes(array: Any, axes: str) -> tuple[Any, str]:
    """Drop the size-1 axes of ``array`` other than the last two (OME-Zarr's ``t``, ``c``,
    ``z`` of one element), with their names."""
    keep = [i for i in range(array.ndim) if array.shape[i] != 1 or i >= array.ndim - 2]
    squeezed = array[tuple(slice(None) if i in keep else 0 for i in range(array.ndim))]
    names = "".join(axes[i] for i in keep) if len(axes) == array.ndim else ""
    return squeezed, names


#: NGFF's axis type of each of our axis letters (P, planes of no kind, gets none: a custom axis)
_NGFF_TYPES = {"T": "time", "Z": "space", "Y": "space", "X": "space", "P": None}


def ngff_axes(axes: str) -> list[dict]:
    """The OME-Zarr (NGFF 0.4) ``axes`` of labels of our axes (``YX``, ``ZYX``, ``TZYX``, ...).

    Raises ``ValueError`` for an order NGFF does not allow (time first, then a custom axis
    such as P, then space: ``ZTYX`` and ``ZPYX`` cannot be written).
    """
    rank = {"time": 0, None: 1, "space": 2}
    kinds = [_NGFF_TYPES[c] for c in axes]
    if any(rank[a] > rank[b] for a, b in itertools.pairwise(kinds)):
        raise ValueError(
            f"an OME-Zarr store cannot hold labels of axes {axes}: NGFF orders time (T) first, "
            "then other planes (P), then Z, Y, X"
        )
    return [{"name": c.lower(), **({"type": kinds[i]} if kinds[i] else {})} for i, c in enumerate(axes)]


def _ngff_attrs(ndim: int, name: str, axes: str | None = None) -> dict:
    axes = ngff_axes(axes or "ZYX"[3 - ndim :])
    return {
        "multiscales": [{
            "version": "0.4",
            "name": name,
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * ndim}]}],
        }],
        "image-label": {"version": "0.4", "source": {"image": ""}},
    }


def remove_stale_stores(target: Path) -> None:
    """Remove temporary stores left for ``target`` by processes that no longer run."""
    from napari_unet.engine.atomic import _MIDDLE, _running

    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp") and entry.is_dir()):
                continue
            found = _MIDDLE.match(entry.name[len(prefix) : -len(".tmp")])
            if found is not None and found["pid"] is not None and not _running(int(found["pid"])):
                shutil.rmtree(entry, ignore_errors=True)


class LabelStore:
    """A new OME-Zarr labels store, written beside ``target`` and moved into place whole.

    Use as a context manager: ``with LabelStore(target, shape, chunks=...) as store:`` fill
    ``store.array``, then call ``store.commit()``; leaving the block without a commit (an
    error, Ctrl-C) removes the temporary store.

    Parameters
    ----------
    target : path of the store to create (``.zarr`` / ``.ome.zarr``).
    shape : (Y, X), (P, Y, X) or more plane axes (T, Z, Y, X)
    chunks : chunk shape (same length as ``shape``)
    overwrite : replace an existing store at ``target`` (only at the commit).
    axes : the labels' axes (``TZYX``), named in the OME-Zarr metadata (:func:`ngff_axes`);
        ``None``: ``YX`` or ``ZYX``.
    """

    def __init__(self, target: str | os.PathLike, shape: tuple[int, ...], *, chunks: tuple[int, ...],
                 overwrite: bool = False, axes: str | None = None):
        self.target = Path(target).expanduser()
        self.shape, self.chunks, self.overwrite = tuple(shape), tuple(chunks), overwrite
        if axes is not None and len(axes) != len(self.shape):
            raise ValueError(f"axes {axes!r} do not name the {len(self.shape)} axes of the labels")
        if axes is None and len(self.shape) > 3:
            raise ValueError(f"labels of {len(self.shape)} axes need their axes named")
        self.axes = axes
        check_store_target(self.target, overwrite=overwrite)
        self.temp: Path | None = None
        self.array: Any = None

    def __enter__(self) -> LabelStore:
        import zarr

        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stores(self.target)
        self.temp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.{os.getpid()}.", suffix=".tmp",
                                          dir=self.target.parent))
        try:
            group = zarr.open_group(str(self.temp), mode="w", zarr_format=2)
            group.attrs.update(_ngff_attrs(len(self.shape), self.target.name, self.axes))
            self.array = group.create_array(
                "0", shape=self.shape, chunks=self.chunks, dtype="uint32", fill_value=0,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def commit(self) -> Path:
        """Move the finished store into place (replacing an old one only with ``overwrite``)."""
        assert self.temp is not None
        old = None
        if self.target.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.target} already exists; pass --overwrite to replace it")
            old = self.target.with_name(f".{self.target.name}.{os.getpid()}.old.tmp")
            os.replace(self.target, old)
        os.replace(self.temp, self.target)
        self.temp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        return self.target

    def __exit__(self, *exc: Any) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None


def check_store_target(target: Path, *, overwrite: bool) -> None:
    """Refuse an existing ``target`` without ``overwrite``, and a folder where nothing can be
    created."""
    from napari_unet.engine.atomic import check_writable

    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    if target.exists() and not is_zarr_path(target):
        raise FileExistsError(f"{target} exists and is not a zarr store; refusing to replace it")
    check_writable(target)


def write_tiff_from_array(
    path: str | os.PathLike, array: Any, *, dtype: Any, overwrite: bool = False, tile: int = 256
) -> Path:
    """Write a (Y, X), (P, Y, X) or (T, Z, Y, X) array-like (e.g. a zarr array) to a tiled, zlib-compressed
    TIFF of ``dtype``, reading ``tile`` rows at a time, atomically (temporary file, then
    ``os.replace``; nothing is left on an error or interrupt)."""
    import tifffile

    from napari_unet.engine.atomic import commit, discard, new_temp, remove_stale_temps, write_error
    from napari_unet.engine.io import check_output

    path = check_output(path, overwrite=overwrite)
    dtype = np.dtype(dtype)
    shape = tuple(array.shape)
    rows, cols = shape[-2:]

    def tiles() -> Any:
        for p in np.ndindex(*shape[:-2]):
            for r in range(0, rows, tile):
                strip = np.asarray(array[(*p, slice(r, r + tile), slice(None))]).astype(dtype)
                for c in range(0, cols, tile):
                    part = strip[:, c : c + tile]
                    if part.shape != (tile, tile):
                        part = np.pad(part, ((0, tile - part.shape[0]), (0, tile - part.shape[1])))
                    yield part

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = new_temp(path)
    try:
        try:
            tifffile.imwrite(
                tmp, tiles(), shape=shape, dtype=dtype, tile=(tile, tile), compression="zlib",
                photometric="minisblack",  # 3 or 4 planes of labels are not RGB(A)
            )
        except OSError as err:
            raise write_error(path, err) from None
    except BaseException:
        discard([tmp])
        raise
    commit([(tmp, path)])
    return path
