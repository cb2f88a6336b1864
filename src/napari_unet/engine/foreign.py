"""Running a foreign BioImage.IO package (a zoo U-Net) with ``bioimageio.core``.

A zoo package brings its own network, pre- and post-processing, valid input sizes and halo.
It is run by ``bioimageio.core``'s prediction pipeline, tiling included, rather than by this
plugin's overlap-tile code: that code's geometry follows this plugin's own U-Net (depth,
valid or same convolutions), while a package states its valid sizes (``min + n * step``) and
halo in its description, and bioimageio.core tiles by exactly those, after computing the
sample-wise statistics of the package's normalisation on the whole plane (so that, as with this
plugin's normalisation, the result does not depend on the tiling).

The package's output is mapped onto this plugin's three classes (background, interior, border)
so that instances are made as for the bundled model (:mod:`~napari_unet.engine.instances`):

* three class probabilities named background / interior (foreground, cell, nucleus) / border
  (boundary, contour) are used as they are;
* a foreground and a boundary map ``f``, ``b`` (torch-em / plantseg style) become
  ``border = b``, ``interior = (1 - b) f``, ``background = (1 - b)(1 - f)``;
* background and foreground probabilities become background and interior, with no border;
* a single foreground map ``f`` becomes ``1 - f`` and ``f``.

Outputs that hold values outside [0, 1] are logits: softmax (classes) or sigmoid (maps) first.
Anything else -- 3D, several inputs or outputs, channel names that say nothing, weights other
than ``pytorch_state_dict`` or TorchScript -- is refused with one sentence.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.engine.events import PlaneDone, TileDone
from napari_unet.engine.packages import PackageError

__all__ = ["ForeignConfig", "ForeignModel", "foreign_model", "output_semantics"]

_INTERIOR = ("interior", "foreground", "fg", "cell", "nucle", "object", "inside", "mask")
_BORDER = ("border", "boundar", "contour", "edge")
_BACKGROUND = ("background", "bg")
SUPPORTED_WEIGHTS = ("torchscript", "pytorch_state_dict")
#: Side of the blocks bioimageio.core predicts (rounded up to a size the package accepts); the
#: bundled model's CPU tiles are of this order (docs/benchmarks/cpu_tiles.md).
BLOCK_SIDE = 256


@dataclass(frozen=True)
class ForeignConfig:
    """What the rest of the plugin asks of a model's configuration: its image channels and its
    (mapped) classes."""

    in_channels: int
    n_classes: int = 3
    seamless: bool = True


@dataclass(eq=False)
class ForeignModel:
    """A foreign package, checked and (when its code is trusted) loaded by bioimageio.core.

    Attributes
    ----------
    name, path : the package's name and file.
    config : :class:`ForeignConfig`.
    semantics : ``"classes"``, ``"foreground_boundary"``, ``"background_foreground"`` or
        ``"foreground"``; ``channels`` the output channels in the order that kind lists them.
    weight_format : ``"torchscript"`` or ``"pytorch_state_dict"``.
    """

    descr: Any
    path: Path
    name: str
    config: ForeignConfig
    semantics: str
    channels: tuple[int, ...]
    weight_format: str
    pipelines: dict = field(default_factory=dict, repr=False)

    def pipeline(self, device: str = "cpu") -> Any:
        """The bioimageio.core prediction pipeline on ``device`` (made once per device)."""
        if device not in self.pipelines:
            from bioimageio.core import create_prediction_pipeline

            try:
                self.pipelines[device] = create_prediction_pipeline(
                    self.descr, weights_format=self.weight_format, devices=[device]
                )
            except Exception as err:  # import errors of the architecture, corrupt weights, ...
                text = str(err).strip().splitlines()
                raise PackageError(
                    f"the package {self.path} could not load its {self.weight_format} weights: "
                    f"{type(err).__name__}: {(text[0] if text else '')[:200]}"
                ) from None
        return self.pipelines[device]


def _names(axis: Any) -> list[str]:
    return [str(n).lower() for n in getattr(axis, "channel_names", [])]


def _find(names: list[str], words: tuple[str, ...], taken: set[int]) -> int | None:
    for i, name in enumerate(names):
        if i not in taken and any(w in name for w in words):
            return i
    return None


def output_semantics(descr: Any) -> tuple[str, tuple[int, ...]]:
    """What the output channels of ``descr`` mean, from their names (see the module notes).

    Returns ``(kind, channels)``; raises :class:`PackageError` when the names do not say.
    """
    axes = descr.outputs[0].axes
    channel = [a for a in axes if a.type == "channel"]
    if not channel:
        return "foreground", (0,)
    names = _names(channel[0])
    n = len(names)
    text = f"{descr.description} {descr.outputs[0].description}".lower()
    bg = _find(names, _BACKGROUND, set())
    taken = {bg} if bg is not None else set()
    border = _find(names, _BORDER, taken)
    if border is not None:
        taken.add(border)
    interior = _find(names, _INTERIOR, taken)
    if n == 3 and None not in (bg, interior, border):
        return "classes", (bg, interior, border)
    if n == 2 and bg is None and None not in (interior, border):
        return "foreground_boundary", (interior, border)
    if n == 2 and border is None and None not in (bg, interior):
        return "background_foreground", (bg, interior)
    if n == 1 and interior is not None:
        return "foreground", (0,)
    if n == 2 and "foreground" in text and "boundar" in text:
        # the zoo's boundary U-Nets with generic channel names document channel 0 as the
        # foreground and channel 1 as the boundaries
        return "foreground_boundary", (0, 1)
    raise PackageError(
        f"the package {descr.name!r} has output channels {names or n} whose meaning napari-unet "
        "cannot tell (it needs class probabilities named background/interior/border or "
        "foreground and boundary maps)"
    )


def _check_2d(descr: Any, path: Path) -> int:
    """Refuse anything but one 2D input and one 2D output; return the input channels."""
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise PackageError(
            f"the package {path} has {len(descr.inputs)} inputs and {len(descr.outputs)} "
            "outputs; napari-unet runs models of one image in and one map out"
        )
    for kind, tensor in (("input", descr.inputs[0]), ("output", descr.outputs[0])):
        ids = [str(a.id) for a in tensor.axes]
        space = [str(a.id) for a in tensor.axes if a.type == "space"]
        if "z" in space or len(space) != 2:
            raise PackageError(
                f"the package {path} is a {len(space)}D model (its {kind} axes are "
                f"{','.join(ids)}); napari-unet runs 2D models (axes y, x)"
            )
        other = [a.type for a in tensor.axes if a.type not in ("batch", "channel", "space")]
        if other:
            raise PackageError(
                f"the package {path} has a {other[0]} axis on its {kind}; napari-unet runs "
                "models of (batch, channel, y, x)"
            )
    channel = [a for a in descr.inputs[0].axes if a.type == "channel"]
    return len(channel[0].channel_names) if channel else 1


def _code_note(descr: Any, fmt: str) -> str:
    if fmt == "torchscript":
        return "a TorchScript program"
    arch = descr.weights.pytorch_state_dict.architecture
    where = getattr(arch, "import_from", None)
    if where is not None:
        return f"the Python architecture {where}.{arch.callable}"
    return f"the Python architecture in its file {arch.source} ({arch.callable})"


def foreign_model(descr: Any, path: Path, *, trust_code: bool) -> tuple[ForeignModel, Any]:
    """Check a foreign package and, when ``trust_code``, load it: ``(ForeignModel, Checkpoint)``.

    The checkpoint carries no diameter (images are not rescaled) and no normalisation (the
    package's pre-processing normalises).
    """
    from napari_unet.engine.checkpoint_format import Checkpoint

    in_channels = _check_2d(descr, path)
    semantics, channels = output_semantics(descr)
    present = [f for f in SUPPORTED_WEIGHTS if getattr(descr.weights, f) is not None]
    if not present:
        formats = ", ".join(f for f, entry in descr.weights if entry is not None)
        raise PackageError(
            f"the package {path} has {formats} weights only; napari-unet runs "
            "pytorch_state_dict or TorchScript weights"
        )
    fmt = present[0]
    if not trust_code:
        raise PackageError(
            f"the package {path} runs its own code ({_code_note(descr, fmt)}); napari-unet runs it "
            "only when asked: pass --trust-package-code (Python: "
            "PackageSource(path, trust_code=True); Segment panel: tick 'run package code')"
        )
    model = ForeignModel(
        descr=descr,
        path=path,
        name=str(descr.name),
        config=ForeignConfig(in_channels=in_channels),
        semantics=semantics,
        channels=channels,
        weight_format=fmt,
    )
    model.pipeline("cpu")  # load now, so that a broken architecture is reported at once
    checkpoint = Checkpoint(
        config=model.config,  # type: ignore[arg-type] - duck-typed: in_channels, n_classes
        extra={"name": model.name, "package": str(path), "foreign": True},
        path=path,
    )
    return model, checkpoint


def to_classes(out: np.ndarray, semantics: str, channels: tuple[int, ...]) -> np.ndarray:
    """Map a package's (K, Y, X) output onto (3, Y, X) background/interior/border probabilities."""
    picked = out[list(channels)].astype(np.float32)
    logits = bool(picked.size) and (picked.min() < -1e-3 or picked.max() > 1.0 + 1e-3)
    if semantics in ("classes", "background_foreground"):
        if logits:
            picked = np.exp(picked - picked.max(axis=0, keepdims=True))
            picked /= picked.sum(axis=0, keepdims=True)
        picked /= np.maximum(picked.sum(axis=0, keepdims=True), 1e-12)
        if semantics == "classes":
            return picked
        return np.stack([picked[0], picked[1], np.zeros_like(picked[0])])
    if logits:
        picked = 1.0 / (1.0 + np.exp(-picked))
    picked = np.clip(picked, 0.0, 1.0)
    fg = picked[0]
    b = picked[1] if semantics == "foreground_boundary" else np.zeros_like(fg)
    return np.stack([(1 - b) * (1 - fg), (1 - b) * fg, b])


def _pad_for(model: ForeignModel, shape: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """Per-edge mirror padding: ``(extra, crop)`` so that the padded plane is at least the
    smallest input and a halo the network crops itself (a negative output offset) is restored."""
    from bioimageio.spec.model import v0_5

    smallest, crop = 0, 0
    for axis in model.descr.inputs[0].axes:
        if axis.type == "space" and isinstance(axis.size, v0_5.ParameterizedSize):
            smallest = max(smallest, axis.size.min)
        elif axis.type == "space" and isinstance(axis.size, int):
            smallest = max(smallest, axis.size)
    for axis in model.descr.outputs[0].axes:
        size = getattr(axis, "size", None)
        if axis.type == "space" and isinstance(size, v0_5.SizeReference) and size.offset < 0:
            crop = max(crop, -size.offset // 2)
    extra = tuple(max(0, -(-(smallest - s) // 2)) + crop for s in shape)
    return extra, crop


def _block_parameters(descr: Any, side: int, shape: tuple[int, int]) -> dict:
    """The size parameter n of each parameterized input axis for blocks of about ``side`` px,
    no larger than the (padded) plane of ``shape``."""
    from bioimageio.spec.model import v0_5

    tensor = descr.inputs[0]
    extent = {"y": shape[0], "x": shape[1]}
    out = {}
    for a in tensor.axes:
        size = getattr(a, "size", None)
        if isinstance(size, v0_5.ParameterizedSize):
            limit = min(side, extent.get(str(a.id), side))
            out[(tensor.id, a.id)] = max(0, (limit - size.min) // size.step)
    return out


def _in_layout(plane: np.ndarray, axes: Any) -> np.ndarray:
    """(C, Y, X) ``plane`` in the order of the package's input ``axes`` (batch of one)."""
    kinds = [a.type if a.type != "space" else str(a.id) for a in axes]
    if "channel" in kinds:
        data, source = plane, {"channel": 0, "y": 1, "x": 2}
    else:
        data, source = plane[0], {"y": 0, "x": 1}
    data = np.transpose(data, [source[k] for k in kinds if k != "batch"])
    return np.expand_dims(data, kinds.index("batch")) if "batch" in kinds else data


def iter_predict_foreign(
    model: ForeignModel, planes: np.ndarray, *, device: str = "cpu"
) -> Generator[Any, None, np.ndarray]:
    """Predict (P, C, Y, X) ``planes``; yield a :class:`TileDone` per block; return (P, 3, Y, X)
    float32 probabilities of background, interior and border."""
    from bioimageio.core import Sample, Tensor

    pipeline = model.pipeline(device)
    descr = model.descr
    n_planes, _, rows, cols = planes.shape
    out = np.empty((n_planes, 3, rows, cols), np.float32)
    done = 0
    for p in range(n_planes):
        (pad_r, pad_c), crop = _pad_for(model, (rows, cols))
        plane = np.pad(planes[p].astype(np.float32), ((0, 0), (pad_r, pad_r), (pad_c, pad_c)), mode="symmetric")
        tensor = Tensor.from_numpy(_in_layout(plane, descr.inputs[0].axes), dims=[a.id for a in descr.inputs[0].axes])
        sample = Sample(members={descr.inputs[0].id: tensor}, stat={}, id=p)
        total, intermediates = pipeline.predict_sample_with_blocking_yield_intermediates(
            sample, ns=_block_parameters(descr, BLOCK_SIDE, plane.shape[-2:])
        )
        predicted = None
        for i, step in enumerate(intermediates):
            predicted = step.sample
            yield TileDone(done=done + i + 1, total=done + total * (n_planes - p), plane=p, n_planes=n_planes)
        done += total
        result = predicted.members[descr.outputs[0].id].data
        names = {str(a.id): (a.type if a.type != "space" else str(a.id)) for a in descr.outputs[0].axes}
        result = result.rename({d: names.get(str(d), str(d)) for d in result.dims})
        keep = [d for d in ("channel", "y", "x") if d in result.dims]
        result = result.squeeze([d for d in result.dims if d not in keep]).transpose(*keep).values
        if "channel" not in keep:
            result = result[np.newaxis]
        r0, c0 = pad_r - crop, pad_c - crop
        result = result[:, r0 : r0 + rows, c0 : c0 + cols]
        out[p] = to_classes(result, model.semantics, model.channels)
        yield PlaneDone(plane=p, n_planes=n_planes)
    return out
