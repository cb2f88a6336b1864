"""Opening BioImage.IO model packages (a ``.zip``, or its ``rdf.yaml`` / ``bioimageio.yaml``).

Two kinds of package are opened, and loading stays as safe as for model files:

* **a package exported by napari-unet** (:mod:`~napari_unet.engine.bioimageio`): its
  ``pytorch_state_dict`` architecture is ``napari_unet.engine.bioimageio.build_unet``. Nothing is
  imported from the package: the keyword arguments are validated as a :class:`UNetConfig`
  (bounds of :mod:`~napari_unet.engine.limits`), the weights read with
  ``torch.load(weights_only=True)`` after the spec library checked their sha256, and this
  plugin's own U-Net built from them; the training diameter and the percentiles come back from
  the package. The result is the ``(UNet, Checkpoint)`` pair of a model file: the same network,
  diameter and normalisation.
* **a foreign 2D package** (the zoo's U-Nets): run by ``bioimageio.core``
  (:mod:`~napari_unet.engine.foreign`). Its weights are a program from the package: a
  ``pytorch_state_dict`` architecture is Python code (imported from the package's source file or
  from a module it names) and TorchScript is a compiled program. Either runs only when the user
  passes ``trust_code=True`` (``--trust-package-code`` on the command line, *run package code*
  in the Segment panel); without it the package is refused with a sentence that says so.

Every problem (a corrupt zip, a description that does not validate, a missing or altered
weights file, a 3D model, outputs of unknown meaning, an architecture that cannot be imported)
raises :class:`PackageError`, one sentence naming the package.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_unet.engine.checkpoint_format import CheckpointError

__all__ = [
    "PackageError",
    "PackageSource",
    "is_package_path",
    "load_package",
    "open_description",
]

_YAML_NAMES = ("rdf.yaml", "bioimageio.yaml")


class PackageError(CheckpointError):
    """A BioImage.IO package that this plugin cannot open or run; the message says why."""


@dataclass(frozen=True)
class PackageSource:
    """A package path with the user's decision about running its code.

    Parameters
    ----------
    path : str or PathLike
        The ``.zip`` or its ``rdf.yaml``.
    trust_code : bool
        Allow a foreign package's own code (its Python architecture or TorchScript program) to
        run; packages exported by napari-unet never need it.
    """

    path: str | os.PathLike
    trust_code: bool = False


def is_package_path(path: str | os.PathLike) -> bool:
    """True for a ``.zip`` or a ``*.yaml`` / ``*.yml`` file name (a package's description)."""
    name = Path(path).name.lower()
    return name.endswith((".zip", ".yaml", ".yml"))


def first_error(problem: Any) -> str:
    """One line for a user: the first error of a bioimageio.spec validation summary or of a
    pydantic ``ValidationError`` as ``field: message``; the first lines of any other error."""
    details = getattr(problem, "details", None)
    if details is not None:  # a ValidationSummary
        for detail in details:
            for error in getattr(detail, "errors", []):
                where = ".".join(str(p) for p in getattr(error, "loc", ()) if p != "root")
                message = str(getattr(error, "msg", error)).strip().splitlines()[0]
                return (f"{where}: {message}" if where else message)[:300]
        return "it does not validate"
    errors = getattr(problem, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            message = str(first.get("msg", "")).removeprefix("Value error, ")
            return (f"{where}: {message}" if where else message)[:300]
        except Exception:  # not pydantic's shape after all
            pass
    lines = [line.strip() for line in str(problem).splitlines() if line.strip()]
    return " ".join(lines[:3])[:300] or type(problem).__name__


def _refuse_missing_files(path: Path) -> None:
    """Raise :class:`PackageError` naming the files that a package's description names (weights,
    sources, documentation, covers) but the package lacks: for a zip bioimageio.spec reports them
    only as "expected str, bytes or os.PathLike object, not NoneType", for a folder (its
    ``rdf.yaml`` given, or the folder) as a pydantic error about URLs and relative paths. ``path``
    is the zip or the description file. Does nothing when it cannot tell."""
    import zipfile

    try:
        try:
            from yaml import safe_load
        except ImportError:  # bioimageio.spec's own YAML library
            from ruyaml import YAML

            safe_load = YAML(typ="safe").load
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                found = [n for n in _YAML_NAMES if n in names]
                description = safe_load(archive.read(found[0])) if found else None
            package, kind = path, "zip"

            def present(name: str) -> bool:
                return name in names
        else:
            description = safe_load(path.read_text(encoding="utf-8"))
            found, package, kind = [path.name], path.parent, "folder"

            def present(name: str) -> bool:
                return (package / name).is_file()
    except Exception:  # not a zip, no YAML library, a description that is no YAML
        return
    named: list[str] = []

    def walk(node: Any, key: Any = None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in ("source", "documentation", "covers") and "://" not in node:
            # an architecture's source is "file.py:callable"
            named.append(node if present(node) or ":" not in node else node.rsplit(":", 1)[0])

    walk(description)
    missing = sorted({n for n in named if not present(n)})
    if missing:
        what = f"the package {package}" if kind == "zip" else f"the package folder {package}"
        raise PackageError(
            f"{what} lacks {', '.join(missing)}, named in its {found[0]} "
            f"(an incomplete {kind}: export or download it again)"
        )


def open_description(path: str | os.PathLike) -> Any:
    """Read and validate a package's model description (format 0.4 is updated to 0.5).

    Files named by the description are checked (present, sha256) but not loaded; nothing is
    imported or run. Returns a ``bioimageio.spec.model.v0_5.ModelDescr``.

    Raises
    ------
    FileNotFoundError
        No such file.
    PackageError
        bioimageio.spec is missing, or the package is corrupt, invalid or not a model.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model package not found: {path}")
    if path.is_dir():
        for name in _YAML_NAMES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise PackageError(f"the folder {path} holds no rdf.yaml or bioimageio.yaml")
    try:
        from bioimageio.spec import InvalidDescr, load_model_description
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise PackageError(
            f"opening the BioImage.IO package {path} needs bioimageio.spec: "
            'pip install "napari-unet[bioimageio]"'
        ) from None
    if path.suffix.lower() == ".zip":
        import zipfile

        if not zipfile.is_zipfile(path):
            raise PackageError(f"the package {path} is not a zip file (corrupt or truncated)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            descr = load_model_description(path, format_version="latest", perform_io_checks=True)
    except Exception as err:  # the spec library raises many kinds on broken input
        _refuse_missing_files(path)
        raise PackageError(
            f"the package {path} could not be read: {type(err).__name__}: {first_error(err)}"
        ) from None
    if isinstance(descr, InvalidDescr):
        _refuse_missing_files(path)
        raise PackageError(
            f"the package {path} is not a valid BioImage.IO model: "
            f"{first_error(descr.validation_summary)}"
        )
    if not isinstance(descr, v0_5.ModelDescr):
        raise PackageError(f"the package {path} is not a BioImage.IO model (format 0.5)")
    return descr


def _own_architecture(descr: Any) -> Any | None:
    """The ``pytorch_state_dict`` entry when its architecture is napari-unet's, else None."""
    from napari_unet.engine.bioimageio import ARCHITECTURE_CALLABLE, ARCHITECTURE_MODULE

    entry = descr.weights.pytorch_state_dict
    arch = getattr(entry, "architecture", None)
    if (
        getattr(arch, "import_from", None) == ARCHITECTURE_MODULE
        and str(arch.callable) == ARCHITECTURE_CALLABLE
    ):
        return entry
    return None


def load_package(source: str | os.PathLike | PackageSource, *, device: Any = "cpu") -> tuple[Any, Any]:
    """Open a BioImage.IO model package.

    Parameters
    ----------
    source : str, PathLike or PackageSource
        The package (``.zip``, a folder, or its ``rdf.yaml``); a plain path does not trust the
        package's code.
    device : str or torch.device
        Where a napari-unet network is put.

    Returns
    -------
    (UNet, Checkpoint)
        For a package exported by napari-unet.
    (ForeignModel, Checkpoint)
        For a foreign package that this plugin can run (see
        :class:`~napari_unet.engine.foreign.ForeignModel`); its checkpoint has no diameter and
        no normalisation (the package normalises itself).

    Raises
    ------
    FileNotFoundError, PackageError
    """
    trust = source.trust_code if isinstance(source, PackageSource) else False
    path = Path(source.path if isinstance(source, PackageSource) else source).expanduser()
    descr = open_description(path)
    if descr.weights.pytorch_state_dict is not None and _own_architecture(descr) is not None:
        return _load_own(descr, path, device=device)
    from napari_unet.engine.foreign import foreign_model

    return foreign_model(descr, path, trust_code=trust)


def _scale_range(descr: Any, path: Path) -> dict:
    """The percentiles of the input's ``scale_range`` (per channel, over y and x)."""
    steps = [p for p in descr.inputs[0].preprocessing if p.id != "ensure_dtype"]
    if len(steps) != 1 or steps[0].id != "scale_range":
        names = ", ".join(p.id for p in steps) or "none"
        raise PackageError(
            f"the package {path} normalises its input with {names}; a napari-unet network "
            "expects one scale_range"
        )
    kwargs = steps[0].kwargs
    axes = {str(a) for a in (kwargs.axes or ())}
    if axes != {"y", "x"}:
        raise PackageError(
            f"the package {path} takes its percentiles over the axes {sorted(axes)}; napari-unet "
            "normalises each channel of each plane (axes y, x)"
        )
    return {"low": float(kwargs.min_percentile), "high": float(kwargs.max_percentile)}


def _load_own(descr: Any, path: Path, *, device: Any) -> tuple[Any, Any]:
    """A package exported by napari-unet -> (UNet, Checkpoint), building our own network."""
    import torch

    from napari_unet.engine.bioimageio import CONFIG_KEY
    from napari_unet.engine.checkpoint_format import Checkpoint
    from napari_unet.engine.checkpoint_validation import network_from_state_dict
    from napari_unet.engine.confidence_calibration import EXTRA_KEY as CALIBRATION_KEY
    from napari_unet.engine.confidence_calibration import chosen_min_confidence
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.limits import normalization_percentiles
    from napari_unet.engine.metadata import diameter_and_extra
    from napari_unet.engine.model import UNetConfig

    entry = _own_architecture(descr)
    try:
        config = UNetConfig.from_dict(dict(entry.architecture.kwargs))
    except (TypeError, ValueError) as err:
        raise PackageError(f"the package {path} has an invalid U-Net configuration: {err}") from None
    normalization = _scale_range(descr, path)
    own = (descr.config.model_extra or {}).get(CONFIG_KEY) or {}
    if not isinstance(own, dict):
        raise PackageError(f"the package {path} has a malformed config.{CONFIG_KEY} section")
    try:
        normalization_percentiles(normalization)
        diameter, _ = diameter_and_extra(own.get("diameter"), {}, strict=True)
    except ValueError as err:
        raise PackageError(f"the package {path} has invalid metadata: {err}") from None
    try:
        data = entry.get_reader().read()  # sha256 checked against the description
    except Exception as err:
        raise PackageError(
            f"the package {path} has no readable weights file {entry.source}: {first_error(err)}"
        ) from None
    try:
        state_dict = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # refused objects, truncation, junk
        raise PackageError(
            f"the package {path} has weights that are not a plain PyTorch state dict "
            f"({type(err).__name__}: {first_error(err)})"
        ) from None
    net = network_from_state_dict(config, state_dict, where=f"the package {path}")
    net.to(resolve_device(device))
    net.eval()
    extra: dict[str, Any] = {"name": str(descr.name), "package": str(path)}
    terms = own.get("training_data_terms")
    if isinstance(terms, str) and terms:  # a re-export keeps the data's terms and papers
        extra["training_data"] = {"licence": terms}
    calibration = own.get(CALIBRATION_KEY)
    if chosen_min_confidence(Checkpoint(config=config, extra={CALIBRATION_KEY: calibration})):
        extra[CALIBRATION_KEY] = dict(calibration)  # the minimum confidence the model chose
    checkpoint = Checkpoint(
        config=config,
        normalization=normalization,
        diameter=diameter,
        extra=extra,
        path=path,
    )
    return net, checkpoint
