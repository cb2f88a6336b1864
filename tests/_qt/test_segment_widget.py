"""The Segment widget in a real viewer: result layers, reruns, images and models it reads or
refuses, errors. Its jobs (Cancel, progress, responsiveness, removal during a run) are in
test_segment_jobs.py; shared helpers in segment_helpers.py."""

from __future__ import annotations

import numpy as np
import pytest
from segment_helpers import segment_panel


def test_segment_adds_labels_with_cells(viewer_with_image, wait_job, errors):
    viewer = viewer_with_image
    image_layer = viewer.layers["nuclei"]
    widget = segment_panel(viewer)
    assert widget.image.value is image_layer
    assert widget.model.value.label == "tiny test model"
    widget.show_probabilities.value = True

    job = widget.segment()
    assert not widget.run_button.isEnabled()
    wait_job(job)

    assert errors == []
    labels = viewer.layers["nuclei labels"]
    assert labels.data.shape == image_layer.data.shape
    assert len(np.unique(labels.data)) > 2  # background and more than one cell
    assert labels.metadata["napari_unet"] == "segment"
    np.testing.assert_allclose(labels.scale, image_layer.scale)
    np.testing.assert_allclose(labels.translate, image_layer.translate)
    prob = viewer.layers["nuclei probabilities"]
    assert prob.data.shape == image_layer.data.shape
    assert 0.0 <= prob.data.min() and prob.data.max() <= 1.0
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "cells" in widget.status.value

    # a rerun updates the plugin's layer instead of adding one
    n_layers = len(viewer.layers)
    widget.threshold.value = 0.7
    wait_job(widget.segment())
    assert len(viewer.layers) == n_layers
    assert viewer.layers["nuclei labels"] is labels

    # test-time augmentation reaches the engine: the averaged probabilities differ
    before = viewer.layers["nuclei probabilities"].data.copy()
    widget.tta.value = True
    wait_job(widget.segment())
    assert errors == []
    assert np.abs(viewer.layers["nuclei probabilities"].data - before).max() > 1e-3


def test_user_layers_are_never_modified(viewer_with_image, wait_job):
    viewer = viewer_with_image
    mine = viewer.add_labels(np.full((128, 128), 7, np.uint8), name="nuclei labels")
    image_before = viewer.layers["nuclei"].data.copy()
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    assert np.all(mine.data == 7)
    np.testing.assert_array_equal(viewer.layers["nuclei"].data, image_before)
    ours = [layer for layer in viewer.layers if layer.metadata.get("napari_unet") == "segment"]
    assert len(ours) == 1 and ours[0] is not mine


def test_stack_is_segmented_plane_by_plane(viewer_with_image, stack_image, wait_job):
    viewer = viewer_with_image
    layer = viewer.add_image(stack_image[:3], name="stack")
    widget = segment_panel(viewer)
    widget.image.value = layer
    assert widget.axes.value == "ZYX" and not widget.axes.native.isHidden()
    wait_job(widget.segment())
    labels = viewer.layers["stack labels"].data
    assert labels.shape == (3, 128, 128)
    ids = [set(np.unique(plane)) - {0} for plane in labels]
    assert all(len(plane_ids) > 1 for plane_ids in ids)
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])  # no id is used in two planes


def test_planes_on_the_last_axis(viewer_with_image, stack_image, wait_job, errors):
    """A (Y, X, Z) layer: detected as YXZ (2 planes, not 128 planes of 128 x 2); the labels
    keep the layer's axes and geometry, and each plane is the one of the same plane as ZYX."""
    viewer = viewer_with_image
    data = np.moveaxis(stack_image[:2], 0, -1)  # (128, 128, 2)
    layer = viewer.add_image(data, name="yxz", scale=(0.5, 0.5, 2.0))
    widget = segment_panel(viewer)
    widget.image.value = layer
    assert widget.axes.value == "YXZ"
    assert {"ZYX", "YXC", "YXZ"} <= set(widget.axes.choices)
    wait_job(widget.segment())
    assert errors == []
    labels = viewer.layers["yxz labels"]
    assert labels.data.shape == data.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    first = viewer.add_image(stack_image[0], name="first plane")
    widget.image.value = first
    wait_job(widget.segment())
    np.testing.assert_array_equal(labels.data[..., 0] > 0, viewer.layers["first plane labels"].data > 0)
    # the user's choice wins: the same layer read as planes first is 128 planes of 128 x 2
    widget.image.value = layer
    widget.axes.value = "ZYX"
    assert widget.layout_for(layer).n_planes == 128


