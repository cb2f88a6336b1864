"""A procedural generator of fluorescent-nucleus images with exact instance labels.

Real annotated nucleus sets reachable by this project are few, and their labels are machine-made.
This generator fills the gaps they leave for training and testing: clusters of touching and
slightly overlapping nuclei, diameters of 8-80 px, elongated and irregular outlines, chromatin
texture and nucleoli, bright mitotic and dim nuclei, blur and defocus, halos, uneven background,
Poisson-Gaussian noise, 8- and 16-bit ranges. Every image comes with labels that are exact by
construction: each pixel carries the id of the nucleus visible on top there.

One image is drawn in two stages: a :class:`NucleusStyle` (the acquisition and the specimen,
drawn by :func:`random_style`) and the scene (:func:`generate_nuclei`). Both take a seed or a
``numpy.random.Generator``, so a draw is reproducible.

Examples
--------
>>> image, labels = generate_nuclei((128, 128), rng=0)
>>> image.dtype in (np.uint8, np.uint16), labels.dtype == np.int32
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

__all__ = ["NucleusStyle", "generate_nuclei", "random_style"]


@dataclass(frozen=True)
class NucleusStyle:
    """The look of one generated image. Lengths are in pixels, intensities relative to the mean
    nucleus brightness (1.0) unless said otherwise.

    Attributes
    ----------
    diameter : median nucleus diameter (equivalent diameter of the drawn outline).
    diameter_spread : standard deviation of log(diameter) between nuclei.
    coverage : fraction of the image the nuclei should cover (reached only if they fit).
    clustering : probability that a nucleus is placed against an existing one.
    overlap : largest fraction of a nucleus' radius by which it may overlap a neighbour.
    aspect : smallest minor/major axis ratio (elongation); drawn per nucleus in [aspect, 1].
    irregularity : amplitude of the random low-order harmonics of the outline's radius.
    texture : amplitude of the chromatin texture (multiplicative).
    nucleoli : expected number of dark nucleoli per nucleus.
    profile : 0 flat nuclei, 1 intensity following the thickness of an ellipsoid.
    dim_fraction, mitotic_fraction : shares of dim (0.15-0.4x) and mitotic nuclei (smaller,
        elongated, 1.5-3x brighter, coarse texture).
    brightness_spread : standard deviation of log(brightness) between nuclei.
    blur : standard deviation of the optical blur.
    defocus : extra blur (standard deviation) reached in the most defocused parts of the image.
    halo : amplitude of a diffuse glow around nuclei (out-of-focus light).
    background : mean background level.
    gradient : amplitude of the smooth background unevenness (relative to 1.0).
    photons : expected photons at brightness 1.0 (Poisson noise; lower is noisier).
    read_noise : standard deviation of additive Gaussian noise (relative to 1.0).
    debris : expected number of small bright specks (not nuclei: label 0).
    bit_depth : 8 or 16.
    """

    diameter: float = 24.0
    diameter_spread: float = 0.15
    coverage: float = 0.3
    clustering: float = 0.5
    overlap: float = 0.1
    aspect: float = 0.6
    irregularity: float = 0.06
    texture: float = 0.2
    nucleoli: float = 1.0
    profile: float = 0.5
    dim_fraction: float = 0.1
    mitotic_fraction: float = 0.05
    brightness_spread: float = 0.3
    blur: float = 1.0
    defocus: float = 1.0
    halo: float = 0.1
    background: float = 0.1
    gradient: float = 0.1
    photons: float = 100.0
    read_noise: float = 0.02
    debris: float = 2.0
    bit_depth: int = 16


def random_style(
    rng: np.random.Generator | int | None = None,
    *,
    diameter: float | None = None,
    hard: bool = False,
) -> NucleusStyle:
    """Draw a random :class:`NucleusStyle`.

    Parameters
    ----------
    rng : seed or generator.
    diameter : the median nucleus diameter in pixels; ``None`` draws it log-uniformly in [8, 80].
    hard : draw from the harder end of every range (denser clusters, more overlap, more noise,
        blur, unevenness and dim nuclei), as in the bundled sample and ``tox -e demo``.
    """
    rng = np.random.default_rng(rng)
    u = rng.uniform
    h = 1.0 if hard else 0.0
    if diameter is None:
        diameter = float(np.exp(u(np.log(8.0), np.log(80.0))))
    blur = u(0.5, 1.5 + h) * max(diameter / 24.0, 0.5) ** 0.5
    return NucleusStyle(
        diameter=float(diameter),
        diameter_spread=u(0.05, 0.25),
        coverage=u(0.15 + 0.15 * h, 0.45 + 0.1 * h),
        clustering=u(0.3 + 0.4 * h, 0.8 + 0.15 * h),
        overlap=u(0.0, 0.12 + 0.08 * h),
        aspect=u(0.45, 0.9),
        irregularity=u(0.0, 0.12),
        texture=u(0.05, 0.4),
        nucleoli=u(0.0, 2.0),
        profile=u(0.0, 1.0),
        dim_fraction=u(0.0, 0.15 + 0.1 * h),
        mitotic_fraction=u(0.0, 0.1),
        brightness_spread=u(0.1, 0.45),
        blur=float(blur),
        defocus=u(0.0, 1.5 + 1.5 * h) * max(diameter / 24.0, 0.5) ** 0.5,
        halo=u(0.0, 0.25),
        background=u(0.02, 0.3),
        gradient=u(0.0, 0.25 + 0.25 * h),
        photons=float(np.exp(u(np.log(8.0 if hard else 15.0), np.log(1000.0)))),
        read_noise=u(0.0, 0.04 + 0.04 * h),
        debris=u(0.0, 6.0),
        bit_depth=int(rng.choice([8, 16])),
    )


def generate_nuclei(
    shape: tuple[int, int] = (256, 256),
    style: NucleusStyle | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    hard: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of nuclei and its exact instance labels.

    Parameters
    ----------
    shape : (rows, columns) of the image in pixels.
    style : the look of the image; ``None`` draws one with :func:`random_style` (``hard`` passed
        on) from ``rng``.
    rng : seed or generator.
    hard : see :func:`random_style`; only used when ``style`` is None.

    Returns
    -------
    image : (rows, columns) uint8 or uint16 (``style.bit_depth``).
    labels : (rows, columns) int32, 0 background, ids 1..n; a pixel where nuclei overlap carries
        the id of the nucleus on top. Ids are consecutive.
    """
    rng = np.random.default_rng(rng)
    if style is None:
        style = random_style(rng, hard=hard)
    rows, cols = (int(s) for s in shape)
    if rows < 8 or cols < 8:
        raise ValueError(f"the image must be at least 8 x 8 pixels, got {shape}")
    labels, signal = _place_nuclei((rows, cols), style, rng)
    image = _image(signal, labels, style, rng)
    return image, labels


