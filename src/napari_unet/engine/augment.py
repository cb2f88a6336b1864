"""Data augmentation for training: elastic deformation, flips, rotations, scaling, gray values.

Every geometric change of one sample (flips, 90-degree rotations, a small rotation, a scale change
and the paper's elastic deformation) is composed into **one** map from output to input coordinates,
and each array is resampled once with :func:`scipy.ndimage.map_coordinates`: bicubic (order 3) for
images, nearest (order 0) for labels, weights and masks. Nearest interpolation only copies values
that exist in the input, so labels stay integer with their instance ids, and all arrays stay
aligned with the image. Points that fall outside the input are mirrored (``mode="mirror"``) for
every array alike.

The elastic deformation follows Ronneberger et al. (2015): random displacement vectors on a coarse
3 x 3 grid, drawn from a Gaussian with 10 px standard deviation, interpolated with a cubic spline
to a smooth per-pixel displacement field.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Augmenter", "displacement_field", "elastic_deform"]


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@functools.lru_cache(maxsize=32)
def _spline_matrix(n: int, grid: int) -> np.ndarray:
    """(n, grid) weights that interpolate ``grid`` evenly spaced knots to ``n`` pixels with a
    natural cubic spline (the knots sit on the first pixel, the last pixel and evenly between).

    Row ``r`` holds the values at pixel ``r`` of the splines through the unit vectors, so
    ``matrix @ values`` interpolates knot ``values``. Written out (unit knot spacing, second
    derivatives ``m`` from the tridiagonal system ``m[i-1] + 4 m[i] + m[i+1] = 6 (y[i+1] - 2 y[i] +
    y[i-1])``, ``m = 0`` at both ends) rather than imported from scipy.interpolate, which is slow
    to import.
    """
    if grid == 1:
        return np.ones((n, 1))
    knots = np.eye(grid)
    second = np.zeros((grid, grid))
    if grid > 2:
        inner = 4.0 * np.eye(grid - 2) + np.eye(grid - 2, k=1) + np.eye(grid - 2, k=-1)
        second[1:-1] = np.linalg.solve(inner, 6.0 * (knots[2:] - 2.0 * knots[1:-1] + knots[:-2]))
    where = np.linspace(0.0, grid - 1.0, n)
    left = np.minimum(where.astype(np.intp), grid - 2)
    u = (where - left)[:, None]
    v = 1.0 - u
    matrix = (
        v * knots[left]
        + u * knots[left + 1]
        + (v**3 - v) * second[left] / 6.0
        + (u**3 - u) * second[left + 1] / 6.0
    )
    matrix.flags.writeable = False  # cached and shared
    return matrix


def displacement_field(
    shape: tuple[int, int],
    *,
    sigma: float = 10.0,
    grid: int = 3,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """A smooth random displacement field, as in the paper.

    Parameters
    ----------
    shape : (rows, columns) of the field.
    sigma : standard deviation in pixels of the displacement vectors on the coarse grid.
    grid : knots per axis of the coarse grid (the paper: 3).
    rng : seed or generator.

    Returns
    -------
    (2, rows, columns) float64 displacements in pixels (row, column component).
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    rng = _generator(rng)
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    along_rows = _spline_matrix(shape[0], grid)
    along_cols = _spline_matrix(shape[1], grid)
    # einsum, not "@": BLAS threads cost far more than this (rows x 3 x columns) product
    half = np.einsum("dij,cj->dic", coarse, along_cols)
    return np.einsum("ri,dic->drc", along_rows, half)


def _default_order(array: np.ndarray) -> int:
    return 3 if np.issubdtype(array.dtype, np.floating) else 0


