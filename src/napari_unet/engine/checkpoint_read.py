"""Reading model files: :func:`load_checkpoint` (the network and its metadata) and
:func:`read_checkpoint_metadata` (the metadata alone), with ``torch.load(weights_only=True)`` so
that a file can never run code; every problem is one
:class:`~napari_unet.engine.checkpoint_format.CheckpointError` sentence that names the file."""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_unet.engine.checkpoint_format import Checkpoint, CheckpointError, first_line
from napari_unet.engine.checkpoint_safety import asks_for_code
from napari_unet.engine.checkpoint_validation import (
    check_channels,
    network_from_state_dict,
    parse_payload,
)

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNet

__all__ = ["load_checkpoint", "read_checkpoint_metadata", "read_payload"]


def read_payload(path: Path) -> Any:
    """What :func:`torch.load` reads from ``path`` with ``weights_only=True`` (tensors and plain
    data only); raises :class:`CheckpointError` for a missing, empty, unreadable or hostile file."""
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
        if operand and not asks_for_code(path):
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
            f"corrupt ({first_line(err)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"the model file {path} could not be read: it is truncated, corrupt or not a PyTorch "
            f"file ({type(err).__name__}: {first_line(err)})"
        ) from None
    except Exception as err:  # torch raises many types (KeyError, ValueError, ...) on junk
        raise CheckpointError(
            f"the model file {path} could not be read: it is not a PyTorch file, or it is "
            f"corrupt ({type(err).__name__}: {first_line(err)})"
        ) from None


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
    checkpoint, _ = parse_payload(read_payload(path), path)
    check_channels(checkpoint, expect_in_channels)
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
    checkpoint, state_dict = parse_payload(read_payload(path), path)
    check_channels(checkpoint, expect_in_channels)
    model = network_from_state_dict(checkpoint.config, state_dict, where=f"the model file {path}")
    model.to(resolve_device(device))
    model.eval()
    return model, checkpoint
