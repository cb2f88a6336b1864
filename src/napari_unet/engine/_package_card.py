"""The text of an exported package: its model card (the ``documentation``) and its citations.

The model card is written from the model file's metadata (network, input sizes, percentiles,
training diameter, training data and its terms, validation scores); the citations are the U-Net
paper and, when the model file names them, the papers its training data asks to cite
(docs/data.md).
"""

from __future__ import annotations

from typing import Any

CLASS_NAMES = ("background", "interior", "border")

_UNET_PAPER = (
    "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for biomedical image "
    "segmentation. MICCAI 2015, LNCS 9351, 234-241.",
    "10.1007/978-3-319-24574-4_28",
)
#: The papers the bundled model's training data asks to cite (docs/data.md).
_DATA_PAPERS = (
    (
        "Maška M, et al. The Cell Tracking Challenge: 10 years of objective benchmarking. "
        "Nature Methods 20, 1010-1020 (2023).",
        "10.1038/s41592-023-01879-y",
    ),
    (
        "Ulman V, et al. An objective comparison of cell-tracking algorithms. Nature Methods 14, "
        "1141-1152 (2017).",
        "10.1038/nmeth.4473",
    ),
    (
        "Jones TR, Carpenter AE, Golland P. Voronoi-based segmentation of cells on image "
        "manifolds. ICCV Workshop on Computer Vision for Biomedical Image Applications, 2005.",
        "10.1007/11569541_54",
    ),
    (
        "Ljosa V, Sokolnicki KL, Carpenter AE. Annotated high-throughput microscopy image sets "
        "for validation. Nature Methods 9, 637 (2012).",
        "10.1038/nmeth.2083",
    ),
)


def model_card(checkpoint: Any, name: str, size_rule: tuple[int, int], offset: int) -> str:
    """The package's documentation: what the model is, how to feed it, its data and terms."""
    config = checkpoint.config
    norm = checkpoint.normalization or {"low": 1.0, "high": 99.8}
    extra = checkpoint.extra or {}
    data = extra.get("training_data") if isinstance(extra.get("training_data"), dict) else {}
    lines = [
        f"# {name}",
        "",
        "A U-Net (Ronneberger, Fischer & Brox, MICCAI 2015) exported by napari-unet "
        "for instance segmentation of cells or nuclei in 2D images.",
        "",
        "## Network",
        "",
        f"- depth {config.depth}, {config.base_channels} base channels, {config.padding} 3x3 "
        f"convolutions, normalisation: {config.norm or 'none'}, dropout {config.dropout:g}",
        f"- input: {config.in_channels} channel(s), sides {size_rule[0]} + n x {size_rule[1]} px",
        f"- output: {config.n_classes} class probabilities ({', '.join(CLASS_NAMES[: config.n_classes])}"
        f"{'' if config.n_classes <= 3 else ', ...'}), softmax inside the network; "
        + (
            f"each side {-offset} px smaller than the input (the valid convolutions' halo, "
            f"{-offset // 2} px per edge), centred on it"
            if offset
            else "the input's size"
        ),
        "",
        "## How to use it",
        "",
        f"- Normalise each channel of each image so that its {norm['low']:g}th percentile maps to 0 "
        f"and its {norm['high']:g}th percentile to 1 (`scale_range`, in the package).",
    ]
    if checkpoint.diameter is not None:
        lines.append(
            f"- **Cell diameter: {checkpoint.diameter:g} px.** The model was trained on cells of "
            "this median diameter; rescale images so that their cells have it "
            "(`config.napari_unet.diameter`; napari-unet does this itself)."
        )
    lines += [
        "- Instances: connected confident interiors (P(interior) > 0.5), grown by watershed over "
        "the pixels with P(background) < 0.5 (napari-unet's `instances_from_probabilities`).",
        "",
        "## Training data and its terms",
        "",
        str(data.get("licence") or "Not recorded in the model file."),
    ]
    validation = extra.get("validation")
    if isinstance(validation, dict) and validation:
        scores = ", ".join(f"{k} {v:.3g}" for k, v in validation.items() if isinstance(v, (int, float)))
        lines += ["", "## Validation", "", scores]
    lines += [
        "",
        "## Citations",
        "",
        "Cite the U-Net paper and, for the bundled model's training data, the data papers "
        "listed in the package's `cite` section.",
        "",
    ]
    return "\n".join(lines)


def citations(checkpoint: Any) -> list[tuple[str, str]]:
    """The U-Net paper, plus the training data's papers when the model file names that data."""
    cites = [_UNET_PAPER]
    extra = checkpoint.extra or {}
    data = extra.get("training_data") if isinstance(extra.get("training_data"), dict) else {}
    terms = str(data.get("licence", ""))
    if "Cell Tracking Challenge" in terms:
        cites += list(_DATA_PAPERS[:2])
    if "BBBC007" in terms:
        cites += list(_DATA_PAPERS[2:])
    return cites
