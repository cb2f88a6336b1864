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

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNet

__all__ = ["Passes"]


def _resize_stack(array: np.ndarray, shape: tuple[int, int], *, mode: str) -> np.ndarray:
    """Resize the last two axes of a 4-D array to ``shape``: bilinear, anti-aliased when
    shrinking; float32."""
    from skimage.transform import resize

    out = np.empty((*array.shape[:2], *shape), np.float32)
    shrink = shape[0] < array.shape[2] or shape[1] < array.shape[3]
    for p in range(array.shape[0]):
        for c in range(array.shape[1]):
            out[p, c] = resize(
                array[p, c].astype(np.float32, copy=False),
                shape,
                order=1,
                mode=mode,
                anti_aliasing=shrink,
                preserve_range=True,
            )
    return out


def _resize_planes(planes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (P, C, Y, X) image planes to (P, C, *shape), mirrored at the edges."""
    return _resize_stack(planes, shape, mode="reflect")


def _resize_probabilities(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (P, K, y, x) probabilities to (P, K, *shape), keeping them in [0, 1]."""
    if prob.shape[2:] == tuple(shape):
        return prob.astype(np.float32, copy=False)
    out = _resize_stack(prob, shape, mode="edge")
    np.clip(out, 0.0, 1.0, out=out)
    return out



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
    ) -> Generator[Any, None, tuple[np.ndarray, int]]:
        """Predict (P, C, Y, X) ``planes`` rescaled by ``factor``.

        ``TileDone`` events are counted for the whole job: ``offset`` tiles are done before
        this pass, and ``extra_total`` times this pass's tiles are still to come after it.
        ``plane_of=(p, n)``: the one plane given is plane ``p`` of ``n`` of the job (events say
        so).
        Returns the (P, K, Y, X) float32 probabilities at the input's scale and the number of
        tiles this pass took.
        """
        from napari_unet.engine.tiling import iter_predict

        spatial = planes.shape[2:]
        work = planes if factor == 1.0 else _resize_planes(planes, scaled_shape(spatial, factor))
        tiles = 0
        from napari_unet.engine.foreign import ForeignModel

        if isinstance(self.net, ForeignModel):  # a zoo package: bioimageio.core tiles it
            from napari_unet.engine.device import resolve_device
            from napari_unet.engine.foreign import iter_predict_foreign

            device = resolve_device(self.device).type
            prob = yield from iter_predict_foreign(self.net, work, device=device)
            return _resize_probabilities(prob, spatial), 0

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
            normalization=self.normalization,
            tta=self.tta,
        )
        prob = yield from relay(gen, recount)
        return _resize_probabilities(np.asarray(prob), spatial), tiles
