"""The model on dask workers: a model file's bytes scattered once (:class:`ModelPayload`),
loaded once per worker thread (:func:`worker_model`). Used by
:mod:`~napari_unet.engine.blockwise`, which re-exports both names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_WORKER_MODELS", "ModelPayload", "worker_model"]

_WORKER_MODELS: dict[str, Any] = {}


@dataclass(frozen=True, eq=False)
class ModelPayload:
    """A model file's bytes, to be scattered to the workers once; loaded (and kept) once per
    worker process by :func:`worker_model`."""

    data: bytes
    key: str = field(default="")

    @classmethod
    def from_model(cls, model: Any) -> ModelPayload:
        """The bytes of ``model`` (a path, ``"default"``/None, a package, or a network) as a
        model file: a model file's own bytes; a package (which the workers' loader of model
        files does not read) or a network saved as one."""
        from pathlib import Path

        from napari_unet.engine.models import bundled_model_path, load_model
        from napari_unet.engine.packages import is_package_path

        if model is None or (isinstance(model, str) and model == "default"):
            model = bundled_model_path()
        if isinstance(model, (str, os.PathLike)) and Path(model).is_file() and not is_package_path(model):
            data = Path(model).read_bytes()
        else:
            from napari_unet.engine.checkpoint_write import save_checkpoint

            net, checkpoint = load_model(model)
            with tempfile.TemporaryDirectory() as folder:
                path = save_checkpoint(
                    os.path.join(folder, "model.pt"), net,
                    diameter=checkpoint.diameter, normalization=checkpoint.normalization,
                )
                data = open(path, "rb").read()
        return cls(data, hashlib.sha256(data).hexdigest())


#: models kept per worker process: one per thread that asked (the oldest dropped first)
MAX_WORKER_MODELS = 8


def worker_model(payload: Any) -> Any:
    """The ``(UNet, Checkpoint)`` of a :class:`ModelPayload`, loaded once per worker thread
    (other models pass through).

    Once per *thread*, not per process: dask runs several blocks at a time in the threads of
    one process (its threaded scheduler, ``processes=False`` clusters), and a prediction moves
    its network between memory layouts and devices, so two threads must not share one."""
    import threading

    if not isinstance(payload, ModelPayload):
        return payload
    key = f"{payload.key}:{threading.get_ident()}"
    cached = _WORKER_MODELS.get(key)
    if cached is None:
        from napari_unet.engine.checkpoint_read import load_checkpoint

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.pt")
            with open(path, "wb") as f:
                f.write(payload.data)
            cached = load_checkpoint(path, device="cpu")
        for other in [k for k in _WORKER_MODELS if not k.startswith(payload.key)]:
            _WORKER_MODELS.pop(other, None)  # another model's: not needed any more
        while len(_WORKER_MODELS) >= MAX_WORKER_MODELS:
            _WORKER_MODELS.pop(next(iter(_WORKER_MODELS)), None)
        _WORKER_MODELS[key] = cached
    return cached
