"""Naming a model: the bundled default, a model file, a network, or a (network, metadata) pair.

:func:`load_model` is the one place that turns any of these into ``(UNet, Checkpoint)``; the
command line, the widgets and :func:`~napari_unet.engine.segment.iter_segment` go through it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.checkpoint_format import Checkpoint
    from napari_unet.engine.model import UNet

__all__ = [
    "bundled_model_path",
    "load_model",
    "model_from_weights",
    "model_normalization",
    "require_unet",
]

_BUNDLED = ("models", "default.pt")


def load_model(model: Any = None, *, device: Any = "cpu") -> tuple[UNet, Checkpoint]:
    """Return a network and its metadata from any of the ways a model can be named.

    Parameters
    ----------
    model : None, "default", str or os.PathLike, PackageSource, UNet, or (UNet, Checkpoint)
        ``None`` or ``"default"``: the bundled model ``napari_unet/models/default.pt``. A path:
        a model file written by :func:`~napari_unet.engine.checkpoint.save_checkpoint` (e.g. by
        ``napari-unet train``), or a BioImage.IO package (``.zip``, its ``rdf.yaml``; see
        :func:`~napari_unet.engine.packages.load_package`, which a
        :class:`~napari_unet.engine.packages.PackageSource` also goes to, with the user's
        decision about running a foreign package's code). A bare :class:`~napari_unet.engine.model.UNet`: used as is, with
        default metadata (percentile normalisation 1-99.8, no training diameter). A
        ``(UNet, Checkpoint)`` pair (what this function returns) is passed through.
    device : str or torch.device
        Where the weights of a loaded file are put (``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    (UNet, Checkpoint)
        Or, for a foreign BioImage.IO package, ``(ForeignModel, Checkpoint)``
        (:mod:`~napari_unet.engine.foreign`): ``config.in_channels`` and ``config.n_classes`` as
        for a UNet, no training diameter.

    Raises
    ------
    FileNotFoundError
        The file does not exist, or the bundled model is not installed.
    napari_unet.engine.checkpoint.CheckpointError
        The file is not a napari-unet model, or is corrupt or incompatible
        (:class:`~napari_unet.engine.packages.PackageError` for packages).
    TypeError
        ``model`` is none of the above.
    """
    from napari_unet.engine.checkpoint_read import load_checkpoint
    from napari_unet.engine.foreign import ForeignModel
    from napari_unet.engine.model import UNet
    from napari_unet.engine.packages import PackageSource, is_package_path, load_package

    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], (UNet, ForeignModel)):
        return model[0], model[1]
    if isinstance(model, PackageSource):
        return load_package(model, device=device)
    if isinstance(model, UNet):
        return model, _default_checkpoint(model)
    if model is None or (isinstance(model, str) and model == "default"):
        path = bundled_model_path()
        if path is None:
            raise FileNotFoundError(
                "the bundled model is not installed (napari_unet/models/default.pt is missing); "
                "pass a model file instead, e.g. one written by `napari-unet train`"
            )
        return load_checkpoint(path, device=device)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        if is_package_path(path) or (path.is_dir() and (path / "rdf.yaml").is_file()):
            return load_package(path, device=device)
        if path.is_dir():
            raise FileNotFoundError(f"the model path is a folder, not a model file: {path}")
        return load_checkpoint(path, device=device)
    raise TypeError(
        "model must be None, 'default', a path to a model file or package, a UNet or a (UNet, Checkpoint) "
        f"pair, not {type(model).__name__}"
    )


def bundled_model_path() -> Path | None:
    """The path of the bundled default model, or ``None`` when it is not installed."""
    from importlib.resources import files

    resource = files("napari_unet").joinpath(*_BUNDLED)
    try:
        path = Path(os.fspath(resource))
    except TypeError:  # pragma: no cover - a zipped install; not supported for models
        return None
    return path if path.is_file() else None


def _default_checkpoint(net: UNet) -> Checkpoint:
    """Metadata for a network that came without a model file: percentile normalisation 1-99.8
    (the engine's default), no training diameter."""
    from napari_unet.engine.checkpoint_format import Checkpoint
    from napari_unet.engine.normalization import DEFAULT_NORMALIZATION

    return Checkpoint(config=net.config, normalization=dict(DEFAULT_NORMALIZATION))


def model_from_weights(config: Any, state_dict: dict) -> UNet:
    """A new network of ``config`` holding ``state_dict`` (e.g. a training run's
    ``ModelSnapshot``), on the CPU in eval mode; the weights are loaded strictly."""
    from napari_unet.engine.model import UNet

    net = UNet(config)
    net.load_state_dict(state_dict)
    net.eval()
    return net


def model_normalization(checkpoint: Any) -> dict | None:
    """The percentile normalisation stored with a model (``{"low": .., "high": ..}``), or
    ``None`` to let the engine use its default."""
    norm = getattr(checkpoint, "normalization", None)
    return dict(norm) if isinstance(norm, dict) and norm else None


#: why :func:`require_unet` refuses a foreign network by default (training and export)
ONLY_OWN_UNET_TRAINS = (
    ": napari-unet runs it but fine-tunes and exports only its own U-Net (the bundled model, a "
    "model file, or a package exported by napari-unet)"
)


def require_unet(net: Any, checkpoint: Any, *, because: str = ONLY_OWN_UNET_TRAINS) -> None:
    """Raise ``ValueError`` unless ``net`` is napari-unet's U-Net (what training needs): a
    foreign BioImage.IO package runs, but cannot be fine-tuned here. ``because`` ends the
    sentence "'<name>' is a foreign BioImage.IO package..."."""
    from napari_unet.engine.model import UNet

    if not isinstance(net, UNet):
        name = (getattr(checkpoint, "extra", None) or {}).get("name", "the model")
        raise ValueError(f"{name!r} is a foreign BioImage.IO package{because}")
