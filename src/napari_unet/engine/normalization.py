"""Percentile normalisation of images, and the one default every model and entry point uses.

Images reach the network normalised per channel so that the ``low`` percentile maps to 0 and the
``high`` percentile to 1 (values outside are kept). The percentiles are stored in each model file
(``Checkpoint.normalization``); :data:`DEFAULT_NORMALIZATION` is what a model without them gets
and what training uses unless told otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_NORMALIZATION", "channel_range", "normalize", "normalize_to_range", "percentile_range",
]

DEFAULT_LOW = 1.0
DEFAULT_HIGH = 99.8
#: The percentiles of the bundled models and the default for new ones.
DEFAULT_NORMALIZATION = {"low": DEFAULT_LOW, "high": DEFAULT_HIGH}


def percentile_range(
    image: np.ndarray, *, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, channel_axis: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``low``/``high`` percentiles of ``image`` as float32 arrays of shape (C,).

    Without ``channel_axis`` C is 1 and the percentiles run over the whole array.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    data = np.asarray(image)
    if channel_axis is None:
        data = data[np.newaxis]
    else:
        data = np.moveaxis(data, channel_axis, 0)
    lows, highs = [], []
    for channel in data:
        lo, hi = _percentiles(channel, (low, high))
        lows.append(lo)
        highs.append(hi)
    return np.asarray(lows, np.float32), np.asarray(highs, np.float32)


def _percentiles(values: np.ndarray, qs: tuple[float, float]) -> np.ndarray:
    """``np.percentile(values, qs)`` (linear method); O(n) via a histogram for 8/16-bit ints
    (bool counted as 0/1)."""
    if values.dtype == bool:
        values = values.view(np.uint8)
    if values.dtype not in (np.uint8, np.uint16):
        return np.percentile(values, qs)
    return percentiles_from_counts(np.bincount(values.ravel()), qs)


def percentiles_from_counts(counts: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Percentiles (linear method, as ``np.percentile``) of the integer values 0..len-1 that
    occur ``counts[v]`` times: a histogram is enough, so 8/16-bit images (or blocks of them,
    their histograms summed) need no sort."""
    cum = np.cumsum(counts)
    n = cum[-1]
    result = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        below = np.searchsorted(cum, np.floor(pos), side="right")
        above = np.searchsorted(cum, np.ceil(pos), side="right")
        result.append(below + (above - below) * (pos - np.floor(pos)))
    return np.asarray(result, np.float64)


def _scale(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``1 / (hi - lo)``, with 1 where the range is empty (constant images map to 0)."""
    span = hi.astype(np.float32) - lo.astype(np.float32)
    return np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0).astype(np.float32)


def normalize(
    image: np.ndarray, *, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, channel_axis: int | None = None
) -> np.ndarray:
    """Percentile normalisation per channel to roughly [0, 1].

    Parameters
    ----------
    image : ndarray
        Any shape, integer or float dtype.
    low, high : float
        Percentiles (0-100) mapped to 0 and 1. Values outside are not clipped.
    channel_axis : int, optional
        Axis of the channels, each normalised on its own; ``None`` normalises the whole array
        with one pair of percentiles (for a stack: over all its planes).

    Returns
    -------
    ndarray
        float32, the shape of ``image``. A constant image (or channel) maps to 0.

    Examples
    --------
    >>> normalize(np.arange(101, dtype=np.uint8), low=0, high=100)[[0, 50, 100]]
    array([0. , 0.5, 1. ], dtype=float32)
    """
    data = np.asarray(image)
    if data.size == 0:
        raise ValueError("cannot normalise an empty image")
    lo, hi = percentile_range(data, low=low, high=high, channel_axis=channel_axis)
    out = data.astype(np.float32, copy=True)
    shape = [1] * data.ndim
    if channel_axis is not None:
        shape[channel_axis] = -1
    out -= lo.reshape(shape)
    out *= _scale(lo, hi).reshape(shape)
    return out


def channel_range(intensity_range: tuple[Any, Any], n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``intensity_range`` as two float32 arrays of shape ``(n_channels,)``: one low and one
    high value per channel, or one of each for every channel. Raises ``ValueError`` otherwise,
    and when low is not below high."""
    try:
        low, high = intensity_range
    except (TypeError, ValueError):
        raise ValueError(f"intensity_range must be (low, high), not {intensity_range!r}") from None
    lo = np.asarray(low, np.float32).reshape(-1)
    hi = np.asarray(high, np.float32).reshape(-1)
    if lo.size == 1:
        lo = np.repeat(lo, n_channels)
    if hi.size == 1:
        hi = np.repeat(hi, n_channels)
    if lo.shape != (n_channels,) or hi.shape != (n_channels,):
        raise ValueError(
            f"intensity_range needs one low and one high value per channel ({n_channels}), "
            f"or one of each for all, got {lo.size} and {hi.size}"
        )
    if np.isfinite(lo).all() and np.isfinite(hi).all() and not (lo < hi).all():
        if (np.asarray(low, np.float64) < np.asarray(high, np.float64)).all():
            # below in the numbers typed, equal once rounded to float32 (7 and 7.0000001)
            raise ValueError(
                f"intensity_range: low and high ({low} and {high}) are too close: they are the "
                "same number in float32; widen the range"
            )
        raise ValueError(f"intensity_range: low must be below high, not {low} and {high}")
    return lo, hi


def normalize_to_range(planes: np.ndarray, intensity_range: tuple[Any, Any]) -> np.ndarray:
    """(P, C, Y, X) ``planes`` mapped per channel from ``intensity_range`` to [0, 1]; float32."""
    n_channels = planes.shape[1]
    lo, hi = channel_range(intensity_range, n_channels)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("intensity_range must hold finite numbers")
    out = planes.astype(np.float32)  # a copy: the caller's image is left alone
    out -= lo.reshape(1, -1, 1, 1)
    out *= _scale(lo, hi).reshape(1, -1, 1, 1)
    return out
