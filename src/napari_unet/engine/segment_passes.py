"""The prediction passes of a segmentation: rescale the planes to the model's scale, predict
them with the overlap-tile strategy (or a foreign BioImage.IO package's own pipeline), and
resize the class probabilities back to the input's shape. Used by
:func:`~napari_unet.engine.segment.iter_segment`, once per pass (an automatic diameter takes
up to three)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.engine.diameter import scaled_shape
from napari_unet.engine.events import PlaneDone, TileDone, TileSizeReduced, relay
from napari_unet.engine.resample import (
    PlaneWindow,
    resize_from_plane_grid,
    resize_stack,
    resize_to_plane_grid,
)

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNet

__all__ = ["Passes"]


def _resize_planes(planes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (P, C, Y, X) image planes to (P, C, *shape), mirrored at the edges."""
    return resize_stack(planes, shape, mode="reflect")


def _resize_probabilities(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (P, K, y, x) probabilities to (P, K, *shape), keeping them in [0, 1]."""
    if prob.shape[2:] == tuple(shape):
        return prob.astype(np.float32, copy=False)
    out = resize_stack(prob, shape, mode="edge")
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _normalized_planes(planes: np.ndarray, normalization: dict | None) -> np.ndarray:
    """(P, C, Y, X) ``planes`` normalised plane by plane, per channel, by the percentiles of
    ``normalization`` (``None``: the engine's default), as the tiling would; float32 copy."""
    from napari_unet.engine.limits import normalization_percentiles
    from napari_unet.engine.normalization import DEFAULT_HIGH, DEFAULT_LOW, normalize

    low, high = (
        (DEFAULT_LOW, DEFAULT_HIGH)
        if normalization is None
        else normalization_percentiles(normalization)
    )
    return np.stack([normalize(plane, low=low, high=high, channel_axis=0) for plane in planes])


@dataclass(eq=False)
class Passes:
    """The prediction passes of one segmentation: the network, its settings, and what a pass
    teaches the next (a tile size reduced after running out of memory is kept)."""

    net: UNet
    normalization: dict | bool | None
    device: Any
    amp: bool
    tile_size: int | None
    tta: bool = False

    def run(
        self,
        planes: np.ndarray,
        *,
        factor: float,
        offset: int = 0,
        extra_total: float = 0.0,
        plane_events: bool = True,
        plane_of: tuple[int, int] | None = None,
        region: tuple[tuple[int, int], tuple[int, int]] | None = None,
    ) -> Generator[Any, None, tuple[np.ndarray, int]]:
        """Predict (P, C, Y, X) ``planes`` rescaled by ``factor``.

        ``TileDone`` events are counted for the whole job: ``offset`` tiles are done before
        this pass, and ``extra_total`` times this pass's tiles are still to come after it.
        ``plane_of=(p, n)``: the one plane given is plane ``p`` of ``n`` of the job (events say
        so).
        ``region=(plane_shape, (row, column))``: the planes are a region of a larger plane,
        at that origin; they are rescaled on the larger plane's pixel grid
        (:mod:`~napari_unet.engine.resample`), so that a block gives what the whole plane gives.
        Returns the (P, K, Y, X) float32 probabilities at the input's scale and the number of
        tiles this pass took.
        """
        from napari_unet.engine.foreign import ForeignModel
        from napari_unet.engine.tiling import iter_predict

        foreign = isinstance(self.net, ForeignModel)
        spatial = planes.shape[2:]
        normalization = self.normalization
        if factor != 1.0 and normalization is not False and not foreign:
            # the percentiles of the image as given, not of its resized copy: a block of a
            # larger image, normalised by the whole image's percentiles, then gets the whole
            # image's values (blockwise.py)
            planes = _normalized_planes(planes, normalization)
            normalization = False
        window = None
        if factor == 1.0:
            work = planes
        elif region is None:
            work = _resize_planes(planes, scaled_shape(spatial, factor))
        else:
            (rows, cols), (r0, c0) = region
            window = PlaneWindow(
                (rows, cols),
                scaled_shape((rows, cols), factor),
                (r0, r0 + spatial[0], c0, c0 + spatial[1]),
                align=2 ** int(getattr(getattr(self.net, "config", None), "depth", 0)),
            )
            work = resize_to_plane_grid(planes, window, mode="reflect")

        def back(prob: np.ndarray) -> np.ndarray:
            if window is None:
                return _resize_probabilities(prob, spatial)
            out = resize_from_plane_grid(prob, window, mode="edge")
            return np.clip(out, 0.0, 1.0, out=out)
        tiles = 0
        if foreign:  # a zoo package: bioimageio.core tiles it
            from napari_unet.engine.device import resolve_device
            from napari_unet.engine.foreign import iter_predict_foreign

            device = resolve_device(self.device).type
            prob = yield from iter_predict_foreign(self.net, work, device=device)
            return back(prob), 0

        def recount(event: Any) -> Any:
            nonlocal tiles
            match event:
                case TileDone():
                    tiles = event.total
                    more = max(1, round(event.total * extra_total)) if extra_total else 0
                    plane, n_planes = plane_of or (event.plane, event.n_planes)
                    return TileDone(
                        done=offset + event.done,
                        total=offset + event.total + more,
                        plane=plane,
                        n_planes=n_planes,
                    )
                case PlaneDone():
                    if not plane_events:
                        return None
                    return PlaneDone(*plane_of) if plane_of else event
                case TileSizeReduced():
                    self.tile_size = event.new
            return event

        gen = iter_predict(
            self.net,
            work,
            channel_axis=1,
            stack=True,
            tile_size=self.tile_size,
            device=self.device,
            amp=self.amp,
            out_dtype=np.float32,
            normalization=normalization,
            tta=self.tta,
        )
        prob = yield from relay(gen, recount)
        return back(np.asarray(prob)), tiles
