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

The work is split by job; this module keeps every public name importable from here:

- :mod:`~napari_unet.engine.checkpoint_format`: the format name and version, :class:`Checkpoint`,
  :class:`CheckpointError`;
- :mod:`~napari_unet.engine.checkpoint_write`: :func:`save_checkpoint`;
- :mod:`~napari_unet.engine.checkpoint_read`: :func:`load_checkpoint`,
  :func:`read_checkpoint_metadata`;
- :mod:`~napari_unet.engine.checkpoint_validation`: the payload checked, the network built
  (:func:`network_from_state_dict`);
- :mod:`~napari_unet.engine.checkpoint_safety`: whether a refused file asks to run code.
"""

from napari_unet.engine.checkpoint_format import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
)
from napari_unet.engine.checkpoint_read import load_checkpoint, read_checkpoint_metadata
from napari_unet.engine.checkpoint_validation import network_from_state_dict
from napari_unet.engine.checkpoint_write import save_checkpoint

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
