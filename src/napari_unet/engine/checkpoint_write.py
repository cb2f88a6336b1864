"""Writing model files: :func:`save_checkpoint`, atomically (a complete previous or new file,
never a partial one), in the format of :mod:`~napari_unet.engine.checkpoint`."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from napari_unet.engine import atomic
from napari_unet.engine.checkpoint_format import CHECKPOINT_FORMAT, FORMAT_VERSION, first_line
from napari_unet.engine.limits import normalization_percentiles
from napari_unet.engine.metadata import diameter_and_extra, plain, weights_digest

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNet

__all__ = ["save_checkpoint"]


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
    return OSError(f"could not write the model file {path}: {first_line(err)}")
