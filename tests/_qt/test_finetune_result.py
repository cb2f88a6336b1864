"""What a Fine-tune run leaves: the closing check of the painted cells, the minimum confidence
chosen on them, Save model…, and the fall-back from a model file that cannot be loaded."""

from __future__ import annotations

import numpy as np
import pytest
from finetune_helpers import finetune_panel, paint

from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt.segment_widget import MODEL_FILE, SegmentWidget


def test_save_writes_a_loadable_model_and_asks_before_replacing(
    viewer_with_image, nuclei_image, wait_job, tmp_path, monkeypatch, errors, qtbot
):
    from napari_unet.engine.api import load_model

    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=3)
    wait_job(widget.start())
    # the closing check's line (the run's outcome and its scores) comes when it ends: wait for
    # it, so that the saves' lines come after
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    asked: list = []
    chosen = {"path": str(tmp_path / "fine-tuned")}  # the suffix is added
    answer = {"replace": False}
    monkeypatch.setattr(widget, "ask_save_path", lambda: chosen["path"])
    monkeypatch.setattr(
        widget, "confirm_overwrite", lambda path: asked.append(path) or answer["replace"]
    )

    wait_job(widget.save_model())
    path = tmp_path / "fine-tuned.pt"
    assert asked == []  # a new file: nothing to confirm
    net, checkpoint = load_model(path)
    kept_net, kept = widget.result_entry.source
    for name, tensor in kept_net.state_dict().items():
        assert np.array_equal(net.state_dict()[name].numpy(), tensor.numpy())
    # the model started without a diameter, so it keeps the painted cells' (about 16 px)
    assert 10 < checkpoint.diameter == kept.diameter < 25
    assert checkpoint.training["steps_done"] == 3
    assert checkpoint.extra["fine_tuned_on"] == "painted"
    assert checkpoint.extra["fine_tuned_from"] == "tiny test model"
    assert [h["step"] for h in checkpoint.history if "loss" in h] == [1, 2, 3]

    # an existing file is replaced only after the user said yes
    other = tmp_path / "other.pt"
    other.write_bytes(b"not a model")
    chosen["path"] = str(other)
    assert widget.save_model() is None
    assert asked == [other] and other.read_bytes() == b"not a model"
    answer["replace"] = True
    wait_job(widget.save_model())
    assert len(asked) == 2
    assert load_model(other)[1].training["steps_done"] == 3

    assert widget.status.value == f"saved {other}"

    # the dialog cancelled: nothing happens
    chosen["path"] = ""
    assert widget.save_model() is None
    assert errors == []

    # a save that fails (a read-only folder; the tests may run as root, who may write anywhere)
    # is said in the status, which said 'saving …' for ever
    import napari_unet.engine.checkpoint as checkpoint_module

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", refused)
    chosen["path"] = str(tmp_path / "read-only" / "m.pt")
    wait_job(widget.save_model())
    assert errors[-1].startswith("Saving the model failed: [Errno 13] Permission denied")
    assert widget.status.value == "not saved: m.pt (see the notification)"


def test_a_fine_tuned_model_that_scores_worse_is_not_recommended(
    viewer_with_image, nuclei_image, wait_job, qtbot, monkeypatch, errors
):
    """The closing check found fewer painted cells and more extra objects than the start
    model, and the status still said "Click 'Use for Segment' to segment with it"."""
    import napari_unet._qt._finetune_job as job_module
    from napari_unet._qt._finetune_checks import PaintedScore

    scores = iter([PaintedScore(found=10, painted=12, extra=0), PaintedScore(4, 12, 3)])
    monkeypatch.setattr(job_module, "painted_score", lambda *args: next(scores))
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=2)
    wait_job(widget.start())
    qtbot.waitUntil(lambda: "Painted cells" in widget.status.value, timeout=30_000)
    status = widget.status.value
    assert "before: 10 of 12 painted cells found, 0 extra objects" in status
    assert "after: 4 of 12 painted cells found, 3 extra objects" in status
    assert "The start model did better (2 errors against 11): keep it" in status
    assert "Click 'Use for Segment' to segment" not in status
    assert widget.use_button.isEnabled() and errors == []  # the user may still judge otherwise


def test_the_closing_status_is_built_from_the_runs_own_outcome(
    viewer_with_image, nuclei_image, wait_job, qtbot, monkeypatch, tmp_path, errors
):
    """The closing check appended its scores to whatever the status line showed when it ended:
    'saved m.pt. Painted cells, …' after a save, or another run's line after a new Start. Now
    its line is the run's outcome with its scores, and a newer run gets none of them."""
    import threading

    import napari_unet._qt._finetune_job as job_module
    import napari_unet._qt._finetune_preview as preview_module
    from napari_unet._qt._finetune_checks import PaintedScore

    gate = threading.Event()  # holds the closing check until the test lets it go
    real = preview_module.scored_preview_job

    def held(*args, **kwargs):
        assert gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(preview_module, "scored_preview_job", held)
    monkeypatch.setattr(job_module, "painted_score", lambda *a: PaintedScore(10, 12, 1))
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=2)
    wait_job(widget.start())
    outcome = widget.status.value
    assert outcome.startswith("done after step 2 (") and widget.preview.runner.busy

    # a save while the check runs: its line, then the run's whole closing line
    path = tmp_path / "m.pt"
    monkeypatch.setattr(widget, "ask_save_path", lambda: str(path))
    wait_job(widget.save_model())
    assert widget.status.value == f"saved {path}"
    gate.set()
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert widget.status.value == (
        f"{outcome}. Painted cells, before: 10 of 12 painted cells found, 1 extra object; "
        "after: 10 of 12 painted cells found, 1 extra object. Click 'Use for Segment' to "
        "segment with it."
    )

    # Use for Segment before the check ends: the line says that Segment uses it
    gate.clear()
    wait_job(widget.start())
    outcome = widget.status.value
    widget.use_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert widget.status.value.startswith(f"{outcome}. Painted cells, before: ")
    assert widget.status.value.endswith("1 extra object. Segment uses it.")

    # a new run started while the check of the one before runs: none of the old scores
    gate.clear()
    wait_job(widget.start())
    widget.steps.value, widget.minutes.value = 5000, 0
    job = widget.start()
    shown: list[str] = []
    widget.status.changed.connect(shown.append)
    gate.set()
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    assert job.running and not any("Painted cells" in text for text in shown), shown
    widget.stop()
    wait_job(job)
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)  # its own check
    assert errors == []


