"""Bounds on what a model file may ask for, checked before any tensor is made or any image read.

A model file names its architecture in a few integers; without bounds a 141 KB file can ask for
a network of depth 40 or ten million input channels, and building it exhausts the machine's
memory before any check of the weights runs. :func:`check_config_limits` refuses such a
configuration from the numbers alone: each field against a generous bound and the parameter
count, computed from the configuration (:func:`parameter_count`), against
:data:`MAX_PARAMETERS`. :func:`normalization_percentiles` is the one check of a stored
normalisation, so that a bad one is reported as the model's fault, not the image's. numpy and
torch are not imported here.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_BASE_CHANNELS",
    "MAX_CLASSES",
    "MAX_DEPTH",
    "MAX_IN_CHANNELS",
    "MAX_PARAMETERS",
    "check_config_limits",
    "normalization_percentiles",
    "parameter_count",
]

#: Poolings: a "valid" net of depth 7 already needs input tiles of over 1500 pixels.
MAX_DEPTH = 6
#: Channels of the first level (the paper used 64).
MAX_BASE_CHANNELS = 256
#: Image channels a network may read.
MAX_IN_CHANNELS = 256
#: Classes a network may predict.
MAX_CLASSES = 256
#: Trainable parameters (800 MB of float32 weights; the paper's net has 31.0 M).
MAX_PARAMETERS = 200_000_000


def parameter_count(config: Any) -> int:
    """The trainable parameters of ``UNet(config)``, from the configuration alone.

    Every 3x3 convolution has ``9 * c_in * c_out`` weights plus ``c_out`` biases, or, with a
    normalisation layer after it, no bias and ``2 * c_out`` affine parameters; a 2x2
    up-convolution has ``4 * c_in * c_out + c_out``, the 1x1 head ``c_0 * n_classes + n_classes``.

    Parameters
    ----------
    config : UNetConfig or any object with its fields
        ``in_channels``, ``n_classes``, ``depth``, ``base_channels`` and ``norm``.

    Returns
    -------
    int
        The number of parameters (a Python int, exact for any size).
    """
    per_channel = 1 if config.norm is None else 2

    def conv3(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out + per_channel * c_out

    def double(c_in: int, c_out: int) -> int:
        return conv3(c_in, c_out) + conv3(c_out, c_out)

    depth, channels = config.depth, [config.base_channels * 2**lvl for lvl in range(config.depth + 1)]
    total = double(config.in_channels, channels[0])
    total += sum(double(channels[lvl - 1], channels[lvl]) for lvl in range(1, depth + 1))
    total += sum(4 * channels[lvl + 1] * channels[lvl] + channels[lvl] for lvl in range(depth))
    total += sum(double(2 * channels[lvl], channels[lvl]) for lvl in range(depth))
    return total + channels[0] * config.n_classes + config.n_classes


def check_config_limits(config: Any) -> None:
    """Raise ``ValueError`` with a sentence when ``config`` asks for more than the bounds.

    Each of ``depth``, ``base_channels``, ``in_channels`` and ``n_classes`` is checked against
    its bound (:data:`MAX_DEPTH`, ...) before the parameter count is computed, so a huge value
    costs nothing; then :func:`parameter_count` against :data:`MAX_PARAMETERS`.
    """
    for name, bound in (
        ("depth", MAX_DEPTH),
        ("base_channels", MAX_BASE_CHANNELS),
        ("in_channels", MAX_IN_CHANNELS),
        ("n_classes", MAX_CLASSES),
    ):
        value = getattr(config, name)
        if value > bound:
            raise ValueError(f"UNetConfig.{name} must be at most {bound}, got {value}")
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"the network would have {count / 1e6:.1f} M parameters, more than the "
            f"{MAX_PARAMETERS / 1e6:.0f} M napari-unet builds (depth {config.depth}, "
            f"{config.base_channels} base channels)"
        )


def normalization_percentiles(normalization: Any) -> tuple[float, float]:
    """The ``(low, high)`` percentiles of a stored normalisation ``{"low": .., "high": ..}``.

    A missing key takes the engine's default (1 and 99.8). Raises ``ValueError`` with a
    sentence for anything but a dict of those keys holding finite numbers with
    ``0 <= low < high <= 100``.
    """
    if not isinstance(normalization, dict):
        raise ValueError(f"normalization must be a dict, got {type(normalization).__name__}")
    unknown = sorted(set(normalization) - {"low", "high"})
    if unknown:
        raise ValueError(f"unknown normalization keys: {unknown}")
    values = []
    from napari_unet.engine.normalization import DEFAULT_NORMALIZATION

    for key, default in DEFAULT_NORMALIZATION.items():
        value = normalization.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"the normalization percentile {key!r} must be a number, not {value!r}")
        values.append(float(value))
    low, high = values
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(
            f"normalization percentiles must satisfy 0 <= low < high <= 100, got {low:g}, {high:g}"
        )
    return low, high
