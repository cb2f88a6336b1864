"""Faults of the correction loop as a user meets them in the viewer: layers duplicated, statuses
that stay stuck, the wrong image or plane used. Hand-made labels where what a model finds does
not matter."""

from __future__ import annotations

import numpy as np

from napari_unet._qt.segment_widget import SegmentWidget

GEOMETRY = {"scale": (0.5, 0.5), "translate": (3.0, 4.0)}  # as the image of viewer_with_image


def _segment_panel(viewer):
    segment = SegmentWidget(viewer)
    segment.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    segment.device.value = "cpu"
    return segment


def _result(viewer, segment):
    """A hand-made result, as if Segment had put it into 'nuclei labels'."""
    labels = np.zeros((128, 128), np.int32)
    labels[8:24, 8:24], labels[40:56, 40:56] = 1, 2
    segment.labels_layer = viewer.add_labels(labels, name="nuclei labels", **GEOMETRY)
    return segment.labels_layer


def _names(viewer):
    return [layer.name for layer in viewer.layers]


def test_correcting_the_same_result_twice_reuses_its_copy(viewer_with_image, errors):
    """A second *Correct this result* made a second copy and a second split-lines layer
    ('… corrections [1]'), the user's edits left in the first; now the copy of the same result is
    selected again, edits kept. A new result (Segment again) gets a new copy."""
    viewer = viewer_with_image
    segment = _segment_panel(viewer)
    result = _result(viewer, segment)
    tools = segment.corrections
    first = tools.correct()
    data = np.array(first.data)
    data[data == 1] = 0  # the user deletes an object
    first.data = data
    viewer.layers.selection.active = result
    again = tools.correct()
    assert again is first and tools.split_lines.name == "nuclei labels corrections: split lines"
    assert _names(viewer) == [
        "nuclei",
        "nuclei labels",
        "nuclei labels corrections",
        "nuclei labels corrections: split lines",
    ]
    assert viewer.layers.selection.active is first and not np.asarray(first.data)[8:24, 8:24].any()
    assert "already the copy of this result" in tools.status.text()
    viewer.layers.remove(tools.split_lines)  # its split lines removed: made again, once
    assert tools.correct() is first and "nuclei labels corrections: split lines" in _names(viewer)
    result.data = np.where(result.data == 2, 3, result.data)  # another result in the layer
    assert tools.correct() is not first
    assert len(viewer.layers) == 6 and errors == []


def test_the_uncertainty_status_does_not_stay_on_four_passes(
    viewer_with_image, wait_job, errors, monkeypatch
):
    """A failed uncertainty, or one whose image was removed while it ran, left the panel
    reading 'uncertainty of nuclei: 4 passes…' for ever; now the line says what happened. The
    removal stops the job (its four passes ran to the end before)."""
    import napari_unet.engine.uncertainty as uncertainty

    viewer = viewer_with_image
    tools = _segment_panel(viewer).corrections
    job = tools.show_uncertainty()
    viewer.layers.remove("nuclei")
    wait_job(job)
    assert job.error is None and errors == [] and job.cancelled
    assert tools.status.text() == "uncertainty stopped: the image 'nuclei' was removed"
    assert tools.uncertainty_layer is None and tools.uncertainty_button.isEnabled()

    def fails(*_args, **_kwargs):
        raise ValueError("the passes disagree about everything")

    monkeypatch.setattr(uncertainty, "iter_tta_uncertainty", fails)
    viewer.add_image(np.zeros((64, 64), np.float32), name="blank")
    job = tools.show_uncertainty()
    wait_job(job)
    assert errors == ["Uncertainty failed: the passes disagree about everything."]
    assert tools.status.text() == "failed (see the notification)"


def test_replacing_the_image_data_stops_the_uncertainty(viewer_with_image, wait_job, errors):
    """The image's data replaced while Show uncertainty ran (another shape): the uncertainty
    of the old data was shown over the new, a (128, 128) map over a (3, 40, 50) stack. Now the
    job stops and the status says why; nothing is added."""
    viewer = viewer_with_image
    tools = _segment_panel(viewer).corrections
    image = viewer.layers["nuclei"]
    job = tools.show_uncertainty()
    image.data = np.zeros((3, 40, 50), np.uint16)
    wait_job(job)
    assert job.error is None and errors == [] and job.cancelled
    assert tools.status.text() == "uncertainty stopped: the data of 'nuclei' were replaced"
    assert tools.uncertainty_layer is None and _names(viewer) == ["nuclei"]
    assert tools.uncertainty_button.isEnabled()


