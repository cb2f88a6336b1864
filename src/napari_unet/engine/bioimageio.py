"""BioImage.IO model packages of napari-unet models: the architecture callable and the export.

A package (format 0.5, built with the ``bioimageio.spec`` library) is a zip with an ``rdf.yaml``
that ilastik, deepImageJ, QuPath, ZeroCostDL4Mic and ``bioimageio.core`` can run. One exported
here holds:

* ``pytorch_state_dict`` weights (the network's ``state_dict``, a plain dict of tensors) whose
  architecture is :func:`build_unet` of this module with the model's :class:`UNetConfig` as
  keyword arguments, and, where they export cleanly, the same network as TorchScript and ONNX;
* one input ``raw`` (batch, channel, y, x) of the sizes the network accepts (``min + n * step``:
  for a ``"valid"`` net :func:`~napari_unet.engine.model.valid_input_size` of 1 and steps of
  ``2**depth``), normalised by ``scale_range`` with the model's own percentiles per channel;
* one output ``probabilities`` (batch, class, y, x): the softmax of the logits, computed inside
  the exported module (:class:`ProbabilityUNet`), so that no consumer needs a softmax step. A
  ``"valid"`` net's output is smaller than its input by ``2 * border(depth)``: the halo the
  network crops itself, declared as a negative size offset (the spec's way, see ``WithHalo``);
* test tensors made by running the model, a model card, citations, and a ``napari_unet``
  section in ``config`` with the training diameter and the normalisation, so that this plugin
  re-imports the package as exactly the model it was (:mod:`~napari_unet.engine.packages`).

``bioimageio.spec`` (and ``bioimageio.core`` to test a package) come with the ``bioimageio``
extra: ``pip install "napari-unet[bioimageio]"``. Only :func:`export_package` needs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.engine._package_card import CLASS_NAMES, citations, model_card
from napari_unet.engine.confidence_calibration import EXTRA_KEY as CALIBRATION_KEY
from napari_unet.engine.confidence_calibration import chosen_min_confidence
from napari_unet.engine.model import UNet, UNetConfig, border, valid_input_size
from napari_unet.engine.packages import first_error

__all__ = [
    "ARCHITECTURE_CALLABLE",
    "ARCHITECTURE_MODULE",
    "CLASS_NAMES",
    "ProbabilityUNet",
    "build_unet",
    "export_package",
]

#: Where an exported package's architecture comes from (``from <module> import <callable>``).
ARCHITECTURE_MODULE = "napari_unet.engine.bioimageio"
ARCHITECTURE_CALLABLE = "build_unet"
#: The name of the section of ``config`` that holds what this plugin needs to re-import a model.
CONFIG_KEY = "napari_unet"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
ONNX_OPSET = 17



class ProbabilityUNet(UNet):
    """The :class:`UNet` with a softmax over its classes: ``(N, C, H, W) -> (N, K, h, w)``
    probabilities. Its ``state_dict`` is the UNet's, key for key."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            self.check_input(x)
        return torch.softmax(self.logits(x), dim=1)


def build_unet(**kwargs: Any) -> ProbabilityUNet:
    """Build the network of an exported package from its :class:`UNetConfig` fields.

    The architecture callable that a package's ``pytorch_state_dict`` entry names; the keyword
    arguments are validated (types, ranges and the size bounds of
    :mod:`~napari_unet.engine.limits`) before any tensor is made.

    Parameters
    ----------
    **kwargs
        ``in_channels``, ``n_classes``, ``depth``, ``base_channels``, ``padding``, ``norm``,
        ``dropout`` (see :class:`UNetConfig`); missing ones take their defaults.

    Returns
    -------
    ProbabilityUNet
        In eval mode; ``model(x)`` returns class probabilities.

    Examples
    --------
    >>> net = build_unet(depth=2, base_channels=4)
    >>> tuple(net(torch.zeros(1, 1, 44, 44)).shape)
    (1, 3, 4, 4)
    """
    net = ProbabilityUNet(UNetConfig.from_dict(dict(kwargs)))
    net.eval()
    return net


def input_size_rule(config: UNetConfig) -> tuple[int, int]:
    """``(min, step)``: the input sides the network accepts are ``min + n * step``, n >= 0."""
    step = 2**config.depth
    if config.padding == "same":
        return step, step
    return valid_input_size(1, config.depth), step


