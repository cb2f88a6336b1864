"""The cell diameter: the estimate, the rescale rule, and matching training data to a model."""

from __future__ import annotations

import numpy as np
import pytest
from tests.engine.test_segment import discs

from napari_unet.engine.diameter import (
    TrainingScale,
    estimate_diameter,
    match_training_diameter,
    rescale_factor,
    rescale_training_data,
)


def test_estimate_diameter_of_known_discs():
    _, labels = discs((120, 120), 14, 30)
    assert estimate_diameter(labels) == pytest.approx(14, abs=0.6)
    assert estimate_diameter(np.stack([labels, labels])) == pytest.approx(14, abs=0.6)
    _, small = discs((60, 60), 8, 20)
    both = estimate_diameter([labels, labels, small])
    assert both == pytest.approx(14, abs=0.6)  # 32 large discs outvote 9 small ones


def test_estimate_diameter_leaves_out_cells_cut_by_the_edge():
    labels = np.zeros((50, 50), np.int32)
    labels[10:20, 10:20] = 1
    labels[25:35, 10:20] = 2
    labels[10:20, 30:40] = 3
    labels[0:2, 0:10] = 4  # cut off by the edges: 20 px each
    labels[48:50, 0:10] = 5
    labels[20:30, 0:2] = 6
    labels[20:30, 48:50] = 7
    inner = np.sqrt(4 * 100 / np.pi)
    assert estimate_diameter(labels) == pytest.approx(inner)
    assert estimate_diameter(labels, exclude_border=False) == pytest.approx(
        np.sqrt(4 * 20 / np.pi)
    )
    labels[labels == 3] = 0  # too few inner cells left: all of them count
    assert estimate_diameter(labels) == pytest.approx(np.sqrt(4 * 20 / np.pi))


def test_estimate_diameter_needs_a_few_cells():
    labels = np.zeros((30, 30), np.int32)
    assert estimate_diameter(labels) is None
    labels[5:10, 5:10] = 1
    labels[15:20, 15:20] = 2
    assert estimate_diameter(labels) is None
    with pytest.raises(ValueError):
        estimate_diameter(np.zeros((3, 3), np.float32))


def test_rescale_factor():
    assert rescale_factor(12, 24) == 2.0
    assert rescale_factor(48, 24) == 0.5
    assert rescale_factor(24.5, 24) == 1.0
    assert rescale_factor(None, 24) == 1.0
    assert rescale_factor(12, None) == 1.0


def test_area_weighted_estimate_ignores_many_specks():
    _, labels = discs((120, 120), 14, 30)  # 16 discs of 14 px
    specks = labels.copy()
    rng = np.random.default_rng(0)
    free = np.argwhere(labels == 0)
    for i, (r, c) in enumerate(free[rng.choice(len(free), 40, replace=False)]):
        specks[r, c] = 1000 + i  # 40 one-pixel specks outnumber the discs
    assert estimate_diameter(specks) < 3
    assert estimate_diameter(specks, weighting="area") == pytest.approx(14, abs=0.6)
    assert estimate_diameter(specks, weighting="trimmed") == pytest.approx(14, abs=0.6)
    with pytest.raises(ValueError, match="weighting"):
        estimate_diameter(labels, weighting="mode")