def test_the_uncertainty_of_an_image_with_one_channel_axis(
    viewer_with_image, nuclei_image, wait_job, errors
):
    """A (Y, X, 1) image, read as YXC with one channel, segments, but Show uncertainty refused
    it: 'the uncertainty needs a one-channel image (or RGB)'. Its one channel is used now, as
    for the (Y, X) image."""
    viewer = viewer_with_image
    segment = _segment_panel(viewer)
    tools = segment.corrections
    wait_job(tools.show_uncertainty())
    expected = viewer.layers["nuclei uncertainty"].data.copy()
    segment.image.value = viewer.add_image(nuclei_image[0][..., None], name="one channel")
    assert segment.axes.value == "YXC"
    job = tools.show_uncertainty()
    wait_job(job)
    assert job.error is None and errors == []
    np.testing.assert_allclose(viewer.layers["one channel uncertainty"].data, expected, atol=1e-5)
    assert tools.status.text().startswith("uncertainty of one channel: mean")


def test_a_broken_model_file_gives_way_after_an_uncertainty(
    viewer_with_image, tmp_path, wait_job, errors
):
    """Show uncertainty with a picked file that is no model failed, and the file stayed the
    session's model, so Segment and the next uncertainty failed the same way. Now it goes back
    to the model used before, as a failed Segment does, and says so naming the file."""
    from napari_unet._qt._session import session_for
    from napari_unet._qt.segment_widget import MODEL_FILE

    viewer = viewer_with_image
    segment = _segment_panel(viewer)
    session = session_for(viewer)
    before = session.current
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    segment.model.value = MODEL_FILE
    segment.model_file.value = broken
    job = segment.corrections.show_uncertainty()
    wait_job(job)
    assert job.error is not None
    assert len(errors) == 1 and str(broken) in errors[0]
    assert session.current is before and segment.model.value is before
    status = segment.corrections.status.text()
    assert str(broken) in status and f"back to '{before.label}'" in status
    job = segment.corrections.show_uncertainty()
    wait_job(job)
    assert job.error is None and len(errors) == 1


def test_the_errors_status_does_not_stay_on_comparing(make_napari_viewer, wait_job, errors):
    """The segmentation removed while Show errors compared it: the panel read 'comparing seg
    with truth…' for ever; now it says why no error layer came."""
    from napari_unet._qt.inspect_widget import InspectWidget

    viewer = make_napari_viewer()
    truth = np.zeros((32, 32), np.int32)
    truth[4:12, 4:12] = 1
    viewer.add_labels(truth, name="truth")
    viewer.add_labels(truth * 5, name="seg")
    panel = InspectWidget(viewer)  # kept alive for the job
    tools = panel.errors
    tools.prediction.value, tools.reference.value = viewer.layers["seg"], viewer.layers["truth"]
    job = tools.show_errors()
    viewer.layers.remove("seg")
    wait_job(job)
    assert errors == [] and "seg errors" not in [layer.name for layer in viewer.layers]
    assert tools.status.text() == "errors not shown: the segmentation 'seg' was removed"


def test_a_plane_without_corrections_names_the_planes_with_them(make_napari_viewer, errors):
    """Corrections made on plane 3 of a 5-plane stack, Fine-tune with plane 2 on screen: the
    refusal said 'no object was edited', as if the corrections were lost; it now names the
    plane on screen and the planes that hold corrections. With plane 3 shown, plane 3 is
    used."""
    from napari_unet._qt._correction_layers import start_correction
    from napari_unet._qt.finetune_widget import FineTuneWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((5, 64, 64), np.float32), name="stack")
    labels = np.zeros((5, 64, 64), np.int32)
    labels[:, 4:16, 4:16], labels[:, 20:32, 4:16] = 1, 2
    result = viewer.add_labels(labels, name="stack labels")
    corrections, _lines = start_correction(viewer, result)
    data = np.array(corrections.data)
    data[3][data[3] == 1] = 0  # a false object deleted on plane 3
    corrections.data = data
    finetune = FineTuneWidget(viewer)
    finetune.labels.value, finetune.regions.value = corrections, None
    viewer.dims.set_point(0, 2)
    assert finetune.start() is None
    assert errors == [
        "Fine-tuning failed: nothing was corrected on plane (2,) of 'stack labels corrections', "
        "the plane on screen; the corrections are on plane (3,): show one of them, or draw the "
        "corrected area."
    ]
    viewer.dims.set_point(0, 3)
    request = finetune.training_request()
    assert finetune.label_plane == (3,)
    assert request.regions[4:16, 4:16].all() and request.labels[20:32, 4:16].all()


