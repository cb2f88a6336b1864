"""The minimum confidence chosen for a model on annotated cells, stored in its file and used by
``segment`` when the caller gives none.

A stand-in network (``tiling.iter_predict`` replaced) draws every bright pixel as a cell with a
cell probability set by the test, so the confidence of each object is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tests.engine.test_segment import discs, tiny_net

from napari_unet.engine import segment as segment_module
from napari_unet.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_unet.engine.confidence_calibration import (
    ConfidenceCalibration,
    calibrate_min_confidence,
    choose_min_confidence,
    model_min_confidence,
    painted_region,
    with_calibration,
)
from napari_unet.engine.events import PlaneDone, TileDone, drive
from napari_unet.engine.label_step import MIN_CONFIDENCE


def _objects(confidences: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, confidence per id) of squares side by side, one per confidence."""
    labels = np.zeros((20, 12 * len(confidences)), np.int32)
    for i in range(len(confidences)):
        labels[4:14, 12 * i + 1 : 12 * i + 11] = i + 1
    return labels, np.array([0.0, *confidences])


def test_the_value_that_drops_the_false_objects_and_keeps_the_true_ones_is_chosen():
    labels, confidence = _objects([0.25, 0.25, 0.25, 0.05, 0.05])
    annotation = np.where(labels <= 3, labels, 0)  # objects 4 and 5 are false
    calibration = choose_min_confidence(
        [(labels, confidence, annotation, None)], previous=MIN_CONFIDENCE
    )
    # 0.1 and 0.2 both keep the three true objects alone (AP 1); the tie goes to the value
    # closest to the model's 0.35. At 0.35 every object goes (AP 0), at 0 the false ones stay.
    assert calibration.min_confidence == 0.2
    assert calibration.scores[0.1] == calibration.scores[0.2] == 1.0
    assert calibration.scores[0.0] == pytest.approx(3 / 5)
    assert calibration.scores[0.35] == 0.0
    assert calibration.cells == 3
    assert "0.35 would give 0.00" in calibration.describe()


def test_the_choice_is_never_stricter_than_the_default():
    """A few true cells of high confidence and a false one of 0.45: a stricter filter would
    score better on them, but it is not tried."""
    labels, confidence = _objects([0.6, 0.6, 0.45])
    annotation = np.where(labels <= 2, labels, 0)
    calibration = choose_min_confidence(
        [(labels, confidence, annotation, None)], previous=MIN_CONFIDENCE
    )
    assert max(calibration.scores) == MIN_CONFIDENCE and 0.5 not in calibration.scores
    assert calibration.min_confidence == MIN_CONFIDENCE
    stricter = choose_min_confidence([(labels, confidence, annotation, None)], previous=0.5)
    assert stricter.min_confidence == 0.5  # a model that chose 0.5 before may keep it


def test_without_evidence_the_model_keeps_its_value():
    labels, confidence = _objects([0.9, 0.9])
    calibration = choose_min_confidence([(labels, confidence, labels, None)], previous=0.35)
    assert set(calibration.scores.values()) == {1.0}
    assert calibration.min_confidence == 0.35 and not calibration.decided
    assert calibration.describe().startswith("minimum confidence stays 0.35")


def test_only_the_annotated_region_counts():
    """Outside the region an unannotated object is not a false one."""
    labels, confidence = _objects([0.25, 0.6])
    annotation = np.where(labels == 1, 1, 0)
    region = np.zeros(labels.shape, bool)
    region[:, :12] = True  # only the first object's column was annotated
    calibration = choose_min_confidence(
        [(labels, confidence, annotation, region)], previous=MIN_CONFIDENCE
    )
    assert calibration.min_confidence == 0.2 and calibration.cells == 1
    with pytest.raises(ValueError, match="no annotated cell"):
        choose_min_confidence(
            [(labels, confidence, np.zeros_like(labels), region)], previous=MIN_CONFIDENCE
        )