def output_offset(config: UNetConfig) -> int:
    """Output side minus input side: ``-2 * border(depth)`` for a valid net, 0 for a same net."""
    return -2 * border(config.depth) if config.padding == "valid" else 0


def _require_spec():
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise ImportError(
            'exporting a BioImage.IO package needs bioimageio.spec: pip install "napari-unet[bioimageio]"'
        ) from None


def _test_image(config: UNetConfig, diameter: float | None, side: int) -> np.ndarray:
    """A (1, C, side, side) float32 test input: procedural nuclei at the training diameter."""
    from napari_unet.engine.nucleus_generator import generate_nuclei, random_style, with_diameter

    style = with_diameter(random_style(0), float(diameter or 24.0))
    planes = [generate_nuclei((side, side), style, rng=c)[0] for c in range(config.in_channels)]
    return np.stack(planes)[np.newaxis].astype(np.float32)


def _run(net: ProbabilityUNet, image: np.ndarray, normalization: dict) -> np.ndarray:
    """The package's computation, done by this plugin: ``scale_range`` per channel, then the net."""
    from napari_unet.engine.limits import normalization_percentiles
    from napari_unet.engine.normalization import percentile_range

    low, high = normalization_percentiles(normalization)
    lo, hi = percentile_range(image[0], low=low, high=high, channel_axis=0)
    x = (image[0] - lo[:, None, None]) / (hi - lo + 1e-6)[:, None, None]  # scale_range's formula
    with torch.inference_mode():
        return net(torch.from_numpy(x[np.newaxis].astype(np.float32))).numpy()


def _script(net: ProbabilityUNet, path: Path, example: torch.Tensor) -> str | None:
    """Write ``net`` as TorchScript; ``None`` when done, else the reason it failed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(net)
            with torch.inference_mode():
                same = torch.allclose(scripted(example), net(example), atol=1e-5)
        if not same:
            return "the TorchScript module's output differs from the network's"
        scripted.save(str(path))
    except Exception as err:  # torch.jit raises many kinds on code it cannot compile
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:120]}"
    return None


def _onnx(net: ProbabilityUNet, path: Path, example: torch.Tensor) -> str | None:
    """Write ``net`` as ONNX (opset :data:`ONNX_OPSET`); ``None`` when done, else why not."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "the onnx package is not installed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (example,),
                str(path),
                input_names=[INPUT_ID],
                output_names=[OUTPUT_ID],
                opset_version=ONNX_OPSET,
                dynamic_axes={INPUT_ID: {0: "b", 2: "y", 3: "x"}, OUTPUT_ID: {0: "b", 2: "y", 3: "x"}},
                dynamo=False,
            )
    except Exception as err:  # the exporter raises many kinds
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:120]}"
    return None


