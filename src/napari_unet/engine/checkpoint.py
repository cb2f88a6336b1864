"""Model files: the configuration beside the weights, versioned, written atomically, loaded safely.

A checkpoint is one file written with :func:`torch.save` holding a plain dict::

    {"format": "napari-unet", "format_version": 1,
     "config": {...},                 # UNetConfig.to_dict()
     "state_dict": {name: tensor},    # CPU tensors
     "weights_sha256": "...",         # checksum of the weights, to detect corruption
     "diameter": 27.7,                # the training cells' median diameter (pixels) or None
     "normalization": {...}, "training": {...}, "history": [{...}, ...], "extra": {...},
     "napari_unet_version": "...", "saved_at": "2025-01-01T12:00:00+00:00"}

Files written before the diameter had its own entry kept it in ``extra["diameter"]``; it is read
from there (and moved out of ``extra``) when there is no ``"diameter"`` entry.

Everything except the tensors is JSON-like data (dicts with string keys, lists, strings, numbers,
booleans, None), so the file is read with ``torch.load(weights_only=True)``: PyTorch's restricted
unpickler builds tensors and plain containers only and refuses any other object, so a model file
can never run code when it is opened. Every problem with a file raises :class:`CheckpointError`
(a ``ValueError``) with one sentence that names the file and says what is wrong.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_unet.engine import atomic
from napari_unet.engine.limits import normalization_percentiles
from napari_unet.engine.metadata import diameter_and_extra, plain, weights_digest

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNet, UNetConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "network_from_state_dict",
    "read_checkpoint_metadata",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "napari-unet"
#: The newest format this version writes and reads.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A model file is missing, unreadable, unsafe, foreign or does not fit the data."""


@dataclass(frozen=True)
class Checkpoint:
    """Everything in a model file except the weights.

    Attributes
    ----------
    config : UNetConfig
        The architecture; ``UNet(config)`` rebuilds the network.
    normalization : dict
        How images were normalised for training (e.g. the percentiles of ``tiling.normalize``).
    training : dict
        Training parameters (e.g. ``TrainConfig`` as a dict, the cell diameter).
    history : list of dict
        One record per logged step or validation (loss, metrics, ...).
    diameter : float or None
        The median cell diameter (pixels) of the training data, which prediction rescales
        images to (:mod:`~napari_unet.engine.diameter`); ``None`` when unknown.
    extra : dict
        Anything else (a name, a description, the data it was trained on, ...).
    format_version : int
        The file's format version.
    path : Path or None
        The file it was read from.
    napari_unet_version, saved_at : str
        The napari-unet version that wrote the file and when (ISO 8601, UTC).
    """

    config: UNetConfig
    normalization: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    diameter: float | None = None
    format_version: int = FORMAT_VERSION
    path: Path | None = None
    napari_unet_version: str = ""
    saved_at: str = ""

    @property
    def in_channels(self) -> int:
        """Image channels the model reads."""
        return int(self.config.in_channels)

    @property
    def n_classes(self) -> int:
        """Classes the model predicts."""
        return int(self.config.n_classes)


# --------------------------------------------------------------------------------------------
# saving