def test_fine_tune_takes_the_image_the_corrected_result_segmented(
    viewer_with_image, wait_job, errors
):
    """Two images of one size: the second segmented and corrected. Fine-tune's image picker
    stayed on the first, and the run learnt the corrections on the wrong image's pixels; the
    picker now follows the corrections to their image, whether the panel was open before or
    is opened after."""
    from napari_unet._qt.finetune_widget import FineTuneWidget

    viewer = viewer_with_image
    other = np.asarray(viewer.layers["nuclei"].data)[::-1].copy()
    viewer.add_image(other, name="other", **GEOMETRY)
    open_before = FineTuneWidget(viewer)
    assert open_before.image.value.name == "nuclei"
    segment = _segment_panel(viewer)
    segment.image.value = viewer.layers["other"]
    wait_job(segment.segment())
    corrections = segment.corrections.correct()
    assert open_before.labels.value is corrections
    assert open_before.image.value is viewer.layers["other"]
    open_after = FineTuneWidget(viewer)
    assert open_after.labels.value is corrections
    assert open_after.image.value is viewer.layers["other"]
    data = np.array(corrections.data)
    data[:, :] = 0
    data[40:56, 40:56] = 7  # a cell painted over everything the model found
    corrections.data = data
    request = open_after.training_request()
    np.testing.assert_array_equal(request.image, other)
    assert errors == []


def test_removing_the_corrections_removes_their_split_lines(viewer_with_image, errors):
    """The corrections layer removed, its split-lines layer stayed: a line drawn there cut the
    removed layer ('Split failed: the line does not cut object …' about a layer no longer
    shown) and the next Correct added '… split lines [1]' beside the orphan. The split lines now
    go with their corrections layer."""
    viewer = viewer_with_image
    segment = _segment_panel(viewer)
    _result(viewer, segment)
    tools = segment.corrections
    corrections = tools.correct()
    viewer.layers.remove(corrections)
    assert _names(viewer) == ["nuclei", "nuclei labels"]
    tools.correct()
    assert _names(viewer) == [
        "nuclei",
        "nuclei labels",
        "nuclei labels corrections",
        "nuclei labels corrections: split lines",
    ]
    viewer.layers.remove(tools.split_lines)  # the tool alone removed: the corrections stay
    assert "nuclei labels corrections" in _names(viewer) and errors == []


def test_correct_after_the_result_was_removed_says_so(viewer_with_image, errors):
    """Correct with the Segment result removed said 'segment an image first' to a user who had
    segmented; it now says the result was removed."""
    viewer = viewer_with_image
    segment = _segment_panel(viewer)
    tools = segment.corrections
    assert tools.correct() is None
    assert errors == ["Correction failed: segment an image first."]
    viewer.layers.remove(_result(viewer, segment))
    assert tools.correct() is None
    assert errors[-1] == "Correction failed: the result 'nuclei labels' was removed; segment again."


def test_an_empty_field_gets_no_annotate_here_box():
    """An all-zero image: no object, so every background pixel the passes differ on (by
    rounding) counted as a whole missed cell, and "annotate here next" ranked boxes of about a
    hundred expected errors on an empty field. The bundled model, the panel's job."""
    from napari_unet._qt._session import ModelEntry
    from napari_unet._qt._uncertainty_job import uncertainty_job
    from napari_unet.engine.events import drive

    entry = ModelEntry("bundled default", "default")
    result, boxes, _ = drive(uncertainty_job(np.zeros((160, 160), np.uint16), None, entry))
    assert result.labels.max() == 0 and boxes == []


def test_no_box_on_a_plane_of_planes_last_is_an_empty_box_layer(
    make_napari_viewer, tiny_entry, wait_job, errors
):
    """No box worth a visit on a (Y, X, Z) image: the empty Shapes layer was made 2-D and took
    the image's 3-D scale ('could not broadcast input array from shape (3,) into shape (2,)')."""
    from napari_unet._qt._session import session_for

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128, 2), np.uint16), name="empty yxz", scale=(0.5, 0.5, 2.0))
    session_for(viewer).set_current(tiny_entry)
    segment = SegmentWidget(viewer)
    segment.device.value = "cpu"
    assert segment.axes.value == "YXZ"
    tools = segment.corrections
    wait_job(tools.show_uncertainty())
    assert errors == []
    boxes = tools.boxes_layer
    assert boxes.ndim == 3 and len(boxes.data) == 0
    assert "no box ranked (none holds 0.5 expected errors)" in tools.status.text()


def test_the_uncertainty_segments_with_the_panels_options(viewer_with_image, wait_job, errors):
    """Show uncertainty took the diameter alone from the panel: its objects (their confidence,
    the expected errors that rank the boxes) ignored the minimum confidence, area and
    thresholds the user set, so they were not the objects Segment gives and the user corrects."""
    segment = _segment_panel(viewer_with_image)
    tools = segment.corrections
    segment.min_confidence.value = 0.0  # the tiny model is unsure of its cells
    wait_job(tools.show_uncertainty())
    assert errors == [] and "least confident objects: none" not in tools.status.text()
    segment.min_size.value = 100_000  # no object is this large
    wait_job(tools.show_uncertainty())
    assert errors == [] and "least confident objects: none" in tools.status.text()


