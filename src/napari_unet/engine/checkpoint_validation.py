"""Checking what a model file holds: the payload dict of :func:`torch.load` turned into a
:class:`~napari_unet.engine.checkpoint_format.Checkpoint` and weights, and the network built from
them, each problem one :class:`~napari_unet.engine.checkpoint_format.CheckpointError` sentence
that names the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_unet.engine.checkpoint_format import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    first_line,
)
from napari_unet.engine.limits import normalization_percentiles
from napari_unet.engine.metadata import diameter_and_extra, weights_digest

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNet, UNetConfig

__all__ = ["check_channels", "network_from_state_dict", "parse_payload"]


def parse_payload(payload: Any, path: Path) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    """The checked :class:`Checkpoint` and weights (name -> tensor) of the ``payload`` read from
    ``path``; raises :class:`CheckpointError` naming ``path``."""
    from napari_unet.engine.model import UNetConfig

    if not isinstance(payload, dict):
        raise CheckpointError(
            f"the model file {path} is not a napari-unet checkpoint: it holds a "
            f"{type(payload).__name__}, not a dict"
        )
    if "format" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise CheckpointError(
                f"the model file {path} holds bare weights (a state_dict) without the model's "
                f"configuration; napari-unet opens only files written by save_checkpoint"
            )
        raise CheckpointError(
            f"the model file {path} is not a napari-unet checkpoint (it has no 'format' entry)"
        )
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"the model file {path} is of format {payload['format']!r}, not a napari-unet "
            f"checkpoint"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"the model file {path} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"the model file {path} was written by a newer napari-unet (format version "
            f"{version}; this version reads up to {FORMAT_VERSION}); update napari-unet to open it"
        )
    try:
        config = UNetConfig.from_dict(payload.get("config"))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"the model file {path} has an invalid model configuration: {first_line(err)}"
        ) from None
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"the model file {path} holds no weights")
    bad = [
        k
        for k, v in state_dict.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        raise CheckpointError(
            f"the model file {path} has malformed weights: {bad[0]!r} is not a named tensor"
        )
    digest = payload.get("weights_sha256")
    if digest is not None and digest != weights_digest(state_dict):
        raise CheckpointError(
            f"the model file {path} is corrupt: its weights do not match the checksum saved with "
            f"them"
        )
    meta: dict[str, Any] = {}
    for key, kind, default in (
        ("normalization", dict, {}),
        ("training", dict, {}),
        ("history", list, []),
        ("extra", dict, {}),
    ):
        value = payload.get(key)
        if value is None:
            value = default
        if not isinstance(value, kind):
            raise CheckpointError(
                f"the model file {path} has a malformed {key!r} entry (a {type(value).__name__}, "
                f"expected a {kind.__name__})"
            )
        meta[key] = value
    try:
        if meta["normalization"]:
            normalization_percentiles(meta["normalization"])
        meta["diameter"], meta["extra"] = diameter_and_extra(
            payload.get("diameter"), meta["extra"], strict=False
        )
    except ValueError as err:
        raise CheckpointError(
            f"the model file {path} has invalid metadata: {first_line(err)}"
        ) from None
    checkpoint = Checkpoint(
        config=config,
        format_version=version,
        path=path,
        napari_unet_version=str(payload.get("napari_unet_version", "")),
        saved_at=str(payload.get("saved_at", "")),
        **meta,
    )
    return checkpoint, state_dict


def check_channels(checkpoint: Checkpoint, expect_in_channels: int | None) -> None:
    """Raise :class:`CheckpointError` when the model reads another number of channels than
    ``expect_in_channels`` (``None``: any)."""
    if expect_in_channels is None or int(expect_in_channels) == checkpoint.in_channels:
        return
    n_model, n_image = checkpoint.in_channels, int(expect_in_channels)
    raise CheckpointError(
        f"the model file {checkpoint.path} was trained for {n_model} input "
        f"channel{'s' if n_model != 1 else ''}, the image has {n_image} "
        f"channel{'s' if n_image != 1 else ''}"
    )


def network_from_state_dict(config: UNetConfig, state_dict: Any, *, where: str) -> UNet:
    """Build ``UNet(config)`` holding ``state_dict``, checked before any memory is spent.

    The shapes are compared on the meta device first, the weights are loaded strictly and must
    be finite. ``where`` names the source in the messages (e.g. ``"the model file x.pt"``).
    Returns the network on the CPU; raises :class:`CheckpointError` with one sentence.
    """
    from napari_unet.engine.model import UNet

    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{where} holds no weights")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise CheckpointError(f"{where} has malformed weights (not a dict of named tensors)")
    try:
        with torch.device("meta"):  # shapes only: no memory until the weights are known to fit
            expected = UNet(config).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{where} has a model configuration that cannot be built: "
            f"{first_line(err)}"
        ) from None
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})")
    if problems:
        raise CheckpointError(
            f"{where} has weights that do not fit its model configuration: "
            + "; ".join(problems)
        )
    model = UNet(config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{where} has weights that cannot be loaded: {first_line(err)}"
        ) from None
    bad = [
        k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise CheckpointError(
            f"{where} has weights that are not finite (NaN or infinity, e.g. in "
            f"{bad[0]}); the training that wrote it diverged"
        )
    return model
