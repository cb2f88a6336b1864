"""Resizing planes and probabilities to and from the model's scale, for a whole plane or for a
window of it on the whole plane's pixel grid.

A whole plane of ``N`` pixels (per axis) rescaled by a factor goes to ``S`` pixels
(:func:`~napari_unet.engine.diameter.scaled_shape`); scaled pixel ``j`` sits at input
coordinate ``(j + 0.5) * N / S - 0.5`` (pixel centres, as :func:`skimage.transform.resize`
places them), with bilinear interpolation and, when shrinking, a Gaussian of standard
deviation ``(N / S - 1) / 2`` first. :func:`resize_stack` does that for whole planes.

Block-wise segmentation cuts a plane into regions. Resizing each region on its own would put
its scaled pixels on a grid of its own (``round(n * factor)`` pixels for ``n``), shifted by up
to half a pixel from the whole plane's, so that the network saw slightly different images in
a block and in the whole plane. :func:`resize_to_plane_grid` and :func:`resize_from_plane_grid`
resize a region onto the scaled pixels of the *whole plane* that lie inside it, and back: away
from the region's cut edges (a few pixels; the blocks' halo covers them) they give what
resizing the whole plane gives, to float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PlaneWindow", "resize_from_plane_grid", "resize_stack", "resize_to_plane_grid"]

#: numpy.pad modes of the resizing -> scipy.ndimage modes (as skimage translates them)
_NDI_MODES = {"reflect": "mirror", "edge": "nearest", "symmetric": "reflect"}


def resize_stack(array: np.ndarray, shape: tuple[int, int], *, mode: str) -> np.ndarray:
    """Resize the last two axes of a (P, C, Y, X) array to ``shape``: bilinear, anti-aliased
    when shrinking along either axis; float32. ``mode``: how the edges are extended
    (``"reflect"`` for images, ``"edge"`` for probabilities)."""
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


class PlaneWindow:
    """A region ``[r0, r1) x [c0, c1)`` of a plane of ``plane_shape`` pixels, and the window
    ``[j0, j1) x [k0, k1)`` of the plane's scaled grid (``scaled_shape`` pixels) that lies
    inside it: the scaled pixels whose input coordinate falls in the region (all of them up
    to the plane's edge where the region reaches it).

    ``align``: the window starts at a multiple of it (where it does not start at the plane's
    edge), so that overlap tiles laid from the window's first pixel meet the network's pooling
    grid as the whole plane's tiles do (``2 ** depth`` for a U-Net)."""

    def __init__(
        self,
        plane_shape: tuple[int, int],
        scaled_shape: tuple[int, int],
        region: tuple[int, int, int, int],
        *,
        align: int = 1,
    ) -> None:
        self.plane_shape = tuple(int(n) for n in plane_shape)
        self.scaled_shape = tuple(int(s) for s in scaled_shape)
        self.region = tuple(int(v) for v in region)
        r0, r1, c0, c1 = self.region
        self.window = (
            *self._inside(r0, r1, self.plane_shape[0], self.scaled_shape[0], align),
            *self._inside(c0, c1, self.plane_shape[1], self.scaled_shape[1], align),
        )

    @staticmethod
    def _inside(a: int, b: int, n: int, s: int, align: int) -> tuple[int, int]:
        """The scaled pixels ``[j0, j1)`` whose input coordinates lie in ``[a, b - 1]``, ``j0``
        rounded up to a multiple of ``align``."""
        step = n / s
        j0 = 0 if a == 0 else math.ceil((a + 0.5) / step - 0.5)
        j0 = -(-j0 // align) * align
        j1 = s if b == n else math.floor((b - 0.5) / step - 0.5) + 1
        return j0, max(j1, j0 + 1)

    @property
    def region_shape(self) -> tuple[int, int]:
        r0, r1, c0, c1 = self.region
        return (r1 - r0, c1 - c0)

    @property
    def window_shape(self) -> tuple[int, int]:
        j0, j1, k0, k1 = self.window
        return (j1 - j0, k1 - k0)


def _axis_weights(
    targets: np.ndarray, step: float, first_source: int, n_source: int, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis: for target pixels ``targets`` (global indices) of a grid
    whose pixel ``t`` sits at source coordinate ``(t + 0.5) * step - 0.5``, the two local source
    indices (in an array that starts at global ``first_source`` and holds ``n_source``) and
    the weight of the second. Out-of-array taps are mirrored (``"mirror"``) or clamped."""
    x = (targets + 0.5) * step - 0.5 - first_source
    i0 = np.floor(x).astype(np.int64)
    w = (x - i0).astype(np.float64)
    i1 = i0 + 1

    def fold(i):
        if mode == "mirror" and n_source > 1:
            period = 2 * (n_source - 1)
            i = np.abs(i) % period
            return np.where(i >= n_source, period - i, i)
        return np.clip(i, 0, n_source - 1)

    return fold(i0), fold(i1), w


def _resample(
    array: np.ndarray,
    targets: tuple[np.ndarray, np.ndarray],
    steps: tuple[float, float],
    first: tuple[int, int],
    mode: str,
) -> np.ndarray:
    """Bilinear resampling of the last two axes of ``array`` at ``targets`` (see
    :func:`_axis_weights`), anti-aliased along the axes where ``step > 1``; float32."""
    from scipy import ndimage as ndi

    ndi_mode = _NDI_MODES[mode]
    sigma = [0.0] * (array.ndim - 2) + [max(0.0, (s - 1) / 2) for s in steps]
    data = array.astype(np.float32, copy=False)
    if any(s > 0 for s in sigma) and any(s > 1 for s in steps):
        data = ndi.gaussian_filter(data, sigma, mode=ndi_mode)
    out = data.astype(np.float64)
    for axis, (t, step, f) in enumerate(zip(targets, steps, first, strict=True), start=array.ndim - 2):
        i0, i1, w = _axis_weights(t, step, f, out.shape[axis], ndi_mode)
        shape = [1] * out.ndim
        shape[axis] = -1
        w = w.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
    return out.astype(np.float32)


def resize_to_plane_grid(region: np.ndarray, window: PlaneWindow, *, mode: str) -> np.ndarray:
    """The (..., y, x) ``region`` (``window.region`` of the plane) resized onto the plane's
    scaled grid: (..., *window.window_shape) float32, the scaled pixels ``window.window``."""
    (n_r, n_c), (s_r, s_c) = window.plane_shape, window.scaled_shape
    j0, j1, k0, k1 = window.window
    r0, _, c0, _ = window.region
    if region.shape[-2:] != window.region_shape:
        raise ValueError(f"region of shape {region.shape[-2:]} for a window {window.region}")
    return _resample(
        region, (np.arange(j0, j1), np.arange(k0, k1)), (n_r / s_r, n_c / s_c), (r0, c0), mode
    )


def resize_from_plane_grid(scaled: np.ndarray, window: PlaneWindow, *, mode: str) -> np.ndarray:
    """The inverse of :func:`resize_to_plane_grid`: (..., *window.window_shape) values on the
    plane's scaled grid back onto the region's input pixels, (..., *window.region_shape)."""
    (n_r, n_c), (s_r, s_c) = window.plane_shape, window.scaled_shape
    j0, _, k0, _ = window.window
    r0, r1, c0, c1 = window.region
    if scaled.shape[-2:] != window.window_shape:
        raise ValueError(f"values of shape {scaled.shape[-2:]} for a window {window.window}")
    return _resample(
        scaled, (np.arange(r0, r1), np.arange(c0, c1)), (s_r / n_r, s_c / n_c), (j0, k0), mode
    )