def save_checkpoint(
    path: str | os.PathLike,
    model: UNet,
    *,
    normalization: dict | None = None,
    training: dict | None = None,
    history: list[dict] | None = None,
    extra: dict | None = None,
    diameter: float | None = None,
) -> Path:
    """Write ``model`` with its configuration and metadata to ``path``, atomically.

    The file is written to a temporary file in the same folder, flushed and fsynced, then moved
    onto ``path`` with :func:`os.replace`, so ``path`` always holds either the previous complete
    file or the new complete file, never a partial one, even if the process dies while writing
    (:mod:`~napari_unet.engine.atomic`: the file's mode follows the umask, and temporary files
    that killed processes left for ``path`` are removed first).

    Parameters
    ----------
    path : str or PathLike
        Target file (conventionally ``*.pt``); missing parent folders are created.
    model : UNet
        The network; its ``config`` is stored beside CPU copies of its weights.
    normalization, training, extra : dict, optional
        JSON-like metadata (see the module docstring). numpy scalars are converted to Python
        numbers and tuples to lists.
    history : list of dict, optional
        Training history, one dict per record.
    diameter : float, optional
        The training cells' median diameter in pixels (an ``extra["diameter"]`` is taken as
        this when ``diameter`` is not given).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError
        If the model has no ``config`` or the metadata is not plain data; nothing is written.
    ValueError
        If the diameter or the normalisation percentiles are not valid; nothing is written.
    OSError
        If the file cannot be written (a sentence that names ``path``, e.g. a full disk).
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"save_checkpoint needs a UNet with a .config, got {type(model).__name__}")
    if history is not None and not (
        isinstance(history, (list, tuple)) and all(isinstance(h, dict) for h in history)
    ):
        raise TypeError("checkpoint history must be a list of dicts")
    from napari_unet.engine._version import __version__

    diameter, extra = diameter_and_extra(diameter, extra, strict=True)
    normalization = plain(dict(normalization or {}), "normalization")
    if normalization:
        normalization_percentiles(normalization)
    state_dict = {
        name: tensor.detach().cpu().clone() if tensor.is_cuda else tensor.detach().cpu()
        for name, tensor in model.state_dict().items()
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": plain(config.to_dict(), "config"),
        "state_dict": state_dict,
        "weights_sha256": weights_digest(state_dict),
        "normalization": normalization,
        "training": plain(dict(training or {}), "training"),
        "history": plain(list(history or []), "history"),
        "extra": plain(extra, "extra"),
        "diameter": diameter,
        "napari_unet_version": str(__version__),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temps(path)
    tmp = atomic.new_temp(path)
    try:
        with open(tmp, "wb") as fh:
            try:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
            except RuntimeError as err:  # torch's writer reports a full disk as RuntimeError
                raise _save_error(path, err) from None
            except OSError as err:
                raise atomic.write_error(path, err) from None
    except BaseException:
        atomic.discard([tmp])
        raise
    atomic.commit([(tmp, path)])
    atomic.fsync_folder(path.parent)
    return path


def _save_error(path: Path, err: RuntimeError) -> OSError:
    """The sentence for a failed ``torch.save``: "the disk is full" when it is."""
    import shutil

    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free < 2**20:
            return OSError(f"could not write the model file {path}: the disk is full")
    return OSError(f"could not write the model file {path}: {_first_line(err)}")


# --------------------------------------------------------------------------------------------
# loading


def _first_line(err: BaseException) -> str:
    """The first sentence of an exception's message, for use inside one of our sentences."""
    lines = str(err).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return text[:160] or type(err).__name__


#: pickle instructions that import or call something
_CODE_OPCODES = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "EXT1",
     "EXT2", "EXT4"}
)


