"""BioImage.IO packages in the panels: chosen in Segment (own and foreign), written by Fine-tune's
Save."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

from napari_unet._qt.segment_widget import MODEL_FILE, SegmentWidget  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from zoo_packages import discs, foreground_boundary_package  # noqa: E402


@pytest.fixture(scope="module")
def tiny_package(tiny_model_path, tmp_path_factory) -> Path:
    from napari_unet.engine.bioimageio import export_package

    path = tmp_path_factory.mktemp("pkg") / "tiny.zip"
    export_package(tiny_model_path, path, formats=())
    return path


def test_segment_with_an_exported_package(viewer_with_image, tiny_package, wait_job, errors):
    viewer = viewer_with_image
    widget = SegmentWidget(viewer)
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
