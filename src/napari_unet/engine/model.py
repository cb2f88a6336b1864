"""The U-Net of Ronneberger, Fischer & Brox (2015), its configuration and valid-size arithmetic.

The contracting path repeats, per level, two 3x3 convolutions (each followed by ReLU) and a 2x2
max pooling with stride 2, doubling the channels at each level. The expanding path repeats a 2x2
up-convolution that halves the channels, a concatenation with the center-cropped feature map of
the contracting path and two 3x3 convolutions. A 1x1 convolution maps to the class logits.

With ``padding="valid"`` (the paper) every 3x3 convolution loses one pixel on each side, so the
output is smaller than the input by ``2 * border(depth)`` pixels and the input must have a size
for which every 2x2 pooling sees an even size (see :func:`valid_input_size`).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from napari_unet.engine.limits import check_config_limits

PADDINGS = ("valid", "same")
NORMS = (None, "batch", "group")
GROUP_SIZE = 8  # channels per group for norm="group"
#: Normalisations whose statistics come from the input itself (each tile at prediction time), so
#: that overlap-tile prediction depends on the tile size. Kept only to load and fine-tune the v1
#: bundled model (``nuclei-v1``); new networks use ``None`` or ``"batch"``, which predict with
#: fixed statistics and are seamless.
TILE_DEPENDENT_NORMS = ("group",)


# ---------------------------------------------------------------------------------------------
# valid-size arithmetic
# ---------------------------------------------------------------------------------------------


def _check_depth(depth: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")


def output_size(input_size: int, depth: int, padding: str = "valid") -> int:
    """Spatial output size of the network for one input side.

    Parameters
    ----------
    input_size : int
        Input side in pixels.
    depth : int
        Number of 2x2 poolings (4 in the paper).
    padding : {"valid", "same"}
        Convolution padding of the network.

    Returns
    -------
    int
        Output side in pixels. For ``"same"`` it equals ``input_size``.

    Raises
    ------
    ValueError
        If the size is not accepted by the network: for ``"valid"`` a pooling would see an odd
        size or the output would be empty (use :func:`valid_input_size`); for ``"same"`` the size
        is not a multiple of ``2**depth``.

    Examples
    --------
    >>> output_size(572, 4)
    388
    """
    _check_depth(depth)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    n = int(input_size)
    if padding == "same":
        if n < 2**depth or n % 2**depth:
            raise ValueError(
                f"a 'same' net of depth {depth} needs sizes that are positive multiples of "
                f"{2**depth}, got {input_size}"
            )
        return n
    out = _valid_output(n, depth)
    if out is None:
        raise ValueError(
            f"input size {input_size} is not valid for a 'valid' net of depth {depth} (every "
            f"2x2 pooling must see an even size and the output must not be empty); the nearest "
            f"valid size is {valid_input_size(input_size, depth)}"
        )
    return out


def _valid_output(n: int, depth: int) -> int | None:
    """Output side of a valid net for input side ``n``, or None when ``n`` is not valid."""
    for _ in range(depth):
        n -= 4
        if n < 2 or n % 2:
            return None
        n //= 2
    n -= 4
    for _ in range(depth):
        if n < 1:
            return None
        n = 2 * n - 4
    return n if n >= 1 else None


def border(depth: int) -> int:
    """Pixels a ``"valid"`` net of ``depth`` loses on each side (92 for the paper's depth 4).

    Two 3x3 convolutions lose 4 pixels of size; at level ``l`` that counts ``2**l`` input
    pixels. Summed over both paths and the bottom the loss is ``12 * 2**depth - 8``, half of it
    on each side.
    """
    _check_depth(depth)
    return 6 * 2**depth - 4


def valid_input_size(size: int, depth: int) -> int:
    """The smallest valid input side ``>= size`` for a ``"valid"`` net of ``depth``.

    Valid inputs are ``2**depth * b + 4 * (2**depth - 1)`` for a bottom-level size ``b`` large
    enough to leave a non-empty output; consecutive valid sizes are ``2**depth`` apart.

    Examples
    --------
    >>> valid_input_size(570, 4)
    572
    """
    _check_depth(depth)
    step = 2**depth
    offset = 4 * (step - 1)
    b = max(math.ceil((int(size) - offset) / step), 1)
    while _valid_output(step * b + offset, depth) is None:
        b += 1
    return step * b + offset


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class UNetConfig:
    """Everything needed to rebuild a :class:`UNet`; round-trips through ``to_dict``/JSON.

    Parameters
    ----------
    in_channels : int
        Image channels the network reads.
    n_classes : int
        Output classes (3: background, cell interior, border).
    depth : int
        Number of 2x2 poolings (4 in the paper).
    base_channels : int
        Channels of the first level; each level below doubles them (64 in the paper).
    padding : {"valid", "same"}
        ``"valid"`` convolutions as in the paper (the output is smaller than the input) or
        zero-padded ``"same"`` convolutions.
    norm : {None, "batch", "group"}
        Normalisation after every 3x3 convolution, before its ReLU. ``"batch"`` normalises with
        the batch's statistics in training and with running averages at prediction, so a
        prediction does not depend on how the image is tiled. ``"group"`` (groups of at most 8
        channels) takes its statistics from each input, hence from each tile: overlap-tile
        prediction with it is not seamless (see :data:`TILE_DEPENDENT_NORMS`).
    dropout : float
        Dropout probability at the end of the contracting path (the paper used 0.5).
    """

    in_channels: int = 1
    n_classes: int = 3
    depth: int = 4
    base_channels: int = 64
    padding: str = "valid"
    norm: str | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "n_classes", "depth", "base_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be an integer >= 1, got {value!r}")
        if self.n_classes < 2:
            raise ValueError(f"UNetConfig.n_classes must be >= 2, got {self.n_classes}")
        if self.padding not in PADDINGS:
            raise ValueError(f"UNetConfig.padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.norm not in NORMS:
            raise ValueError(f"UNetConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if (
            not isinstance(self.dropout, (int, float))
            or isinstance(self.dropout, bool)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"UNetConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        check_config_limits(self)  # before any tensor: a model file's config is untrusted

    @classmethod
    def paper(cls, **overrides) -> UNetConfig:
        """The paper's network: depth 4, 64 base channels, dropout 0.5, no normalisation."""
        return cls(**{"depth": 4, "base_channels": 64, "dropout": 0.5, "norm": None, **overrides})

    @classmethod
    def default(cls, **overrides) -> UNetConfig:
        """The smaller default network for laptops: depth 4, 16 base channels, batch norm."""
        settings = {"depth": 4, "base_channels": 16, "norm": "batch", "dropout": 0.0}
        return cls(**{**settings, **overrides})

    @property
    def seamless(self) -> bool:
        """True when overlap-tile prediction gives the same result whatever the tile size."""
        return self.norm not in TILE_DEPENDENT_NORMS

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        """Rebuild a config; unknown keys or invalid values raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"a UNetConfig must be read from a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig keys: {', '.join(map(str, unknown))}")
        try:
            return cls(**data)
        except TypeError as err:  # pragma: no cover - all keys are known; kept for clarity
            raise ValueError(str(err)) from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> UNetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"UNetConfig JSON is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def channels(self, level: int) -> int:
        """Feature channels at ``level`` (0 = full resolution, ``depth`` = bottom)."""
        return self.base_channels * 2**level


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------


def _norm_layer(kind: str | None, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        per_group = max(d for d in range(1, GROUP_SIZE + 1) if channels % d == 0)
        return nn.GroupNorm(channels // per_group, channels)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional normalisation and) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: str, norm: str | None):
        pad = 1 if padding == "same" else 0
        bias = norm is None
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=bias),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=bias),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


def center_crop(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Center crop of (N, C, H, W) ``x`` to (rows, cols); a view, no copy."""
    top = (x.shape[-2] - rows) // 2
    left = (x.shape[-1] - cols) // 2
    return x[..., top : top + rows, left : left + cols]


class UNet(nn.Module):
    """The U-Net; ``model(x)`` maps (N, C, H, W) float32 to (N, n_classes, h, w) logits.

    ``h = output_size(H, depth, padding)``: ``H - 2 * border(depth)`` for ``"valid"`` nets (H
    from :func:`valid_input_size`), ``H`` for ``"same"`` nets (H a multiple of ``2**depth``).
    Weights are initialised with He's rule, normal with std ``sqrt(2 / N)``, ``N`` the number of
    inputs of one neuron (``k * k * in_channels`` for a k x k convolution); biases are zero.

    Parameters
    ----------
    config : UNetConfig, optional
        The architecture; ``UNetConfig()`` when omitted.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        config = UNetConfig() if config is None else config
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet needs a UNetConfig, got {type(config).__name__}")
        self.config = config
        c, opts = config.channels, {"padding": config.padding, "norm": config.norm}
        self.down = nn.ModuleList(
            DoubleConv(config.in_channels if lvl == 0 else c(lvl - 1), c(lvl), **opts)
            for lvl in range(config.depth)
        )
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bottom = DoubleConv(c(config.depth - 1), c(config.depth), **opts)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.upconv = nn.ModuleList(
            nn.ConvTranspose2d(c(lvl + 1), c(lvl), 2, stride=2) for lvl in reversed(range(config.depth))
        )
        self.up = nn.ModuleList(
            DoubleConv(2 * c(lvl), c(lvl), **opts) for lvl in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(c(0), config.n_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation, std ``sqrt(2 / N)`` with ``N`` the inputs of one neuron.

        For a k x k convolution ``N = k * k * in_channels``. A 2x2 up-convolution with stride 2
        feeds each output pixel from exactly one input pixel per channel, so there ``N =
        in_channels``. Normalisation layers start as the identity, biases at zero.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                k_rows, k_cols = module.kernel_size
                fan_in = k_rows * k_cols * module.in_channels
            elif isinstance(module, nn.ConvTranspose2d):
                fan_in = module.in_channels
            else:
                if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                continue
            with torch.no_grad():
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript (package export) skips the Python checks
            self.check_input(x)
        return self.logits(x)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` with a hint unless ``x`` is (N, in_channels, H, W) of valid sides."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"UNet expects (N, {self.config.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        for size in x.shape[-2:]:
            output_size(size, self.config.depth, self.config.padding)  # raises with a hint

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's computation without the input checks (TorchScript-compilable)."""
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottom(x))
        level = len(skips)
        for upconv, block in zip(self.upconv, self.up):  # noqa: B905 - TorchScript has no strict=
            level -= 1
            skip = skips[level]
            x = upconv(x)
            x = block(torch.cat([center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1))
        return self.head(x)


def inference_copy(model: UNet) -> UNet:
    """A copy of ``model`` for prediction only: in eval mode, each batch norm folded into the
    convolution before it.

    In eval mode a batch norm is a fixed per-channel affine map, so folding it into the
    convolution's weights and bias gives the same outputs to float rounding (about 1e-5) with
    one pass over the feature maps fewer: less prediction time on the CPU, measured by
    ``benchmarks/bench_batchnorm_fold.py`` (docs/benchmarks/batchnorm_fold.md). The copy has no
    batch-norm parameters or statistics: it is never trained or saved. ``model`` itself is not
    changed.
    """
    net = copy.deepcopy(model).eval()
    if net.config.norm != "batch":
        return net
    for block in (*net.down, net.bottom, *net.up):
        for i, layer in enumerate(block):
            if isinstance(layer, nn.BatchNorm2d):
                block[i - 1] = fuse_conv_bn_eval(block[i - 1], layer)
                block[i] = nn.Identity()
    return net


def count_conv_layers(model: nn.Module) -> int:
    """Number of convolutional layers (3x3, 2x2 up- and 1x1 convolutions)."""
    return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
