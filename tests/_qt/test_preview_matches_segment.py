"""The Fine-tune preview and Segment give the same labels for the same model and plane: the
preview goes through Segment's call with Segment's options (issue: 108 vs 105 objects)."""

from __future__ import annotations

import numpy as np

from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt.finetune_widget import FineTuneWidget
from napari_unet._qt.segment_widget import SegmentWidget


def test_preview_and_segment_agree(viewer_with_image, tiny_model_path, tmp_path, wait_job, qtbot):
    from napari_unet.engine.checkpoint import load_checkpoint, save_checkpoint

    viewer = viewer_with_image
    net, checkpoint = load_checkpoint(tiny_model_path)
    # a model that stores a training diameter, so that the diameter (estimated by Segment) and
    # the rescaling take part, as with the bundled model
    path = save_checkpoint(
        tmp_path / "d16.pt", net, normalization=checkpoint.normalization, diameter=16.0
    )
    session_for(viewer).set_current(ModelEntry("d16", str(path), kind="file"))
    segment = SegmentWidget(viewer)
    segment.threshold.value = 0.65  # not the engine's default: the preview must follow it
    segment.min_size.value = 30
    segment.min_confidence.value = 0.1  # not the engine's default either
    segment.background_threshold.value = 0.35  # a tighter outline than the default
    assert segment.segment_options()["background_threshold"] == 0.35
    segment.device.value = "cpu"
    finetune = FineTuneWidget(viewer)
    finetune.device.value = "cpu"
    finetune.diameter.value = 12.0  # Fine-tune's own diameter (for training) does not matter

    wait_job(segment.segment())
    expected = viewer.layers["nuclei labels"].data
    assert expected.max() > 3

    finetune.refresh_preview()
    qtbot.waitUntil(lambda: "nuclei preview labels" in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: not finetune.preview.runner.busy, timeout=60_000)
    np.testing.assert_array_equal(viewer.layers["nuclei preview labels"].data, expected)
    assert f"{int(expected.max())} cells" in finetune.preview_info.value

    # normalised by the layer's contrast limits: the preview follows that choice too
    layer = viewer.layers["nuclei"]
    layer.contrast_limits = (float(layer.data.min()), float(np.percentile(layer.data, 90)))
    segment.use_contrast.value = True
    wait_job(segment.segment())
    narrowed = viewer.layers["nuclei labels"].data
    assert not np.array_equal(narrowed, expected)
    finetune.refresh_preview()
    qtbot.waitUntil(lambda: not finetune.preview.runner.busy, timeout=60_000)
    qtbot.waitUntil(
        lambda: np.array_equal(viewer.layers["nuclei preview labels"].data, narrowed),
        timeout=60_000,
    )


def test_previews_during_training_reuse_the_diameter_measured_before(make_napari_viewer):
    from types import SimpleNamespace

    finetune = FineTuneWidget(make_napari_viewer())
    session = session_for(finetune.viewer)
    session.segment_options = {"diameter": None, "threshold": 0.6}
    finetune._training_diameter = 21.5
    finetune.job = None  # not training: exactly Segment's options
    assert finetune._preview_options() == {"diameter": None, "threshold": 0.6}
    finetune.job = SimpleNamespace(running=True)
    assert finetune._preview_options() == {"diameter": 21.5, "threshold": 0.6}
    session.segment_options = {"diameter": 30.0, "threshold": 0.6}  # Segment's own diameter wins
    assert finetune._preview_options()["diameter"] == 30.0
    assert session.segment_options == {"diameter": 30.0, "threshold": 0.6}  # not changed