# -- the scene ------------------------------------------------------------------------------


@dataclass
class _Nucleus:
    row: float
    col: float
    radius: float  # equivalent radius in pixels


def _outline(radius: float, aspect: float, irregularity: float, rng: np.random.Generator):
    """A star-convex outline: a function of (dr, dc) offsets giving rho (<= 1 inside)."""
    theta0 = rng.uniform(0, np.pi)
    # major/minor semi-axes with the area of a circle of ``radius``
    a = radius / math.sqrt(aspect)
    b = radius * math.sqrt(aspect)
    harmonics = [(k, irregularity * rng.normal() / k**0.5, rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5)]

    def rho(dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
        u = dr * math.cos(theta0) + dc * math.sin(theta0)
        v = -dr * math.sin(theta0) + dc * math.cos(theta0)
        angle = np.arctan2(v, u)
        scale = 1.0 + sum(amp * np.cos(k * angle + phase) for k, amp, phase in harmonics)
        return np.sqrt((u / a) ** 2 + (v / b) ** 2) / np.clip(scale, 0.6, 1.5)

    return rho, max(a, b) * 1.6


def _place_nuclei(
    shape: tuple[int, int], style: NucleusStyle, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the noise-free, unblurred signal (float32) of the nuclei."""
    rows, cols = shape
    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    area_goal = style.coverage * rows * cols
    mean_area = math.pi * (style.diameter / 2) ** 2
    n_goal = max(1, int(area_goal / mean_area))
    placed: list[_Nucleus] = []
    covered = 0
    attempts = 0
    while covered < area_goal and attempts < 30 * n_goal + 50:
        attempts += 1
        mitotic = rng.random() < style.mitotic_fraction
        radius = 0.5 * style.diameter * float(np.exp(rng.normal(0, style.diameter_spread)))
        aspect = rng.uniform(style.aspect, 1.0)
        if mitotic:
            radius *= rng.uniform(0.6, 0.85)
            aspect = rng.uniform(0.25, 0.5)
        radius = max(radius, 2.0)
        if placed and rng.random() < style.clustering:
            other = placed[int(rng.integers(len(placed)))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = (other.radius + radius) * (1.0 - rng.uniform(0, style.overlap)) * rng.uniform(
                0.93, 1.05
            )
            r, c = other.row + dist * math.sin(angle), other.col + dist * math.cos(angle)
        else:
            r, c = rng.uniform(-radius, rows + radius), rng.uniform(-radius, cols + radius)
        rho_of, reach = _outline(radius, aspect, style.irregularity, rng)
        r0, r1 = int(max(math.floor(r - reach), 0)), int(min(math.ceil(r + reach) + 1, rows))
        c0, c1 = int(max(math.floor(c - reach), 0)), int(min(math.ceil(c + reach) + 1, cols))
        if r1 - r0 < 2 or c1 - c0 < 2:
            continue
        dr, dc = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        rho = rho_of(dr - r, dc - c)
        inside = rho <= 1.0
        n_inside = int(inside.sum())
        if n_inside < 6:
            continue
        window = labels[r0:r1, c0:c1]
        taken = inside & (window > 0)
        # overlap allowed only up to the style's fraction of this nucleus' area
        if taken.sum() > 2.5 * style.overlap * n_inside + 0.02 * n_inside:
            continue
        on_top = rng.random() < 0.5
        if on_top and taken.any():
            # the nucleus underneath must stay mostly visible
            ids, counts = np.unique(window[taken], return_counts=True)
            areas = np.bincount(labels[r0:r1, c0:c1].ravel(), minlength=int(ids.max()) + 1)
            if np.any(counts > 0.35 * areas[ids]):
                on_top = False
        own = inside & ((window == 0) | on_top)
        if own.sum() < 0.6 * n_inside:
            continue
        new_id = len(placed) + 1
        window[own] = new_id
        brightness = float(np.exp(rng.normal(0, style.brightness_spread)))
        if mitotic:
            brightness *= rng.uniform(1.5, 3.0)
        elif rng.random() < style.dim_fraction:
            brightness *= rng.uniform(0.15, 0.4)
        thickness = np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))
        body = brightness * ((1 - style.profile) + style.profile * (0.25 + 0.75 * thickness))
        texture_scale = 0.6 if mitotic else 1.0
        body *= _texture(body.shape, radius, style, rng, coarse=mitotic) * texture_scale + (
            1 - texture_scale
        )
        signal[r0:r1, c0:c1] += np.where(inside, body, 0).astype(np.float32)
        placed.append(_Nucleus(r, c, radius))
        covered += int(own.sum())
    _add_debris(signal, style, rng)
    return _consecutive(labels), signal


def _texture(shape, radius, style, rng, *, coarse: bool) -> np.ndarray:
    """Multiplicative chromatin texture, with dark nucleoli; mean about 1."""
    noise = rng.normal(0, 1, shape).astype(np.float32)
    fine = ndi.gaussian_filter(noise, 1.0 if not coarse else 2.0)
    fine /= fine.std() + 1e-6
    tex = 1.0 + style.texture * fine
    n_nucleoli = 0 if coarse else rng.poisson(style.nucleoli)
    if n_nucleoli:
        rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        cr, cc0 = (shape[0] - 1) / 2, (shape[1] - 1) / 2
        for _ in range(n_nucleoli):
            pr = cr + rng.uniform(-0.5, 0.5) * radius
            pc = cc0 + rng.uniform(-0.5, 0.5) * radius
            size = max(radius * rng.uniform(0.12, 0.25), 0.8)
            tex *= 1.0 - 0.5 * np.exp(-((rr - pr) ** 2 + (cc - pc) ** 2) / (2 * size**2))
    return np.clip(tex, 0.2, None)


def _add_debris(signal: np.ndarray, style: NucleusStyle, rng: np.random.Generator) -> None:
    rows, cols = signal.shape
    n = rng.poisson(style.debris * rows * cols / 512**2 * 4)
    for _ in range(n):
        r, c = int(rng.integers(rows)), int(rng.integers(cols))
        signal[r, c] += rng.uniform(2, 15) * max(style.diameter / 24, 0.3)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


# -- the microscope ---------------------------------------------------------------------------


def _smooth_field(shape, scale, rng) -> np.ndarray:
    """A smooth random field in [0, 1] varying over about ``scale`` pixels."""
    small = (max(2, int(shape[0] / scale) + 2), max(2, int(shape[1] / scale) + 2))
    coarse = rng.random(small).astype(np.float32)
    field = ndi.zoom(coarse, (shape[0] / small[0], shape[1] / small[1]), order=3, mode="nearest")
    field = field[: shape[0], : shape[1]]
    if field.shape != tuple(shape):
        field = np.pad(field, [(0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])], "edge")
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo) if hi > lo else np.zeros(shape, np.float32)


def _image(signal: np.ndarray, labels: np.ndarray, style: NucleusStyle, rng) -> np.ndarray:
    shape = signal.shape
    sharp = ndi.gaussian_filter(signal, style.blur) if style.blur > 0 else signal
    if style.defocus > 0:
        blurry = ndi.gaussian_filter(signal, style.blur + style.defocus)
        where = _smooth_field(shape, max(shape) / 2, rng) ** 2
        sharp = sharp * (1 - where) + blurry * where
    if style.halo > 0:
        sharp = sharp + style.halo * ndi.gaussian_filter(signal, max(style.diameter / 3, 2.0))
    level = style.background * (1 + style.gradient / max(style.background, 1e-3) * (
        _smooth_field(shape, max(shape) / 1.5, rng) - 0.5
    ))
    clean = np.clip(sharp + np.clip(level, 0, None), 0, None).astype(np.float32)
    noisy = rng.poisson(clean * style.photons).astype(np.float32) / style.photons
    noisy += rng.normal(0, style.read_noise, shape).astype(np.float32)
    noisy = np.clip(noisy, 0, None)
    if style.bit_depth == 8:
        top = 255.0
        dtype = np.uint8
    else:
        top = 65535.0
        dtype = np.uint16
    # the brightest nuclei may saturate a little, as they often do in a real acquisition
    reference = float(np.percentile(noisy, 99.9)) or 1.0
    fill = rng.uniform(0.5, 1.05) if style.bit_depth == 8 else rng.uniform(0.05, 0.9)
    gain = fill * top / reference
    offset = 0.0 if style.bit_depth == 8 else rng.uniform(0, 500)
    return np.clip(noisy * gain + offset, 0, top).astype(dtype)


def with_diameter(style: NucleusStyle, diameter: float) -> NucleusStyle:
    """A copy of ``style`` with another median nucleus diameter (blur scaled along)."""
    factor = diameter / style.diameter
    return replace(
        style,
        diameter=float(diameter),
        blur=style.blur * factor**0.5,
        defocus=style.defocus * factor**0.5,
    )