def _nearest_index(coords: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, column) indices of the nearest input pixel, mirrored into the image like
    ``map_coordinates(mode="mirror")`` (reflection about the edge pixels' centres)."""
    index = []
    for axis, n in enumerate(shape):
        i = np.rint(coords[axis]).astype(np.intp)
        if n == 1:
            i[:] = 0
        else:
            period = 2 * (n - 1)
            i %= period
            np.subtract(period, i, out=i, where=i > n - 1)
        index.append(i)
    return index[0], index[1]


def _warp(
    array: np.ndarray,
    coords: np.ndarray,
    order: int,
    mode: str,
    nearest: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Resample (rows, columns) or (channels, rows, columns) ``array`` at ``coords`` (2, h, w).

    Order 0 with ``mode="mirror"`` gathers at precomputed ``nearest`` indices (the same result as
    :func:`scipy.ndimage.map_coordinates`, several times faster, and shared by all arrays).
    """
    if order == 0 and mode == "mirror":
        if nearest is None:
            nearest = _nearest_index(coords, array.shape[-2:])
        return array[..., nearest[0], nearest[1]]
    if array.ndim == 3:
        return np.stack([_warp(channel, coords, order, mode) for channel in array])
    if array.dtype == bool:
        return _warp(array.view(np.uint8), coords, 0, mode).astype(bool)
    out_dtype = array.dtype
    if np.issubdtype(out_dtype, np.floating) and out_dtype != np.float64:
        out_dtype = np.float32
    return ndi.map_coordinates(array, coords, order=order, mode=mode, output=out_dtype)


def _check_spatial(arrays: Sequence[np.ndarray]) -> tuple[int, int]:
    shapes = {a.shape[-2:] for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"all arrays must share their last two (rows, columns) axes, got {shapes}")
    for a in arrays:
        if a.ndim not in (2, 3):
            raise ValueError(f"arrays must be (rows, columns) or (channels, rows, columns), got {a.shape}")
    return next(iter(shapes))


def elastic_deform(
    arrays: Sequence[np.ndarray],
    *,
    sigma: float = 10.0,
    grid: int = 3,
    orders: Sequence[int] | None = None,
    rng: np.random.Generator | int | None = None,
    mode: str = "mirror",
) -> list[np.ndarray]:
    """Warp several aligned arrays with one random elastic deformation.

    Parameters
    ----------
    arrays : arrays of shape (rows, columns) or (channels, rows, columns) with the same (rows,
        columns): e.g. image, labels, weights, mask.
    sigma : standard deviation in pixels of the coarse displacement vectors (the paper: 10). 0
        returns unchanged copies.
    grid : knots per axis of the coarse grid (the paper: 3).
    orders : spline order per array: 3 (bicubic) for images, 0 (nearest, label-preserving) for
        labels, weights and masks. None: 3 for the first array if it is floating point (the
        image), 0 for all the others.
    rng : seed or generator; the same seed gives the same deformation.
    mode : how points outside the input are filled (:func:`scipy.ndimage.map_coordinates`).

    Returns
    -------
    list of the warped arrays, same shapes; float arrays come back float32 (float64 stays
    float64), integer and bool arrays keep their dtype.
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        return []
    if orders is None:
        orders = [_default_order(arrays[0])] + [0] * (len(arrays) - 1)
    if len(orders) != len(arrays):
        raise ValueError(f"got {len(orders)} orders for {len(arrays)} arrays")
    shape = _check_spatial(arrays)
    if sigma == 0:
        return [a.copy() for a in arrays]
    field = displacement_field(shape, sigma=sigma, grid=grid, rng=rng)
    coords = np.indices(shape, dtype=np.float64) + field
    nearest = _nearest_index(coords, shape) if 0 in orders else None
    return [
        _warp(a, coords, order, mode, nearest) for a, order in zip(arrays, orders, strict=True)
    ]


def _center_slices(shape: tuple[int, int], out: tuple[int, int]) -> tuple[slice, slice]:
    return tuple(slice((s - o) // 2, (s - o) // 2 + o) for s, o in zip(shape, out, strict=True))


class Augmenter:
    """Random augmentation of one training sample, all arrays transformed together.

    Parameters
    ----------
    elastic_sigma : standard deviation in pixels of the elastic displacement vectors (paper: 10).
    elastic_grid : knots per axis of the elastic coarse grid (paper: 3).
    flips : random flips along rows and columns (each with probability 0.5).
    rot90 : random multiples of 90 degrees (uniform; only 0 and 180 for non-square outputs).
    rotate_deg : a further rotation drawn uniformly from [-rotate_deg, rotate_deg] degrees.
    scale : zoom factor drawn log-uniformly from [1 / (1 + a), 1 + a], ``a = scale * strength``
        (0.5 covers the 0.67-1.5x range of cell sizes a generalist model should hold over).
    intensity : amplitude of the gray-value changes: contrast factor in [1 - i, 1 + i], brightness
        offset in [-i, i] (images are normalised to about [0, 1]), gamma in [exp(-i), exp(i)]
        applied between the image's minimum and maximum.
    noise : standard deviation of added Gaussian noise (same units as the normalised image).
    strength : scales every amplitude above (and the flip/rot90 probabilities, up to 1); 0 makes the
        augmenter the exact identity.
    mode : how points outside the input are filled, for every array alike.
    rng : seed or generator.

    Examples
    --------
    >>> aug = Augmenter(rng=0)
    >>> image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    >>> labels = np.zeros((64, 64), np.int32); labels[20:40, 20:40] = 7
    >>> img2, lab2, w2, m2 = aug(image, labels)
    >>> sorted(np.unique(lab2).tolist()), w2 is None
    ([0, 7], True)
    """

    def __init__(
        self,
        *,
        elastic_sigma: float = 10.0,
        elastic_grid: int = 3,
        flips: bool = True,
        rot90: bool = True,
        rotate_deg: float = 15.0,
        scale: float = 0.1,
        intensity: float = 0.2,
        noise: float = 0.02,
        strength: float = 1.0,
        mode: str = "mirror",
        rng: np.random.Generator | int | None = None,
    ) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        if not 0 <= scale <= 4:
            raise ValueError(f"scale must be in [0, 4], got {scale}")
        self.elastic_sigma = float(elastic_sigma)
        self.elastic_grid = int(elastic_grid)
        self.flips = bool(flips)
        self.rot90 = bool(rot90)
        self.rotate_deg = float(rotate_deg)
        self.scale = float(scale)
        self.intensity = float(intensity)
        self.noise = float(noise)
        self.strength = float(strength)
        self.mode = mode
        self.rng = _generator(rng)

    def __call__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        *,
        out_shape: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Augment one sample.

        Parameters
        ----------
        image : (rows, columns) or (channels, rows, columns) float image.
        labels : (rows, columns) integer instance labels (or class targets).
        weights : (rows, columns) float pixel weights, or None.
        mask : (rows, columns) bool annotation mask, or None.
        out_shape : (rows, columns) of the output, centred on the input; default the input's. A
            caller can pass a window larger than ``out_shape`` so that rotated corners come from
            real data instead of the mirrored border.

        Returns
        -------
        (image, labels, weights, mask) transformed alike: image float32, labels of their dtype,
        weights float32, mask bool; None stays None.
        """
        image = np.asarray(image)
        labels = np.asarray(labels)
        extras = [None if a is None else np.asarray(a) for a in (weights, mask)]
        arrays = [image, labels] + [a for a in extras if a is not None]
        shape = _check_spatial(arrays)
        out = tuple(out_shape) if out_shape is not None else shape
        s = self.strength
        rng = self.rng

        fits = out[0] <= shape[0] and out[1] <= shape[1]
        if s == 0:
            if fits:
                geo = [self._discrete(a, False, False, 0, shape, out) for a in arrays]
            else:
                coords = self._coordinates(shape, out, False, False, 0, 0.0, 1.0, 0.0)
                nearest = _nearest_index(coords, shape)
                geo = [_warp(arrays[0], coords, 3, self.mode)]
                geo += [_warp(a, coords, 0, self.mode, nearest) for a in arrays[1:]]
            return self._pack(geo, extras)

        p = min(s, 1.0)
        flip_r = self.flips and rng.random() < 0.5 * p
        flip_c = self.flips and rng.random() < 0.5 * p
        k = 0
        if self.rot90 and rng.random() < p:
            k = int(rng.integers(4)) if out[0] == out[1] else 2 * int(rng.integers(2))
        angle = np.deg2rad(self.rotate_deg * s * rng.uniform(-1, 1))
        zoom = float(np.exp(np.log1p(self.scale * s) * rng.uniform(-1, 1)))
        elastic = self.elastic_sigma * s

        smooth = angle == 0 and zoom == 1 and elastic == 0
        if smooth and fits:
            geo = [self._discrete(a, flip_r, flip_c, k, shape, out) for a in arrays]
        else:
            coords = self._coordinates(shape, out, flip_r, flip_c, k, angle, zoom, elastic)
            nearest = _nearest_index(coords, shape)
            geo = [_warp(arrays[0], coords, 3, self.mode)]
            geo += [_warp(a, coords, 0, self.mode, nearest) for a in arrays[1:]]
        geo[0] = self._gray_values(geo[0].astype(np.float32, copy=False), s)
        return self._pack(geo, extras)

    @staticmethod
    def _pack(geo, extras):
        image, labels, rest = geo[0].astype(np.float32, copy=False), geo[1], list(geo[2:])
        weights = None if extras[0] is None else rest.pop(0).astype(np.float32, copy=False)
        mask = None if extras[1] is None else rest.pop(0).astype(bool, copy=False)
        return image, labels, weights, mask

    @staticmethod
    def _discrete(a, flip_r, flip_c, k, shape, out):
        """Flips and rot90 by slicing (exact), then the centre crop to ``out``."""
        if flip_r:
            a = a[..., ::-1, :]
        if flip_c:
            a = a[..., :, ::-1]
        a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a[(..., *_center_slices(a.shape[-2:], out))])

    def _coordinates(self, shape, out, flip_r, flip_c, k, angle, zoom, elastic) -> np.ndarray:
        """(2, out_rows, out_columns) input coordinates of every output pixel.

        ``q = centre_in + M @ (p + e(p))`` with ``p`` the output pixel relative to the output
        centre, ``e`` the elastic displacement and ``M = rotation(angle) @ rot90^k @ flips / zoom``.
        """
        matrix = np.diag([-1.0 if flip_r else 1.0, -1.0 if flip_c else 1.0])
        quarter = np.array([[0.0, -1.0], [1.0, 0.0]])
        matrix = np.linalg.matrix_power(quarter, k) @ matrix
        cos, sin = np.cos(angle), np.sin(angle)
        matrix = np.array([[cos, -sin], [sin, cos]]) @ matrix / zoom
        rows = np.arange(out[0], dtype=np.float64) - (out[0] - 1) / 2
        cols = np.arange(out[1], dtype=np.float64) - (out[1] - 1) / 2
        pr, pc = np.meshgrid(rows, cols, indexing="ij")
        if elastic > 0:
            field = displacement_field(out, sigma=elastic, grid=self.elastic_grid, rng=self.rng)
            pr, pc = pr + field[0], pc + field[1]
        coords = np.empty((2, *out), np.float64)
        coords[0] = (shape[0] - 1) / 2 + matrix[0, 0] * pr + matrix[0, 1] * pc
        coords[1] = (shape[1] - 1) / 2 + matrix[1, 0] * pr + matrix[1, 1] * pc
        return coords

    def _gray_values(self, image: np.ndarray, s: float) -> np.ndarray:
        rng = self.rng
        amp = self.intensity * s
        if amp > 0:
            contrast = 1.0 + amp * rng.uniform(-1, 1)
            brightness = amp * rng.uniform(-1, 1)
            gamma = float(np.exp(amp * rng.uniform(-1, 1)))
            lo, hi = float(image.min()), float(image.max())
            if hi > lo:
                unit = (image - lo) / (hi - lo)
                image = lo + (hi - lo) * np.power(unit, gamma, dtype=np.float32)
            mean = float(image.mean())
            image = (image - mean) * contrast + mean + brightness
        if self.noise * s > 0:
            noise = rng.standard_normal(image.shape, dtype=np.float32)
            image = image + np.float32(self.noise * s) * noise
        return image.astype(np.float32, copy=False)