def test_trimmed_estimate_is_not_pulled_up_by_a_few_large_cells():
    """Eleven cells of 14 px and five of 24 px: the large ones hold most of the foreground, so
    the area-weighted median says 24; counting each cell once says 14, as the labels do.
    Specks under a quarter of the area-weighted median area still do not count."""
    labels = np.zeros((200, 200), np.int32)
    rows, cols = np.mgrid[:200, :200]
    centres = [(20 + 30 * (i // 6), 20 + 30 * (i % 6)) for i in range(16)]
    for i, (r, c) in enumerate(centres):
        radius = 12 if i < 5 else 7
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = i + 1
    for j in range(30):  # specks between the cells
        labels[185 + j % 2 * 5, 5 + j * 6] = 100 + j
    assert estimate_diameter(labels, weighting="area") == pytest.approx(24, abs=1)
    assert estimate_diameter(labels, weighting="trimmed") == pytest.approx(14, abs=1)
    assert estimate_diameter(labels, weighting="count") < 3  # the specks outnumber the cells
    two_large = np.where(labels <= 2, labels, 0)
    two_large[150:152, 150:152] = 50  # two cells and a speck: too few cells once trimmed
    assert estimate_diameter(two_large, weighting="trimmed") is None


def test_rescale_training_data_keeps_ids_dtypes_and_channels():
    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 3:9], labels[10:18, 12:27] = 7, 300
    regions = np.zeros((20, 30), np.uint8)
    regions[:10] = 1
    image = np.random.default_rng(0).integers(0, 4000, (20, 30, 2)).astype(np.uint16)
    big_image, big_labels, big_regions = rescale_training_data(image, labels, regions, 2.0)
    assert big_image.shape == (40, 60, 2) and big_image.dtype == np.float32
    assert big_labels.shape == (40, 60) and big_labels.dtype == np.uint16
    assert set(np.unique(big_labels)) == {0, 7, 300}
    assert big_regions.dtype == bool and big_regions[:20].all() and not big_regions[20:].any()
    small_image, small_labels, none = rescale_training_data(image[..., 0], labels, None, 0.5)
    assert small_image.shape == small_labels.shape == (10, 15) and none is None


def test_matching_resizes_everything_when_the_diameters_differ():
    image, labels = discs((60, 90), 12, 20)  # 12 px cells; the model was trained at 24 px
    regions = np.ones(labels.shape, bool)
    images, labs, regs, scale = match_training_diameter(
        [image], [labels], [regions], model_diameter=24.0
    )
    assert scale.data_diameter == pytest.approx(estimate_diameter(labels))
    assert scale.factor == pytest.approx(24.0 / scale.data_diameter)
    assert images[0].shape == labs[0].shape == regs[0].shape
    assert labs[0].shape[0] == round(60 * scale.factor)
    assert scale.diameter == 24.0  # the fine-tuned model keeps the model's diameter
    assert scale.input_diameter == pytest.approx(scale.data_diameter)


def test_matching_keeps_data_within_the_tolerance_and_without_a_model_diameter():
    image, labels = discs((60, 90), 12, 20)
    d = estimate_diameter(labels)
    for model_diameter in (d * 1.1, None):
        images, labs, regs, scale = match_training_diameter(
            [image], [labels], [None], model_diameter=model_diameter
        )
        assert images[0] is image and labs[0] is labels and regs == [None]
        assert scale.factor == 1.0
    assert scale.diameter == pytest.approx(d)  # a new network stores the data's diameter


def test_a_given_diameter_wins_over_the_measured_one():
    image, labels = discs((60, 90), 12, 20)
    _, labs, _, scale = match_training_diameter(
        [image], [labels], [None], model_diameter=24.0, diameter=6.0
    )
    assert scale.data_diameter == 6.0 and scale.factor == 4.0
    assert labs[0].shape == (240, 360)


def test_too_few_cells_to_measure_leave_the_data_alone():
    labels = np.zeros((30, 30), np.int32)
    labels[5:10, 5:10] = 1
    _, _, _, scale = match_training_diameter(
        [np.zeros((30, 30))], [labels], [None], model_diameter=24.0
    )
    assert scale == TrainingScale(None, 24.0, 1.0) and scale.diameter == 24.0
    assert TrainingScale(None, None).input_diameter is None


def test_training_data_are_not_enlarged_past_the_cap(monkeypatch):
    """One-pixel cells and a model trained at 27.7 px: refused before anything is resized."""
    from napari_unet.engine import diameter as diameter_module

    labels = np.zeros((512, 512), np.int32)
    labels[4::16, 4::16] = np.arange(1, 32 * 32 + 1).reshape(32, 32)
    image = labels.astype(np.float32)
    monkeypatch.setattr(
        diameter_module, "rescale_training_data", lambda *a: pytest.fail("resized anyway")
    )
    with pytest.raises(ValueError, match=r"1\.13 px \(the model was trained at 27\.7 px\) would "
                       r"enlarge the image 24\.\d-fold from 512 x 512 to 125\d\d x 125\d\d"):
        match_training_diameter([image], [labels], [None], model_diameter=27.7)