def test_a_model_file_carries_its_value():
    checkpoint = Checkpoint(config=tiny_net().config)
    assert model_min_confidence(checkpoint) == MIN_CONFIDENCE
    assert model_min_confidence(None) == MIN_CONFIDENCE
    chosen = ConfidenceCalibration(0.1, {0.1: 0.8, 0.35: 0.2}, 7, 0.35)
    extra = with_calibration({"name": "mine"}, chosen)
    assert extra["name"] == "mine" and extra["instance_step"]["chosen_on_cells"] == 7
    assert model_min_confidence(dataclasses.replace(checkpoint, extra=extra)) == 0.1
    broken = dataclasses.replace(checkpoint, extra={"instance_step": {"min_confidence": 3}})
    assert model_min_confidence(broken) == MIN_CONFIDENCE


@pytest.fixture
def unsure_network(monkeypatch):
    """A stand-in network that draws the bright pixels as cells with cell probability 0.25
    (and the rest of their mass on the border class): a model unsure of its cells."""

    def unsure(model, image, *, normalization=None, **kwargs):
        planes = image.astype(np.float32).mean(axis=1)
        out = []
        for i, plane in enumerate(planes):
            bright = plane > 0.5 * plane.max()
            cell = np.where(bright, 0.25, 0.0).astype(np.float32)
            border = np.where(bright, 0.7, 0.0).astype(np.float32)
            out.append(np.stack([1 - cell - border, cell, border]))
            yield TileDone(done=i + 1, total=len(planes), plane=i, n_planes=len(planes))
            yield PlaneDone(plane=i, n_planes=len(planes))
        return np.stack(out)

    monkeypatch.setattr("napari_unet.engine.tiling.iter_predict", unsure)


def test_segment_uses_the_value_the_model_file_chose(unsure_network, tmp_path):
    image, truth = discs((96, 96), 12, 24)
    path = save_checkpoint(tmp_path / "m.pt", tiny_net(), diameter=24.0)
    net, checkpoint = load_checkpoint(path)
    # cell probability 0.25 seeds nothing at the default seed threshold: seed at 0.2
    options = {"diameter": 24.0, "threshold": 0.2, "min_size": 0}
    default = drive(segment_module.iter_segment(image, (net, checkpoint), **options))
    assert default.labels.max() == 0  # the bundled model's 0.35 drops every object

    calibration = calibrate_min_confidence((net, checkpoint), [image], [truth], **options)
    assert calibration.min_confidence < 0.25
    assert calibration.scores[calibration.min_confidence] > 0.9
    chosen = dataclasses.replace(checkpoint, extra=with_calibration(checkpoint.extra, calibration))
    found = drive(segment_module.iter_segment(image, (net, chosen), **options))
    assert found.labels.max() == truth.max()
    # a value given by the caller still wins
    given = drive(segment_module.iter_segment(image, (net, chosen), min_confidence=0.5, **options))
    assert given.labels.max() == 0


def test_without_regions_only_the_surroundings_of_the_painted_cells_count():
    """Two cells painted of four: the unpainted ones far away are not false objects."""
    found = np.zeros((20, 90), np.int32)
    for i, c in enumerate((1, 13, 61, 73)):
        found[4:14, c : c + 10] = i + 1
    confidence = np.array([0.0, 0.6, 0.6, 0.2, 0.2])
    painted = np.where(found <= 2, found, 0)  # objects 3 and 4, far away, were not painted
    region = painted_region(painted, diameter=10)
    assert region[:, :24].any() and not region[:, 60:].any()
    calibration = choose_min_confidence(
        [(found, confidence, painted, region)], previous=MIN_CONFIDENCE
    )
    assert calibration.min_confidence == MIN_CONFIDENCE  # no evidence against the unpainted
    everywhere = choose_min_confidence(
        [(found, confidence, painted, None)], previous=MIN_CONFIDENCE
    )
    assert everywhere.scores[0.0] < everywhere.scores[0.35]  # there they would count as false
