"""Synthetic fluorescence-like images of touching nuclei, with exact instance labels.

Used for the bundled sample, unit tests and smoke benchmarks; real data lives in benchmarks/.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256),
    *,
    n_cells: int = 30,
    diameter: float = 20.0,
    touching: float = 0.5,
    noise: float = 0.05,
    profile: str = "flat",
    dtype: type = np.uint16,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_cells`` elliptical nuclei, many of them touching, and image them.

    Parameters
    ----------
    shape : (rows, columns) of the image.
    n_cells : number of nuclei to place (fewer if they do not fit).
    diameter : mean nucleus diameter in pixels.
    touching : fraction of nuclei placed right against an earlier one.
    noise : standard deviation of the additive Gaussian noise, relative to the signal.
    profile : intensity across a nucleus: ``"flat"`` (uniform, textured) or ``"ellipsoid"``
        (proportional to the thickness of an ellipsoidal nucleus, ``sqrt(1 - rho^2)``, as in a
        widefield image: dimmer at the rim, so touching nuclei meet at a darker seam).
    dtype : ``np.uint16``, ``np.uint8`` or ``np.float32`` for the image.
    rng : seed or generator.

    Returns
    -------
    image : (rows, columns) of ``dtype``; blurred nuclei with textured intensity, background
        offset and noise.
    labels : (rows, columns) int32 instance labels, 0 is background, ids 1..n.
    """
    if profile not in ("flat", "ellipsoid"):
        raise ValueError(f"profile must be 'flat' or 'ellipsoid', not {profile!r}")
    rng = np.random.default_rng(rng)
    rows, cols = shape
    labels = np.zeros(shape, np.int32)
    thickness = np.ones(shape, np.float32)
    rr, cc = np.mgrid[0:rows, 0:cols]
    centers: list[tuple[float, float, float]] = []
    next_id = 1
    attempts = 0
    while next_id <= n_cells and attempts < n_cells * 50:
        attempts += 1
        radius = max(2.0, rng.normal(diameter / 2, diameter / 12))
        if centers and rng.random() < touching:
            # place against an earlier nucleus so that they touch
            r0, c0, rad0 = centers[rng.integers(len(centers))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = rad0 + radius * 0.9
            r, c = r0 + dist * np.sin(angle), c0 + dist * np.cos(angle)
        else:
            r, c = rng.uniform(0, rows), rng.uniform(0, cols)
        if not (0 <= r < rows and 0 <= c < cols):
            continue
        aspect = rng.uniform(0.75, 1.0)
        theta = rng.uniform(0, np.pi)
        a, b = radius, radius * aspect
        lo_r, hi_r = int(max(r - a - 1, 0)), int(min(r + a + 2, rows))
        lo_c, hi_c = int(max(c - a - 1, 0)), int(min(c + a + 2, cols))
        dr = rr[lo_r:hi_r, lo_c:hi_c] - r
        dc = cc[lo_r:hi_r, lo_c:hi_c] - c
        u = dr * np.cos(theta) + dc * np.sin(theta)
        v = -dr * np.sin(theta) + dc * np.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        window = labels[lo_r:hi_r, lo_c:hi_c]
        free = inside & (window == 0)
        if free.sum() < 0.6 * inside.sum() or free.sum() < 8:
            continue
        window[free] = next_id
        rho2 = (u / a) ** 2 + (v / b) ** 2
        thickness[lo_r:hi_r, lo_c:hi_c][free] = np.sqrt(np.clip(1.0 - rho2[free], 0.0, 1.0))
        centers.append((r, c, radius))
        next_id += 1

    n = next_id - 1
    brightness = rng.uniform(0.5, 1.0, n + 1)
    brightness[0] = 0.0
    signal = brightness[labels].astype(np.float32)
    if profile == "ellipsoid":
        signal *= 0.3 + 0.7 * thickness
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 2.0)
    signal *= 1.0 + 0.15 * texture
    signal = ndi.gaussian_filter(signal, 1.0)
    image = 0.1 + signal + rng.normal(0, noise, shape).astype(np.float32)
    image = np.clip(image, 0, None)
    if np.dtype(dtype) == np.float32:
        return image.astype(np.float32), labels
    scale = 4000.0 if np.dtype(dtype) == np.uint16 else 200.0
    return np.clip(image * scale, 0, np.iinfo(dtype).max).astype(dtype), labels
