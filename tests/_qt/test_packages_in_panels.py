"""BioImage.IO packages in the panels: chosen in Segment (own and foreign), written by Fine-tune's
Save."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

from napari_unet._qt.segment_widget import MODEL_FILE, SegmentWidget

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from zoo_packages import discs, foreground_boundary_package


@pytest.fixture(scope="module")
def tiny_package(tiny_model_path, tmp_path_factory) -> Path:
    from napari_unet.engine.bioimageio import export_package

    path = tmp_path_factory.mktemp("pkg") / "tiny.zip"
    export_package(tiny_model_path, path, formats=())
    return path


def test_segment_with_an_exported_package(viewer_with_image, tiny_package, wait_job, errors):
    viewer = viewer_with_image
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    wait_job(widget.segment())  # the session's model: the tiny model file
    from_file = viewer.layers["nuclei labels"].data.copy()
    assert from_file.max() > 1

    widget.model.value = MODEL_FILE
    widget.model_file.value = tiny_package
    assert not widget.trust_code.native.isHidden() and not widget.trust_code.value
    wait_job(widget.segment())
    assert errors == []
    assert widget.session.current.label == "tiny.zip"
    np.testing.assert_array_equal(viewer.layers["nuclei labels"].data, from_file)


def test_foreign_package_asks_for_trust(make_napari_viewer, tmp_path, wait_job, errors):
    viewer = make_napari_viewer()
    viewer.add_image(discs(), name="discs")
    package = foreground_boundary_package(tmp_path / "zoo")
    widget = SegmentWidget(viewer)
    widget.model.value = MODEL_FILE
    widget.model_file.value = package
    assert not widget.trust_code.native.isHidden()  # offered for a package file
    widget.diameter.value = 0
    job = widget.segment()
    if job is not None:
        wait_job(job)
    assert len(errors) == 1 and "run package code" in errors[0] and "\n" not in errors[0]

    widget.trust_code.value = True
    wait_job(widget.segment())
    assert len(errors) == 1
    labels = viewer.layers["discs labels"].data
    assert labels.max() == 3


def test_finetune_save_as_package(viewer_with_image, nuclei_image, wait_job, tmp_path, monkeypatch, errors):
    """Fine-tune's Save writes a BioImage.IO package when a .zip is chosen; it passes
    bioimageio.core's test and reloads as the fine-tuned network with its diameter."""
    import torch
    from bioimageio.core import test_model

    from napari_unet._qt.finetune_widget import FineTuneWidget
    from napari_unet.engine.api import load_model

    viewer = viewer_with_image
    viewer.add_labels(np.asarray(nuclei_image[1], np.int32), name="painted", scale=(0.5, 0.5),
                      translate=(3.0, 4.0))
    widget = FineTuneWidget(viewer)
    widget.steps.value = 2
    widget.tile_size.value = 48
    widget.device.value = "cpu"
    widget.preview_every.value = 0
    wait_job(widget.start())
    monkeypatch.setattr(widget, "ask_save_path", lambda: str(tmp_path / "shared.zip"))
    wait_job(widget.save_model())
    assert errors == []
    path = tmp_path / "shared.zip"
    assert widget.status.value == f"saved {path}"
    net, checkpoint = load_model(path)
    kept_net, kept = widget.result_entry.source
    for name, tensor in kept_net.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor.cpu())
    assert checkpoint.diameter == pytest.approx(kept.diameter)
    assert test_model(path, weight_format="pytorch_state_dict").status == "passed"


def test_save_dialog_suffix_follows_the_chosen_format(monkeypatch):
    from napari_unet._qt import _controls

    answers = iter([("/data/shared", "BioImage.IO model package (*.zip)"),
                    ("/data/mine", "U-Net model (*.pt)"), ("/data/named.zip", "U-Net model (*.pt)"),
                    ("", "")])
    monkeypatch.setattr(_controls.QFileDialog, "getSaveFileName", lambda *a, **k: next(answers))
    filters = "U-Net model (*.pt);;BioImage.IO model package (*.zip)"
    got = [_controls.ask_save_path(None, "t", "n.pt", filters) for _ in range(4)]
    assert got == ["/data/shared.zip", "/data/mine.pt", "/data/named.zip", ""]