def test_an_rgb_image_is_segmented_as_gray(viewer_with_image, nuclei_image, wait_job, errors):
    """The docs promise RGB: a one-channel model reads the mean of the colours."""
    viewer = viewer_with_image
    gray = nuclei_image[0]
    colour = np.stack([gray // 2, gray, gray // 4], axis=-1)
    rgb = viewer.add_image(colour, name="rgb", rgb=True)
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    expected = viewer.layers["nuclei labels"].data
    widget.image.value = rgb
    wait_job(widget.segment())
    assert errors == []
    labels = viewer.layers["rgb labels"].data
    assert labels.shape == gray.shape and labels.max() > 1
    assert abs(int(labels.max()) - int(expected.max())) <= 2  # the same cells, about


def test_wrong_channels_is_reported(viewer_with_image, wait_job, errors):
    viewer = viewer_with_image
    two = viewer.add_image(np.zeros((2, 64, 64), np.uint8), name="two channels")
    widget = segment_panel(viewer)
    widget.image.value = two
    widget.axes.value = "CYX"
    job = widget.segment()
    wait_job(job)
    assert job.error is not None
    assert len(errors) == 1 and "channel" in errors[0] and errors[0].startswith("Segmentation")
    assert widget.run_button.isEnabled()


def test_missing_model_file_is_reported(viewer_with_image, tmp_path, errors):
    widget = segment_panel(viewer_with_image)
    widget.model.value = "model file…"
    widget.model_file.value = tmp_path / "nope.pt"
    assert widget.segment() is None
    assert len(errors) == 1 and "nope.pt does not exist" in errors[0]
    widget.model_file.value = ""
    assert widget.segment() is None
    assert "choose a model file (.pt) or package (.zip) first" in errors[-1]


def test_a_corrected_result_is_kept_and_its_undo_still_works(viewer_with_image, wait_job):
    """Painting in '<image> labels' makes it the user's: a rerun adds a new layer, the
    corrected one keeps its pixels and its undo history."""
    viewer = viewer_with_image
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    corrected = viewer.layers["nuclei labels"]
    before = corrected.data.copy()
    corrected.brush_size = 5
    corrected.paint((60, 60), 99)
    painted = corrected.data.copy()
    assert (painted == 99).any()

    wait_job(widget.segment())
    assert viewer.layers["nuclei labels"] is corrected
    np.testing.assert_array_equal(corrected.data, painted)
    assert "napari_unet" not in corrected.metadata  # now the user's layer
    new = widget.labels_layer
    assert new is not corrected and new.metadata["napari_unet"] == "segment"
    assert new.name == "nuclei labels [1]" and "corrected" in widget.status.value
    corrected.undo()
    np.testing.assert_array_equal(corrected.data, before)

    n_layers = len(viewer.layers)
    wait_job(widget.segment())  # the new, unedited result layer is updated in place
    assert len(viewer.layers) == n_layers and widget.labels_layer is new


def test_segmenting_another_image_does_not_claim_a_correction(
    viewer_with_image, nuclei_image, wait_job, errors
):
    """Segmenting a second image said "your corrected 'nuclei labels' is kept, the result is in
    a new layer" though nothing was corrected: the first image's result was taken for a result
    of this image. Only a corrected result of the same image is named now."""
    viewer = viewer_with_image
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    first = viewer.layers["nuclei labels"]
    widget.image.value = viewer.add_image(nuclei_image[0][:, ::-1], name="other")
    wait_job(widget.segment())
    assert errors == []
    assert widget.labels_layer is viewer.layers["other labels"] and first in viewer.layers
    assert "cells in" in widget.status.value and "corrected" not in widget.status.value


def test_an_extreme_rescaling_is_asked_first(
    viewer_with_image, tiny_model_path, wait_job, monkeypatch, qtbot, errors
):
    """A diameter of 3 px for a model trained on 16 px cells would upscale 5.3x (µm typed as
    pixels?): the panel asks; no does nothing, yes segments."""
    import dataclasses

    from napari_unet._qt._session import ModelEntry, session_for
    from napari_unet.engine.models import load_model

    net, checkpoint = load_model(tiny_model_path)
    trained = (net, dataclasses.replace(checkpoint, diameter=16.0))
    session_for(viewer_with_image).set_current(ModelEntry("16 px model", trained, kind="file"))
    widget = segment_panel(viewer_with_image)
    asked, answer = [], {"yes": False}
    monkeypatch.setattr(widget, "confirm_rescale", lambda q: asked.append(q) or answer["yes"])
    widget.diameter.value = 3.0
    wait_job(widget.segment())
    assert len(asked) == 1 and asked[0].factor == pytest.approx(16 / 3)
    assert widget.status.value.startswith("not segmented: a diameter of 3 px would rescale")
    assert "nuclei labels" not in viewer_with_image.layers and widget.run_button.isEnabled()

    answer["yes"] = True
    wait_job(widget.segment())
    qtbot.waitUntil(lambda: "nuclei labels" in viewer_with_image.layers, timeout=60_000)
    wait_job(widget.job)
    assert len(asked) == 2 and errors == []
    assert "cell diameter 3.0 px" in widget.status.value

    widget.diameter.value = 12.0  # 1.3x: no question
    wait_job(widget.segment())
    assert len(asked) == 2


def test_a_long_model_name_fits_with_the_full_path_as_tooltip(viewer_with_image, tmp_path):
    import shutil

    from napari_unet._qt._session import ModelEntry, session_for
    from napari_unet._qt.finetune_widget import FineTuneWidget

    viewer = viewer_with_image
    source = session_for(viewer).current.source
    long = tmp_path / ("nuclei_fine_tuned_on_the_third_experiment_" * 3 + ".pt")
    shutil.copy(source, long)
    widget = segment_panel(viewer)
    finetune = FineTuneWidget(viewer)
    before = widget.model.native.sizeHint().width()
    session_for(viewer).set_current(ModelEntry(long.name, str(long), kind="file"))
    assert widget.model.value.label == long.name
    assert widget.model.native.sizeHint().width() < before + 80  # the dock does not widen
    assert str(long) in widget.model.native.toolTip()
    assert finetune.start_model.value == long.name  # whole, wrapped
    assert finetune.start_model.native.wordWrap()
    assert str(long) in finetune.start_model.native.toolTip()


def test_normalising_by_the_contrast_limits(viewer_with_image, wait_job, errors, segment_calls):
    """With the box ticked the layer's contrast limits reach the engine as the intensity range
    (so a user can set the contrast so that the cells look right); unticked, the engine takes
    its percentiles. The choice is published to the session with the other options."""
    viewer = viewer_with_image
    layer = viewer.layers["nuclei"]
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    layer.contrast_limits = (150.0, 900.0)
    widget.use_contrast.value = True
    assert widget.session.segment_options["use_contrast_limits"] is True
    wait_job(widget.segment())
    assert errors == []
    assert [call.get("intensity_range") for call in segment_calls] == [None, (150.0, 900.0)]


def test_engine_options_turn_the_choice_into_a_range():
    from types import SimpleNamespace

    from napari_unet._qt._segment_call import engine_options

    layer = SimpleNamespace(contrast_limits=[10, 200])
    options = {"threshold": 0.5, "use_contrast_limits": True}
    assert engine_options(options, layer) == {"threshold": 0.5, "intensity_range": (10.0, 200.0)}
    assert engine_options({**options, "use_contrast_limits": False}, layer) == {"threshold": 0.5}
    assert options["use_contrast_limits"] is True  # the session's dict is left alone


def test_engine_warnings_reach_the_user_as_notifications(
    viewer_with_image, wait_job, monkeypatch, qtbot
):
    """A warning the engine raises while it segments (e.g. the diameter estimate falling back
    to the model's scale on a field without cells) is shown as a napari notification: the
    worker relays it from its thread; nothing depends on ``napari.run``'s hooks."""
    import warnings

    from napari.utils.notifications import NotificationSeverity, notification_manager

    import napari_unet.engine.segment as segment_module

    real = segment_module.iter_segment
    text = "segmented at the model's own scale (a test warning)"

    def warning_segment(*args, **kwargs):
        warnings.warn(text, stacklevel=2)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(segment_module, "iter_segment", warning_segment)
    shown = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        widget = segment_panel(viewer_with_image)
        job = widget.segment()
        wait_job(job)
        qtbot.waitUntil(lambda: any(text in str(n.message) for n in shown), timeout=10_000)
    finally:
        notification_manager.notification_ready.disconnect(shown.append)
    (note,) = [n for n in shown if text in str(n.message)]
    assert note.severity == NotificationSeverity.WARNING
    assert job.error is None and widget.labels_layer is not None  # the job still finished


def test_the_labels_lie_over_a_rotated_sheared_image(viewer_with_image, wait_job, errors):
    """An image placed with rotate, shear and an affine (a registered or tilted acquisition):
    every pixel of its labels, and of a partial or rerun result, maps to the same world point
    as the image's pixel (they used to get only its scale and translate)."""
    viewer = viewer_with_image
    image = viewer.layers["nuclei"]
    image.rotate = 30
    image.shear = [0.2]
    image.affine = np.array([[1.0, 0.0, 5.0], [0.1, 1.2, -3.0], [0.0, 0.0, 1.0]])
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    assert errors == []
    labels = viewer.layers["nuclei labels"]
    points = [(0, 0), (10, 100), (127, 127), (64, 3)]
    for point in points:
        np.testing.assert_allclose(labels.data_to_world(point), image.data_to_world(point))

    image.rotate = 0  # the image is moved: a rerun moves its result too
    wait_job(widget.segment())
    assert viewer.layers["nuclei labels"] is labels
    for point in points:
        np.testing.assert_allclose(labels.data_to_world(point), image.data_to_world(point))


def test_a_layer_of_six_axes_is_refused_with_a_sentence(viewer_with_image, errors):
    """napari-unet reads 2-D to 5-D images. A 6-D layer in the viewer used to raise in the
    panels' constructors (the axes choice), so that no panel opened; now they open, and
    Segment, Show uncertainty and Fine-tune say why they cannot use it."""
    from napari_unet._qt.finetune_widget import FineTuneWidget
    from napari_unet._qt.inspect_widget import InspectWidget

    viewer = viewer_with_image
    viewer.layers.remove("nuclei")
    six = viewer.add_image(np.zeros((1, 1, 1, 2, 32, 32), np.uint8), name="six")
    six_labels = viewer.add_labels(np.zeros((1, 1, 1, 2, 32, 32), np.int32), name="six labels")
    widget = segment_panel(viewer)
    assert widget.image.value is six and not widget.axes.visible
    assert widget.segment() is None
    assert errors[-1] == (
        "Segmentation failed: napari-unet reads 2-D to 5-D images, not shape (1, 1, 1, 2, 32, 32)."
    )
    assert widget.corrections.show_uncertainty() is None
    assert errors[-1].startswith("Uncertainty failed: napari-unet reads 2-D to 5-D")
    finetune = FineTuneWidget(viewer)
    assert finetune.image.value is six and finetune.labels.value is six_labels
    assert finetune.start() is None
    assert errors[-1].startswith("Fine-tuning failed: napari-unet reads 2-D to 5-D")
    inspect = InspectWidget(viewer)
    assert inspect.labels.value is six_labels and not inspect.axes.visible
    widget.image.value = viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="stack")
    assert widget.axes.value == "ZYX"  # the panel still works for other layers


def test_renaming_the_chosen_layer_keeps_it_chosen(viewer_with_image, stack_image, nuclei_image):
    """Renaming the chosen layer used to switch the panels to the first layer of its kind (and
    reset the axes chosen for it), so that the next click segmented or trained on another
    image; the choice, and its axes, now stay."""
    from napari_unet._qt.finetune_widget import FineTuneWidget

    viewer = viewer_with_image
    stack = viewer.add_image(stack_image[:3], name="stack")
    viewer.add_labels(nuclei_image[1], name="first labels")
    painted = viewer.add_labels(nuclei_image[1], name="painted")
    widget = segment_panel(viewer)
    widget.image.value = stack
    widget.axes.value = "YXZ"  # the user's reading, not the detected one
    finetune = FineTuneWidget(viewer)
    finetune.labels.value = painted
    changes = []
    widget.image.changed.connect(changes.append)

    stack.name = "stack, renamed"
    painted.name = "painted, renamed"
    assert widget.image.value is stack and widget.axes.value == "YXZ"
    assert finetune.labels.value is painted
    assert changes == []
    assert "stack, renamed" in [widget.image.native.itemText(i) for i in range(widget.image.native.count())]

    viewer.layers.remove(stack)  # removing it still moves the choice on, and says so
    assert widget.image.value is viewer.layers["nuclei"] and changes == [viewer.layers["nuclei"]]


def test_a_broken_model_file_gives_way_to_the_model_used_before(
    viewer_with_image, tmp_path, wait_job, errors
):
    """A picked file that is no model failed to load and stayed the current model, so every
    later Segment failed the same way. Now the panel goes back to the model it used before and
    says so, naming the file; the next Segment works."""
    from napari_unet._qt._session import session_for
    from napari_unet._qt.segment_widget import MODEL_FILE

    viewer = viewer_with_image
    session = session_for(viewer)
    before = session.current  # the tiny test model
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    widget = segment_panel(viewer)
    widget.model.value = MODEL_FILE
    widget.model_file.value = broken

    job = widget.segment()
    wait_job(job)
    assert job.error is not None
    assert len(errors) == 1 and str(broken) in errors[0] and "could not be read" in errors[0]
    assert session.current is before and widget.model.value is before
    assert not widget.model_file.visible
    assert str(broken) in widget.status.value and f"back to '{before.label}'" in widget.status.value

    job = widget.segment()
    wait_job(job)
    assert job.error is None and len(errors) == 1
    assert "cells in" in widget.status.value


def test_segment_again_after_renaming_the_image_updates_its_result(viewer_with_image, wait_job, errors):
    """The result layer was keyed by the image's name: after the image was renamed, Segment
    added a second result instead of updating its own."""
    viewer = viewer_with_image
    widget = segment_panel(viewer)
    wait_job(widget.segment())
    result = viewer.layers["nuclei labels"]
    n_layers = len(viewer.layers)
    viewer.layers["nuclei"].name = "dapi"
    wait_job(widget.segment())
    assert len(viewer.layers) == n_layers and result in viewer.layers and errors == []
