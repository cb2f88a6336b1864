"""The plain-data rules of a model file: JSON-like metadata, the training diameter, and the
checksum of the weights (used by :mod:`~napari_unet.engine.checkpoint` when saving and loading).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch

__all__ = ["diameter_and_extra", "plain", "weights_digest"]


def plain(value: Any, where: str) -> Any:
    """Return ``value`` as JSON-like data, or raise ``TypeError`` naming where the problem is.

    numpy scalars become Python numbers and tuples become lists; anything else that is not a
    dict with string keys, list, str, int, float, bool or None is refused.
    """
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, np.generic) and isinstance(value.item(), (bool, int, float, str)):
        return value.item()
    for base in (bool, int, float, str):  # subclasses (IntEnum, ...) would not unpickle safely
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"checkpoint metadata keys must be strings; {where} has the key {key!r}"
                )
            out[key] = plain(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"checkpoint metadata must be plain data (dict, list, str, int, float, bool, None); "
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}"
    )


def diameter_and_extra(
    diameter: Any, extra: dict | None, *, strict: bool
) -> tuple[float | None, dict]:
    """The diameter entry and ``extra`` without the ``"diameter"`` key older files kept there.

    ``diameter`` wins over ``extra["diameter"]``. A value that is not a finite number of at
    least :data:`~napari_unet.engine.diameter.MIN_DIAMETER` pixels raises ``ValueError`` when
    ``strict`` (saving; reading the typed entry) and counts as unknown otherwise (reading an
    older file's ``extra["diameter"]``).
    """
    from napari_unet.engine.diameter import MIN_DIAMETER

    extra = dict(extra or {})
    legacy = extra.pop("diameter", None)
    strict = strict or diameter is not None
    value = diameter if diameter is not None else legacy
    if value is None:
        return None, extra
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number >= MIN_DIAMETER):
        if strict:
            raise ValueError(
                f"the diameter must be a positive number of pixels, at least {MIN_DIAMETER:g}, "
                f"not {value!r}"
            )
        return None, extra
    return number, extra


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