def test_the_painted_score_covers_the_whole_plane_without_regions():
    """Why the closing check (and the score before training) segments the whole plane, not the
    painted cells' bounding box: without annotated regions the whole plane is annotated
    (unpainted pixels are taught as background), so an object far from every painted cell is
    an extra object; with regions, only those inside them (or by a painted cell) count."""
    from napari_unet._qt._finetune_checks import PaintedScore, painted_score

    painted = np.zeros((200, 200), np.int32)
    painted[10:20, 10:20] = 1
    found = painted.copy()
    found[170:180, 170:180] = 2  # far outside the painted cell's box
    assert painted_score(found, painted, None) == PaintedScore(found=1, painted=1, extra=1)
    regions = np.zeros(painted.shape, bool)
    regions[:50, :50] = True
    assert painted_score(found, painted, regions) == PaintedScore(found=1, painted=1, extra=0)


def test_the_painted_score_counts_with_its_nouns():
    from napari_unet._qt._finetune_checks import PaintedScore

    assert PaintedScore(found=1, painted=1, extra=1).sentence() == (
        "1 of 1 painted cell found, 1 extra object"
    )
    assert PaintedScore(found=4, painted=12, extra=3).sentence() == (
        "4 of 12 painted cells found, 3 extra objects"
    )


def test_the_minimum_confidence_chosen_on_the_painted_cells_follows_the_model(
    viewer_with_image, nuclei_image, wait_job, monkeypatch, segment_calls, tmp_path
):
    """After a fine-tune the panel chooses the model's minimum confidence on the painted cells
    (the engine's choice is replaced by a known one here; the choice itself is tested in
    tests/engine/test_confidence_calibration.py): it is shown, stored in the model, taken by
    Segment's control when the model is used, and read back from a saved file."""
    from napari_unet.engine import confidence_calibration
    from napari_unet.engine.checkpoint import read_checkpoint_metadata

    seen: list[float] = []

    def choose(scored, *, previous, candidates=confidence_calibration.CANDIDATES):
        seen.append(previous)
        cells = int(sum(len(np.unique(a[a > 0])) for _, _, a, _ in scored))
        scores = {0.1: 0.9, 0.35: 0.4}
        return confidence_calibration.ConfidenceCalibration(0.1, scores, cells, previous)

    monkeypatch.setattr(confidence_calibration, "choose_min_confidence", choose)
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    segment = SegmentWidget(viewer)
    assert segment.min_confidence.value == pytest.approx(0.35)
    segment.min_confidence.value = 0.3
    widget = finetune_panel(viewer, steps=2)
    wait_job(widget.start())

    assert seen == [pytest.approx(0.3)]  # a tie would keep what Segment segments with
    assert "minimum confidence 0.1, chosen on" in widget.notes.value
    entry = widget.result_entry
    assert entry.min_confidence == 0.1
    assert entry.source[1].extra["instance_step"]["min_confidence"] == 0.1
    assert segment.min_confidence.value == pytest.approx(0.3)  # not current yet
    widget.use_button.click()
    assert segment.min_confidence.value == pytest.approx(0.1)
    wait_job(segment.segment())
    assert segment_calls[-1]["min_confidence"] == pytest.approx(0.1)

    # saved and picked as a file, the model brings its value with it
    path = tmp_path / "tuned.pt"
    monkeypatch.setattr(widget, "ask_save_path", lambda: str(path))
    wait_job(widget.save_model())
    assert read_checkpoint_metadata(path).extra["instance_step"]["min_confidence"] == 0.1
    segment.min_confidence.value = 0.5
    segment.model.value = MODEL_FILE
    segment.model_file.value = path
    assert segment.selected_model().min_confidence == 0.1
    assert segment.min_confidence.value == pytest.approx(0.1)


def test_a_broken_model_file_gives_way_before_fine_tuning(
    viewer_with_image, nuclei_image, tmp_path, wait_job, errors, qtbot
):
    """A picked file that is no model failed every Start the same way and stayed the model;
    as in Segment, the panel now goes back to the model used before and says so."""
    viewer = viewer_with_image
    session = session_for(viewer)
    before = session.current
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    session.set_current(ModelEntry("broken.pt", broken, kind="file"))  # as Segment picks it
    widget = finetune_panel(viewer, steps=2)
    widget.labels.value = paint(viewer, nuclei_image[1])
    job = widget.start()
    wait_job(job)
    assert job.error is not None and str(broken) in errors[-1]
    assert session.current is before
    assert str(broken) in widget.status.value and f"back to '{before.label}'" in widget.status.value
    wait_job(widget.start())  # the next run trains
    assert widget.result_entry is not None
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)  # its check
