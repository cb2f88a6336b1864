"""napari-unet: the U-Net of Ronneberger, Fischer and Brox (2015) for cell segmentation in napari.

Importing this package is cheap: it imports neither torch nor Qt. It shortens how long torch's
OpenMP threads spin while they wait (:mod:`napari_unet.engine.openmp_wait`), unless the user
set that. The numerical engine lives in
:mod:`napari_unet.engine` (no Qt), the widgets in :mod:`napari_unet._qt`, the command line in
:mod:`napari_unet.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_unet.engine._version import __version__
from napari_unet.engine.openmp_wait import shorten_spin

shorten_spin()  # before anything imports torch (see napari_unet.engine.openmp_wait)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["__version__", "segment"]


def segment(image: np.ndarray, model: Any = None, **kwargs: Any) -> np.ndarray:
    """Segment cells in ``image`` and return an instance label image.

    A thin lazy wrapper of :func:`napari_unet.engine.segment.segment` (see there for every option), so
    that ``import napari_unet`` stays free of torch. A dask array is segmented block by block
    and lazily: the result is a uint32 dask array
    (:func:`napari_unet.engine.blockwise.segment_dask`; ``block_size=`` is one more option),
    computed on the current dask scheduler, a ``distributed.Client``'s cluster included.

    Examples
    --------
    >>> import napari_unet
    >>> labels = napari_unet.segment(image)  # doctest: +SKIP
    >>> lazy = napari_unet.segment(dask.array.from_zarr("plate.zarr"), diameter=20)  # doctest: +SKIP
    """
    if type(image).__module__.startswith("dask."):
        from napari_unet.engine.blockwise import segment_dask

        return segment_dask(image, model, **kwargs)
    from napari_unet.engine.segment import segment as _segment

    return _segment(image, model=model, **kwargs)