def _asks_for_code(path: Path) -> bool:
    """Whether ``path`` is a whole pickle with an instruction that imports or calls something.

    Read with :func:`pickletools.genops`, which runs nothing; bytes that are no pickle (a text
    file, an image) are not code, even when one of them looks like such an instruction.
    """
    import pickletools

    found = False
    try:
        with open(path, "rb") as file:
            for opcode, _arg, _pos in pickletools.genops(file):
                found = found or opcode.name in _CODE_OPCODES
    except Exception:  # pickletools raises ValueError and others on junk
        return False
    return found


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"the model file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"the model file {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"the model file {path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. notes about the pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        operand = re.search(r"Unsupported operand (\d+)", message)
        if operand and not _asks_for_code(path):
            # torch stopped at bytes it does not read, and they hold no code: junk (a text file,
            # an image), not a hostile file
            raise CheckpointError(
                f"the model file {path} could not be read: it is not a PyTorch file, or it is "
                f"corrupt"
            ) from None
        if "weights only load failed" in message.lower():
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
            detail = f"it asks for {found.group(1)}" if found else ""
            raise CheckpointError(
                f"the model file {path} was refused: it holds Python objects other than tensors "
                f"and plain data, and loading those could run code"
                + (f" ({detail})" if detail else "")
                + "; napari-unet only opens files written by save_checkpoint"
            ) from None
        raise CheckpointError(
            f"the model file {path} could not be read: it is not a PyTorch file, or it is "
            f"corrupt ({_first_line(err)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"the model file {path} could not be read: it is truncated, corrupt or not a PyTorch "
            f"file ({type(err).__name__}: {_first_line(err)})"
        ) from None
    except Exception as err:  # torch raises many types (KeyError, ValueError, ...) on junk
        raise CheckpointError(
            f"the model file {path} could not be read: it is not a PyTorch file, or it is "
            f"corrupt ({type(err).__name__}: {_first_line(err)})"
        ) from None


def _parse(payload: Any, path: Path) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
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
            f"the model file {path} has an invalid model configuration: {_first_line(err)}"
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
            f"the model file {path} has invalid metadata: {_first_line(err)}"
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


def _check_channels(checkpoint: Checkpoint, expect_in_channels: int | None) -> None:
    if expect_in_channels is None or int(expect_in_channels) == checkpoint.in_channels:
        return
    n_model, n_image = checkpoint.in_channels, int(expect_in_channels)
    raise CheckpointError(
        f"the model file {checkpoint.path} was trained for {n_model} input "
        f"channel{'s' if n_model != 1 else ''}, the image has {n_image} "
        f"channel{'s' if n_image != 1 else ''}"
    )


def read_checkpoint_metadata(
    path: str | os.PathLike, *, expect_in_channels: int | None = None
) -> Checkpoint:
    """Read and check a model file without building the network.

    Parameters
    ----------
    path : str or PathLike
        A file written by :func:`save_checkpoint`.
    expect_in_channels : int, optional
        Channels of the image the model is meant for; a mismatch raises.

    Returns
    -------
    Checkpoint
        The configuration and metadata.

    Raises
    ------
    CheckpointError
        For every problem with the file; see :func:`load_checkpoint`.
    """
    path = Path(path)
    checkpoint, _ = _parse(_torch_load(path), path)
    _check_channels(checkpoint, expect_in_channels)
    return checkpoint


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    expect_in_channels: int | None = None,
) -> tuple[UNet, Checkpoint]:
    """Load a model file written by :func:`save_checkpoint`.

    The file is read with ``torch.load(weights_only=True, map_location="cpu")``, so it cannot run
    code; the network is rebuilt from the stored configuration, the weights are loaded strictly
    and the model is moved to ``device`` in eval mode.

    Parameters
    ----------
    path : str or PathLike
        The model file.
    device : str or torch.device
        Where to put the model (``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``).
    expect_in_channels : int, optional
        Channels of the image the model is meant for; a mismatch raises.

    Returns
    -------
    model : UNet
        The network, in eval mode on ``device``.
    checkpoint : Checkpoint
        Its configuration and metadata.

    Raises
    ------
    CheckpointError
        If the file is missing, empty, truncated or corrupt (including weights that fail their
        checksum), not a PyTorch file, holds objects that could run code, is not a napari-unet
        checkpoint, was written by a newer format version, has an invalid configuration or
        weights that do not fit it, or was trained for another number of input channels than
        ``expect_in_channels``, or if its weights are not finite (a diverged training).
    """
    from napari_unet.engine.device import resolve_device

    path = Path(path)
    checkpoint, state_dict = _parse(_torch_load(path), path)
    _check_channels(checkpoint, expect_in_channels)
    model = network_from_state_dict(checkpoint.config, state_dict, where=f"the model file {path}")
    model.to(resolve_device(device))
    model.eval()
    return model, checkpoint


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
            f"{_first_line(err)}"
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
            f"{where} has weights that cannot be loaded: {_first_line(err)}"
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