def test_the_uncertainty_shows_its_progress_in_the_panel(viewer_with_image, wait_job, errors):
    """Show uncertainty drove napari's activity bar, which the other jobs leave out (its redraws
    held the event loop), and the panel showed no progress; now its own bar runs over the four
    passes and hides when the job ends."""
    tools = _segment_panel(viewer_with_image).corrections
    shown = []
    real_show = tools.progress.show
    tools.progress.show = lambda fraction, what="": shown.append(fraction) or real_show(fraction, what)
    job = tools.show_uncertainty()
    assert job.pbar is None and not tools.progress.bar.isHidden()
    wait_job(job)
    assert errors == [] and shown and shown[-1] == 1.0 and shown == sorted(shown)
    assert tools.progress.bar.isHidden()


def test_a_split_line_on_a_yxz_stack_cuts_the_plane_shown(make_napari_viewer, errors):
    """Labels with planes last (``YXZ``), shown as Y, X planes: the line was read as lying in
    the last two axes (X, Z), so it crossed no object."""
    from napari_unet._qt._correction_layers import start_correction

    viewer = make_napari_viewer()
    labels = np.zeros((40, 60, 3), np.int32)
    labels[10:30, 5:55, :] = 3  # a merge on every plane
    result = viewer.add_labels(labels, name="cells labels")
    corrections, lines = start_correction(viewer, result)
    viewer.dims.order = (2, 0, 1)  # Y, X on screen, Z the slider
    viewer.dims.set_point(2, 1)
    lines.add_paths(np.array([[0.0, 30.0, 1.0], [39.0, 30.0, 1.0]]))
    assert errors == []
    out = np.asarray(corrections.data)
    assert set(np.unique(out[..., 1])) == {0, 3, 4}  # cut on plane Z = 1 only
    np.testing.assert_array_equal(out[..., [0, 2]], labels[..., [0, 2]])


def test_a_split_on_a_stack_gives_ids_no_plane_uses(make_napari_viewer, errors):
    """A split on plane 0 of a stack gave the new piece the plane's largest id + 1, which
    plane 1 already used: two unrelated objects shared an id. Now the new id is above the
    whole stack's, and the brush, on the next free id, moves past it."""
    from napari_unet._qt._correction_layers import start_correction

    viewer = make_napari_viewer()
    labels = np.zeros((2, 40, 60), np.int32)
    labels[0, 10:30, 5:55] = 3  # a merge on plane 0
    labels[1, 10:30, 5:25], labels[1, 10:30, 35:55] = 4, 7  # plane 1 uses 4 and 7
    result = viewer.add_labels(labels, name="cells labels")
    corrections, lines = start_correction(viewer, result)
    assert corrections.selected_label == 8
    viewer.dims.set_point(0, 0)
    lines.add_paths(np.array([[0.0, 0.0, 30.0], [0.0, 39.0, 30.0]]))
    assert errors == []
    out = np.asarray(corrections.data)
    assert set(np.unique(out[0])) == {0, 3, 8}
    np.testing.assert_array_equal(out[1], labels[1])
    assert corrections.selected_label == 9  # a missed cell painted next is a new object


def test_a_split_is_one_undoable_edit(make_napari_viewer, errors):
    """A split replaced the layer's data: Ctrl-Z took back the edit before it and left the cut,
    and the new data stopped a running Fine-tune and marked the layer's results as old."""
    from napari_unet._qt._correction_layers import start_correction

    viewer = make_napari_viewer()
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 5:55], labels[32:38, 2:8] = 3, 5
    result = viewer.add_labels(labels, name="cells labels")
    corrections, lines = start_correction(viewer, result)
    corrections.data_setitem(np.nonzero(labels == 5), 0)  # the user deletes object 5
    replaced = []
    corrections.events.data.connect(replaced.append)
    lines.add_paths(np.array([[0.0, 30.0], [39.0, 30.0]]))
    assert set(np.unique(corrections.data)) == {0, 3, 4} and replaced == []
    corrections.undo()  # the split is taken back, the deletion stays
    expected = np.where(labels == 5, 0, labels)
    np.testing.assert_array_equal(corrections.data, expected)
    assert errors == []


def test_a_missed_cell_is_painted_as_a_new_object(viewer_with_image, errors):
    """The copy's brush was napari's label 1: a missed cell painted beside object 1 joined it
    (no border between them to learn), and object 1 counted as corrected wherever it was."""
    viewer = viewer_with_image
    segment = _segment_panel(viewer)
    _result(viewer, segment)
    corrections = segment.corrections.correct()
    assert corrections.selected_label == 3  # the next id after the result's 1 and 2
    assert errors == []