def export_package(
    model: Any,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | tuple[str, ...] = ("napari-unet developers",),
    license: str = "BSD-3-Clause",
    test_side: int | None = None,
    formats: tuple[str, ...] = ("torchscript", "onnx"),
) -> dict[str, str | None]:
    """Write ``model`` as a BioImage.IO model package (format 0.5) zip at ``path``.

    Parameters
    ----------
    model : None, "default", path, UNet or (UNet, Checkpoint)
        See :func:`~napari_unet.engine.models.load_model`.
    path : str or PathLike
        The zip to write (conventionally ``*.zip``); written to a temporary file first and moved
        into place, so an existing file is replaced only by a complete package.
    name, description : str, optional
        Shown by the zoo; derived from the model file when omitted.
    authors : sequence of str
        The people who trained the model (the zoo asks for real names).
    license : str
        An SPDX licence id for the weights.
    test_side : int, optional
        Side of the square test input in pixels, rounded up to a size the net accepts; by default
        about 128 px of output.
    formats : tuple of str
        Extra weight formats to try besides ``pytorch_state_dict``: ``"torchscript"``,
        ``"onnx"``. One that fails to export is left out and its reason returned.

    Returns
    -------
    dict
        Each weight format tried -> ``None`` when it is in the package, else the reason it is not.

    Raises
    ------
    ImportError
        When bioimageio.spec is not installed.
    ValueError
        When the package does not validate (the spec's first error, in one sentence).
    """
    _require_spec()
    from bioimageio.spec import ValidationContext, save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    from napari_unet.engine import atomic
    from napari_unet.engine.models import load_model, require_unet
    from napari_unet.engine.normalization import DEFAULT_NORMALIZATION

    _check_license(spec, license)
    net, checkpoint = load_model(model, device="cpu")
    require_unet(net, checkpoint)
    config = net.config
    prob_net = ProbabilityUNet(config)
    prob_net.load_state_dict(net.state_dict())
    prob_net.eval()
    normalization = {**DEFAULT_NORMALIZATION, **(checkpoint.normalization or {})}
    size_min, step = input_size_rule(config)
    offset = output_offset(config)
    side = max(int(test_side or 128 - offset), size_min)
    side = size_min + -(-(side - size_min) // step) * step
    extra = checkpoint.extra or {}
    name = name or _package_name(extra.get("name"))
    path = Path(path)
    results: dict[str, str | None] = {"pytorch_state_dict": None}

    with tempfile.TemporaryDirectory(prefix="napari-unet-export-") as tmp_name:
        tmp = Path(tmp_name)
        test_in = _test_image(config, checkpoint.diameter, side)
        test_out = _run(prob_net, test_in, normalization)
        np.save(tmp / "test_input.npy", test_in)
        np.save(tmp / "test_output.npy", test_out)
        import tifffile  # sample tensors: the same arrays as images, for the zoo's previews

        tifffile.imwrite(tmp / "sample_input.tif", test_in)
        tifffile.imwrite(tmp / "sample_output.tif", test_out)
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp / "weights.pt")
        (tmp / "README.md").write_text(model_card(checkpoint, name, (size_min, step), offset))
        example = torch.from_numpy(test_in.copy())
        if "torchscript" in formats:
            results["torchscript"] = _script(prob_net, tmp / "weights_torchscript.pt", example)
        if "onnx" in formats:
            results["onnx"] = _onnx(prob_net, tmp / "weights.onnx", example)

        torch_version = torch.__version__.split("+")[0]
        channel_names = [f"channel{i}" for i in range(config.in_channels)]
        space_in = [
            spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=size_min, step=step))
            for a in ("y", "x")
        ]
        space_out = [
            spec.SpaceOutputAxis(
                id=spec.AxisId(a),
                size=spec.SizeReference(
                    tensor_id=spec.TensorId(INPUT_ID), axis_id=spec.AxisId(a), offset=offset
                ),
            )
            for a in ("y", "x")
        ]
        classes = list(CLASS_NAMES[: config.n_classes]) + [
            f"class{i}" for i in range(3, config.n_classes)
        ]
        inputs = [
            spec.InputTensorDescr(
                id=spec.TensorId(INPUT_ID),
                description="the image, one plane; any intensity range (normalised in the package)",
                axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=channel_names), *space_in],
                test_tensor=spec.FileDescr(source=tmp / "test_input.npy"),
                sample_tensor=spec.FileDescr(source=tmp / "sample_input.tif"),
                data=spec.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[
                    spec.ScaleRangeDescr(
                        kwargs=spec.ScaleRangeKwargs(
                            axes=[spec.AxisId("y"), spec.AxisId("x")],
                            min_percentile=float(normalization["low"]),
                            max_percentile=float(normalization["high"]),
                        )
                    )
                ],
            )
        ]
        outputs = [
            spec.OutputTensorDescr(
                id=spec.TensorId(OUTPUT_ID),
                description="class probabilities (softmax); valid convolutions: the halo is cropped",
                axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=classes), *space_out],
                test_tensor=spec.FileDescr(source=tmp / "test_output.npy"),
                sample_tensor=spec.FileDescr(source=tmp / "sample_output.tif"),
                data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            )
        ]
        weights: dict[str, Any] = {
            "pytorch_state_dict": spec.PytorchStateDictWeightsDescr(
                source=tmp / "weights.pt",
                architecture=spec.ArchitectureFromLibraryDescr(
                    import_from=ARCHITECTURE_MODULE,
                    callable=spec.Identifier(ARCHITECTURE_CALLABLE),
                    kwargs=config.to_dict(),
                ),
                pytorch_version=spec.Version(torch_version),
            )
        }
        if results.get("torchscript") is None and "torchscript" in formats:
            weights["torchscript"] = spec.TorchscriptWeightsDescr(
                source=tmp / "weights_torchscript.pt",
                pytorch_version=spec.Version(torch_version),
                parent="pytorch_state_dict",
            )
        if results.get("onnx") is None and "onnx" in formats:
            weights["onnx"] = spec.OnnxWeightsDescr(
                source=tmp / "weights.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"
            )
        terms = extra.get("training_data", {}).get("licence") if isinstance(
            extra.get("training_data"), dict
        ) else None
        own = {
            "format": 1,
            "unet": config.to_dict(),
            "diameter": checkpoint.diameter,
            "normalization": {"low": float(normalization["low"]), "high": float(normalization["high"])},
            "training_data_terms": terms,
        }
        if chosen_min_confidence(checkpoint) is not None:  # the fine-tune's own filter travels
            own[CALIBRATION_KEY] = dict(extra[CALIBRATION_KEY])
        diameter_note = (
            f" Trained at a cell diameter of {checkpoint.diameter:g} px: rescale images so that "
            "their cells have it."
            if checkpoint.diameter is not None
            else ""
        )
        try:
            with ValidationContext(perform_io_checks=True):
                descr = spec.ModelDescr(
                    name=name,
                    description=description
                    or "U-Net (Ronneberger et al. 2015) for 2D instance segmentation of nuclei, "
                    "exported by napari-unet: probabilities of background, interior and border."
                    + diameter_note,
                    authors=[spec.Author(name=a) for a in authors],
                    cite=[spec.CiteEntry(text=t, doi=spec.Doi(d)) for t, d in citations(checkpoint)],
                    license=spec.LicenseId(license),
                    documentation=spec.FileDescr(source=tmp / "README.md"),
                    tags=["unet", "2d", "pytorch", "segmentation", "instance-segmentation", "nuclei",
                          "fluorescence-light-microscopy", "napari-unet"],
                    inputs=inputs,
                    outputs=outputs,
                    weights=spec.WeightsDescr(**weights),
                    config=spec.Config(
                        bioimageio=spec.BioimageioConfig(
                            architecture_type="2D U-Net",
                            task="instance segmentation",
                            target_structure=["nuclei"],
                            model_parameter_count=sum(p.numel() for p in net.parameters()),
                        ),
                        **{CONFIG_KEY: own},
                    ),
                )
        except Exception as err:  # pydantic's ValidationError, with many lines
            raise ValueError(f"the package does not validate: {first_error(err)}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = tmp / "package.zip"
        save_bioimageio_package(descr, output_path=staged)
        atomic.remove_stale_temps(path)
        temp = atomic.new_temp(path)
        try:
            shutil.copyfile(staged, temp)
        except BaseException:
            atomic.discard([temp])
            raise
        atomic.commit([(temp, path)])
    return results


DEFAULT_NAME = "napari-unet U-Net"


def _package_name(stored: Any) -> str:
    """The name stored in a model file's metadata, made one the zoo accepts: 5 to 128 of the
    characters ``A-Z a-z 0-9 _ + - ( )`` and spaces, accents dropped and other characters
    spaced (``"Zoë's nuclei v1.2"`` -> ``"Zoe s nuclei v1 2"``); :data:`DEFAULT_NAME` when
    nothing of it is left. A name the user gives is not changed: the spec's refusal says why."""
    import re
    import unicodedata

    text = unicodedata.normalize("NFKD", str(stored or "")).encode("ascii", "ignore").decode()
    text = " ".join(re.sub(r"[^A-Za-z0-9_+\-() ]+", " ", text).split())[:128].strip()
    return text if len(text) >= 5 else DEFAULT_NAME


def _check_license(spec: Any, license: str) -> None:
    """Raise ``ValueError`` before any work unless ``license`` is an SPDX id the spec knows."""
    try:
        spec.LicenseId(license)
    except Exception:  # pydantic's ValidationError, listing every id the spec knows
        raise ValueError(
            f"licence {license!r} is not an SPDX licence id that BioImage.IO knows (for example "
            "MIT, BSD-3-Clause, Apache-2.0, CC-BY-4.0)"
        ) from None


