"""Segmentation through the one-call API: model loading, input checks, cell-diameter rescaling.

A tiny network with random weights cannot segment anything, so the rescaling logic is checked
with a stand-in predictor (``tiling.iter_predict`` replaced by a threshold of the image) that
records the image it is given; the real network is used for shapes, dtypes and the plumbing.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_unet.engine import api, diameter_estimate, models
from napari_unet.engine import segment as segment_module
from napari_unet.engine.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from napari_unet.engine.events import PlaneDone, TileDone, drive
from napari_unet.engine.model import UNet, UNetConfig

TRAINED_DIAMETER = 24.0


def tiny_net(in_channels: int = 1, n_classes: int = 3) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(in_channels=in_channels, n_classes=n_classes, depth=2, base_channels=4))


@pytest.fixture
def model_file(tmp_path):
    """A tiny model file that says it was trained on cells of 24 px."""
    return save_checkpoint(tmp_path / "tiny.pt", tiny_net(), diameter=TRAINED_DIAMETER)


def discs(shape, diameter, spacing):
    """Separate bright discs of ``diameter`` px on a grid; returns (image uint16, labels)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    labels = np.zeros(shape, np.int32)
    n = 0
    for r in np.arange(spacing / 2, shape[0] - spacing / 2 + 1, spacing):
        for c in np.arange(spacing / 2, shape[1] - spacing / 2 + 1, spacing):
            n += 1
            labels[(rows - r + 0.5) ** 2 + (cols - c + 0.5) ** 2 <= (diameter / 2) ** 2] = n
    image = np.where(labels > 0, 1000, 100).astype(np.uint16)
    return image, labels


@pytest.fixture
def oracle(monkeypatch):
    """Replace the network's prediction by a threshold of the image; record every call.

    Segmentation hands iter_predict its (P, C, Y, X) planes as they are; ``shape`` records them.
    """
    calls = []

    def fake_iter_predict(model, image, *, channel_axis=None, stack=False, **kwargs):
        assert stack is True and channel_axis == 1 and image.ndim == 4
        calls.append({"shape": image.shape, **kwargs})
        planes = image
        out = []
        for i, plane in enumerate(planes):
            plane = plane.astype(np.float32).mean(axis=0)
            lo, hi = float(plane.min()), float(plane.max())
            cell = (plane > (lo + hi) / 2).astype(np.float32) if hi > lo else np.zeros_like(plane)
            out.append(np.stack([1 - cell, cell, np.zeros_like(cell)]))
            yield TileDone(done=i + 1, total=len(planes), plane=i, n_planes=len(planes))
            yield PlaneDone(plane=i, n_planes=len(planes))
        return np.stack(out)

    monkeypatch.setattr("napari_unet.engine.tiling.iter_predict", fake_iter_predict)
    return calls


def drain(gen):
    events = []
    return events, drive(gen, events.append)


# -- load_model -------------------------------------------------------------------------------


def test_load_model_from_file_reads_the_training_diameter(model_file):
    net, checkpoint = api.load_model(model_file)
    assert isinstance(net, UNet)
    assert isinstance(checkpoint, Checkpoint)
    assert api.model_diameter(checkpoint) == TRAINED_DIAMETER
    again = api.load_model(str(model_file))
    assert again[0].config == net.config


def test_load_model_passes_models_through():
    net = tiny_net()
    got, checkpoint = api.load_model(net)
    assert got is net
    assert api.model_diameter(checkpoint) is None
    assert checkpoint.normalization == {"low": 1.0, "high": 99.8}
    pair = (net, checkpoint)
    assert api.load_model(pair)[0] is net and api.load_model(pair)[1] is checkpoint


def test_load_model_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        api.load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError):
        api.load_model(bad)
    with pytest.raises(TypeError, match="model must be"):
        api.load_model(42)
    monkeypatch.setattr(models, "bundled_model_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="bundled model is not installed"):
        api.load_model("default")
    with pytest.raises(FileNotFoundError, match="bundled model is not installed"):
        api.load_model(None)


# -- the real network: shapes, dtypes, validation ---------------------------------------------


def test_segment_returns_labels_of_the_input_shape(nuclei, model_file):
    image, _ = nuclei
    events, result = drain(api.iter_segment(image, model_file, device="cpu"))
    assert result.labels.shape == image.shape
    assert result.labels.dtype == np.uint16
    assert result.probabilities.shape == (3, *image.shape)
    assert result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-4)
    tiles = [e for e in events if isinstance(e, TileDone)]
    assert tiles and tiles[-1].done == tiles[-1].total
    labels = api.segment(image, model_file, device="cpu")
    assert labels.shape == image.shape and labels.dtype == np.uint16


def test_segment_is_reexported_by_the_package(nuclei, model_file):
    import napari_unet

    labels = napari_unet.segment(nuclei[0], model_file, device="cpu", diameter=24)
    assert labels.shape == nuclei[0].shape


def test_segment_resizes_back_with_the_real_network(nuclei, model_file):
    image, _ = nuclei
    result = drive(api.iter_segment(image, model_file, device="cpu", diameter=16))
    assert result.scale == pytest.approx(1.5)
    assert result.diameter == 16
    assert result.labels.shape == image.shape
    assert result.probabilities.shape == (3, *image.shape)


def test_segment_stack_and_channels(nuclei):
    image, _ = nuclei
    image = image[:48, :64]
    stack = np.stack([image, image[::-1]])
    result = drive(api.iter_segment(stack, tiny_net(), stack=True, device="cpu"))
    assert result.labels.shape == stack.shape
    assert result.probabilities.shape == (2, 3, 48, 64)
    ids0 = set(np.unique(result.labels[0])) - {0}
    ids1 = set(np.unique(result.labels[1])) - {0}
    assert not ids0 & ids1

    rgb = np.stack([image, image // 2, image // 3], axis=-1)
    net3 = tiny_net(in_channels=3)
    assert api.segment(rgb, net3, channel_axis=-1, device="cpu").shape == (48, 64)
    assert api.segment(np.moveaxis(rgb, -1, 0), net3, channel_axis=0, device="cpu").shape == (
        48,
        64,
    )


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((2, 40, 40)), {}, "channel_axis=... for channels or stack=True"),
        (np.zeros((40, 40, 3)), {"channel_axis": -1}, "expects 1 channel but the image has 3"),
        (np.zeros((40, 40)), {"stack": True}, r"\(P, Y, X\) was expected"),
        (np.full((40, 40), np.nan), {}, "NaN"),
        (np.zeros((40, 40), complex), {}, "real-valued"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "real-valued"),
        (np.zeros((0, 40)), {}, "empty"),
        (np.zeros((40, 40)), {"diameter": 0}, "positive"),
        (np.zeros((40, 40)), {"diameter": -5}, "positive"),
        (np.zeros((40, 40)), {"diameter": float("nan")}, "positive"),
        (np.zeros((40, 40)), {"diameter": "big"}, "number of pixels"),
        (np.zeros((40, 40)), {"diameter": 0.2}, "smaller than a pixel"),
        (np.zeros((40, 40)), {"diameter": 400}, "larger than the image"),
        (np.zeros((40, 40)), {"threshold": 1.0}, "threshold"),
        (np.zeros((40, 40)), {"min_size": -1}, "min_size"),
        (np.zeros((40, 40)), {"min_confidence": 1.0}, "min_confidence"),
        (np.zeros((40, 40)), {"min_confidence": -0.1}, "min_confidence"),
        (np.zeros((40, 40)), {"tile_size": 0}, "tile_size"),
        (np.zeros((40, 40)), {"background_threshold": 0.0}, "background_threshold"),
        (np.zeros((40, 40)), {"background_threshold": 1.0}, "background_threshold"),
    ],
)
def test_bad_input_raises_before_any_work(image, kwargs, message, model_file, oracle):
    gen = api.iter_segment(image, model_file, device="cpu", **kwargs)
    with pytest.raises(ValueError, match=message):
        next(gen)
    assert oracle == []


def test_an_absurd_enlargement_is_refused(model_file, monkeypatch):
    monkeypatch.setattr(segment_module, "MAX_RESCALED_PIXELS", 100 * 100)
    with pytest.raises(ValueError, match=r"diameter of 6 px would enlarge .* from 60 x 60 to 240 x 240"):
        next(api.iter_segment(np.zeros((60, 60)), model_file, diameter=6))


# -- rescaling, with the stand-in predictor ---------------------------------------------------


def test_given_diameter_rescales_the_image_and_the_labels_back(model_file, oracle):
    image, truth = discs((96, 96), 12, 24)
    result = drive(api.iter_segment(image, model_file, diameter=12))
    assert [c["shape"] for c in oracle] == [(1, 1, 192, 192)]
    assert result.scale == pytest.approx(2.0)
    assert result.diameter == 12
    assert result.labels.shape == (96, 96)
    assert result.labels.max() == truth.max() == 16
    # the labels land where the discs are
    assert np.mean((result.labels > 0) == (truth > 0)) > 0.97


def test_shrinking_is_antialiased_and_sized(model_file, oracle):
    image, _ = discs((96, 96), 20, 32)
    result = drive(api.iter_segment(image, model_file, diameter=48))
    assert [c["shape"] for c in oracle] == [(1, 1, 48, 48)]
    assert result.labels.shape == (96, 96)
    assert result.scale == pytest.approx(0.5)


def test_a_diameter_close_to_the_model_is_not_rescaled(model_file, oracle):
    image, _ = discs((64, 64), 20, 32)
    result = drive(api.iter_segment(image, model_file, diameter=23.5))
    assert [c["shape"] for c in oracle] == [(1, 1, 64, 64)]
    assert result.scale == 1.0


def test_a_model_without_diameter_is_never_rescaled(oracle):
    image, _ = discs((64, 64), 12, 32)
    with pytest.warns(UserWarning, match="no training diameter"):
        result = drive(api.iter_segment(image, tiny_net(), diameter=12))
    assert [c["shape"] for c in oracle] == [(1, 1, 64, 64)]
    assert result.scale == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = drive(api.iter_segment(image, tiny_net()))
    assert result.diameter is None and len(oracle) == 2


def test_automatic_diameter_reruns_at_the_corrected_scale(model_file, oracle):
    image, truth = discs((96, 96), 12, 24)
    events, result = drain(api.iter_segment(image, model_file))
    # the native pass, then the refinement at the corrected scale, which covers the whole image
    # and so is the result (no third pass)
    assert len(oracle) == 2 and oracle[0]["shape"] == (1, 1, 96, 96)
    assert oracle[1]["shape"] == (1, 1) + (round(96 * result.scale),) * 2
    assert 180 <= oracle[1]["shape"][2] <= 204  # about twice as large
    assert result.diameter == pytest.approx(12, abs=1.0)
    assert result.scale == pytest.approx(TRAINED_DIAMETER / result.diameter)
    assert result.labels.shape == (96, 96)
    assert result.labels.max() == truth.max()
    # progress covers both passes and ends at 100 %
    tiles = [e for e in events if isinstance(e, TileDone)]
    assert [e.done for e in tiles] == sorted(e.done for e in tiles)
    assert tiles[-1].done == tiles[-1].total == 2
    # the first pass's plane events are not passed on (it is not the final result)
    assert sum(isinstance(e, PlaneDone) for e in events) == 1


def test_automatic_diameter_keeps_the_scale_when_it_fits(model_file, oracle):
    image, _ = discs((128, 128), 22, 32)
    events, result = drain(api.iter_segment(image, model_file))
    assert [c["shape"] for c in oracle] == [(1, 1, 128, 128)]  # one pass, reused
    assert result.scale == 1.0
    assert result.diameter == pytest.approx(22, abs=1.0)
    tiles = [e for e in events if isinstance(e, TileDone)]
    assert tiles[0].total == 2  # a second pass was possible while the first ran
    assert tiles[-1].done == tiles[-1].total == 1
    assert sum(isinstance(e, PlaneDone) for e in events) == 1


def test_automatic_diameter_counts_cells_not_pixels(model_file, oracle):
    """Five cells of 24 px hold most of the foreground among eleven of 14 px: the area-weighted
    median (which steers the scale) says 24, the model's own diameter, so no rescaling seems
    needed; the diameter measured with each cell counting once says 14, and the image is
    measured again and segmented at the scale that asks for (the native pass is not reused)."""
    rows, cols = np.mgrid[:200, :200]
    labels = np.zeros((200, 200), np.int32)
    for i in range(16):
        r, c = 30 + 46 * (i // 4), 30 + 46 * (i % 4)
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= (12 if i < 5 else 7) ** 2] = i + 1
    image = np.where(labels > 0, 1000, 100).astype(np.uint16)
    result = drive(api.iter_segment(image, model_file))
    assert result.diameter == pytest.approx(14, abs=1.0)
    assert result.scale == pytest.approx(TRAINED_DIAMETER / result.diameter)
    assert oracle[0]["shape"] == (1, 1, 200, 200)
    assert oracle[1]["shape"] == (1, 1) + (round(200 * result.scale),) * 2
    assert len(oracle) == 2  # the count's pass covers the whole image and is the result
    assert result.labels.max() == 16


@pytest.mark.parametrize("sure", [True, False])
def test_automatic_diameter_enlarges_beyond_the_limit_only_when_sure(
    model_file, oracle, monkeypatch, sure
):
    """Cells of 4 px need a 6x enlargement. An image of noise measures like that, but the
    network is unsure of what it finds there: then the estimate is dropped with a warning and
    the image is segmented at the model's scale. Objects it is sure of are enlarged as asked."""
    image, truth = discs((96, 96), 4, 12)
    if not sure:  # the stand-in network draws the same cells with a cell probability of 0.55
        fake = diameter_estimate.estimate_confidence
        monkeypatch.setattr(
            diameter_estimate, "estimate_confidence", lambda labels, prob: 0.55 * fake(labels, prob)
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = drive(api.iter_segment(image, model_file))
    enlarge = [w for w in caught if "would enlarge the image" in str(w.message)]
    if sure:
        assert not enlarge
        assert result.scale == pytest.approx(6.0, rel=0.15)
        assert result.labels.max() == truth.max()
    else:
        assert len(enlarge) == 1 and "unsure" in str(enlarge[0].message)
        assert result.scale == 1.0 and result.diameter == TRAINED_DIAMETER
        assert result.labels.max() == 0  # objects under 30 % of a 24 px cell are removed
    given = drive(api.iter_segment(image, model_file, diameter=4))  # a typed diameter is obeyed
    assert given.scale == pytest.approx(6.0) and given.labels.max() == truth.max()


def test_estimate_confidence_weighs_objects_by_area():
    labels = np.zeros((20, 20), np.int32)
    labels[:10, :10] = 1  # 100 px, cell probability 0.9
    labels[15:17, 15:17] = 2  # 4 px, 0.2
    labels[18, :3] = 3  # 3 px, 0.1
    prob = np.zeros((1, 3, 20, 20), np.float32)
    prob[0, 1] = np.select([labels == 1, labels == 2, labels == 3], [0.9, 0.2, 0.1])
    assert diameter_estimate.estimate_confidence(labels, prob) == pytest.approx(0.9)
    assert diameter_estimate.estimate_confidence(np.zeros((5, 5), np.int32), prob[..., :5, :5]) == 0


def test_automatic_diameter_without_cells_keeps_the_scale(model_file, oracle):
    result = drive(api.iter_segment(np.full((64, 64), 7, np.uint16), model_file))
    assert result.diameter is None and result.scale == 1.0
    assert len(oracle) == 1 and result.labels.max() == 0


def test_automatic_diameter_samples_big_images_and_stacks(model_file, oracle, monkeypatch):
    monkeypatch.setattr(diameter_estimate, "ESTIMATE_CROP", 48)
    image, _ = discs((96, 96), 12, 24)
    stack = np.stack([image, image, image])
    result = drive(api.iter_segment(stack, model_file, stack=True))
    # first pass: central crops of three planes side by side, 16 columns apart; second: that
    # sample again at the scale the first estimate asks for (the refinement); then the planes of
    # the stack one by one, enlarged (one by one, so that a Stop keeps the planes done)
    gap = diameter_estimate.ESTIMATE_GAP
    assert oracle[0]["shape"] == (1, 1, 48, 3 * 48 + 2 * gap)
    assert 90 <= oracle[1]["shape"][2] <= 102 and oracle[1]["shape"][:2] == (1, 1)
    side = round(96 * result.scale)
    assert [c["shape"] for c in oracle[2:]] == [(1, 1, side, side)] * 3
    assert 180 <= side <= 204
    assert result.labels.shape == (3, 96, 96)
    assert result.probabilities.shape == (3, 3, 96, 96)
    per_plane = [set(np.unique(p)) - {0} for p in result.labels]
    assert all(len(ids) == 16 for ids in per_plane)
    assert not per_plane[0] & per_plane[1]


def test_a_stack_is_measured_on_several_planes(model_file, oracle):
    """The middle plane of a volume can hold no cell (or only the caps of nuclei): the estimate
    looks at planes a quarter, half and three quarters of the way through."""
    image, _ = discs((96, 96), 12, 24)
    blank = np.full_like(image, int(np.median(image)))
    stack = np.stack([image, image, blank, image, image])  # picks planes 1, 2 and 3
    sample, whole = diameter_estimate.estimation_sample(stack[:, None])
    gap = diameter_estimate.ESTIMATE_GAP
    assert not whole and sample.shape == (1, 1, 96, 3 * 96 + 2 * gap)
    np.testing.assert_array_equal(sample[0, 0, :, :96], image)
    np.testing.assert_array_equal(sample[0, 0, :, 96 + gap : 192 + gap], blank)
    assert (sample[0, 0, :, 96 : 96 + gap] == np.median(image)).all()  # background between
    result = drive(api.iter_segment(stack, model_file, stack=True))
    assert result.diameter == pytest.approx(12, rel=0.15)  # the middle plane alone: no cells
    middle = drive(api.iter_segment(blank, model_file))
    assert middle.diameter is None


def _narrow_plane() -> np.ndarray:
    """96 x 40 px: a column of four whole 16 px discs, and halves of discs cut by both sides."""
    rows, cols = np.mgrid[0:96, 0:40]
    cells = np.zeros((96, 40), bool)
    for r in (12, 36, 60, 84):
        for c in (0, 20, 40):
            cells |= (rows - r) ** 2 + (cols - c) ** 2 <= 8**2
    return np.where(cells, 1000, 100).astype(np.uint16)


@pytest.mark.parametrize("cut_measured", [False, True])
def test_a_stack_of_narrow_planes_is_measured_without_the_cells_cut_where_crops_meet(
    model_file, oracle, monkeypatch, cut_measured
):
    """Side by side, the half discs at the sides of the narrow planes meet: not at an image
    edge, they were measured as small cells and pulled the estimate down (the light-sheet test
    crop, 68 px wide: 18.7 px for sections of 23.6 px). Now they are left out, as a single
    plane's cut cells are, and the block-wise path measures the same."""
    from napari_unet.engine.block_plan import _estimate_diameter

    if cut_measured:  # as before: nothing left out where the crops meet
        monkeypatch.setattr(diameter_estimate, "inner_edges", lambda planes: [])
    plane = _narrow_plane()
    single = drive(api.iter_segment(plane, model_file)).diameter
    assert single == pytest.approx(16, rel=0.1)
    stack = np.stack([plane] * 5)
    estimate = drive(api.iter_segment(stack, model_file, stack=True)).diameter
    blockwise = _estimate_diameter(
        stack[:, None], model_file, threshold=0.5, min_confidence=None, device="cpu"
    )
    if cut_measured:
        assert estimate < 0.85 * single
        return
    assert estimate == pytest.approx(single, rel=0.05)
    assert blockwise == pytest.approx(estimate, rel=1e-6)


def test_channels_are_resized_together(oracle, tmp_path):
    net = tiny_net(in_channels=2)
    path = save_checkpoint(tmp_path / "two.pt", net, diameter=24.0)
    image, _ = discs((64, 64), 12, 32)
    two = np.stack([image, image], axis=0)
    result = drive(api.iter_segment(two, path, channel_axis=0, diameter=12))
    assert oracle[0]["shape"] == (1, 2, 128, 128)
    assert result.labels.shape == (64, 64)


def test_closing_the_generator_stops_prediction(model_file, oracle):
    image, _ = discs((96, 96), 12, 24)
    gen = api.iter_segment(image, model_file)
    next(gen)
    gen.close()
    assert len(oracle) == 1


def test_nuclei_sample_is_shared_with_the_napari_sample():
    from napari_unet._sample_data import nuclei_sample

    image, labels = api.nuclei_sample_arrays()
    layers = nuclei_sample()
    np.testing.assert_array_equal(layers[0][0], image)
    np.testing.assert_array_equal(layers[1][0], labels)
    assert image.shape == (512, 512) and image.dtype == np.uint16


def test_known_diameter_sets_the_default_min_size():
    from napari_unet.engine.label_step import MIN_AREA_OF_CELL, min_size_for

    assert min_size_for(None, None) is None
    assert min_size_for(7, 30.0) == 7
    fraction = MIN_AREA_OF_CELL
    assert min_size_for(None, 30.0) == int(np.ceil(fraction * np.pi / 4 * 30.0**2))
    assert min_size_for(None, 2.0) == 10  # never below DEFAULT_MIN_SIZE


def test_given_diameter_removes_specks_but_not_cells(model_file, oracle):
    image, truth = discs((96, 96), 24, 32)  # 9 discs of 24 px, 452 px each
    image = image.copy()
    image[0:5, 0:5] = 1000  # a 25 px speck: 5 % of a cell (kept by the median-area rule)
    result = drive(api.iter_segment(image, model_file, diameter=24))
    assert result.labels.max() == truth.max() == 9
    assert result.labels[0:5, 0:5].max() == 0
    kept = drive(api.iter_segment(image, model_file, diameter=24, min_size=10))
    assert kept.labels[0:5, 0:5].max() > 0  # the caller's min_size wins


def test_objects_the_network_is_unsure_of_are_dropped_unless_asked(model_file, monkeypatch):
    image, truth = discs((96, 96), 24, 32)
    image = image.copy()
    image[truth == 5] = 300  # one faint disc: the stand-in network gives it P(interior) 0.3

    def unsure_iter_predict(model, planes, **kwargs):
        out = []
        for plane in planes.astype(np.float32).mean(axis=1):
            cell = np.where(plane > 200, np.clip(plane / 1000.0, 0, 1), 0).astype(np.float32)
            border = np.where(plane > 200, 1.0 - cell, 0).astype(np.float32)
            out.append(np.stack([(plane <= 200).astype(np.float32), cell, border]))
        yield TileDone(done=1, total=1)
        return np.stack(out)

    monkeypatch.setattr("napari_unet.engine.tiling.iter_predict", unsure_iter_predict)
    default = drive(api.iter_segment(image, model_file, diameter=24))
    assert default.labels.max() == 8 and not default.labels[truth == 5].any()
    kept = drive(api.iter_segment(image, model_file, diameter=24, min_confidence=0))
    assert kept.labels.max() == 9 and kept.labels[truth == 5].all()


def test_the_background_threshold_moves_the_outlines_not_the_diameter_estimate(
    model_file, monkeypatch
):
    """A stand-in network whose background probability rises from 0 to 1 over 6 px around each
    disc's edge: the outline runs where it crosses the threshold (radius R - 3 + 6 t), so a lower
    threshold draws every object tighter; the diameter estimate measures at the default."""
    from scipy import ndimage as ndi

    image, _ = discs((96, 96), 24, 32)

    def soft_iter_predict(model, planes, **kwargs):
        out = []
        for plane in planes.astype(np.float32).mean(axis=1):
            inside = plane > 500
            depth = ndi.distance_transform_edt(inside) - ndi.distance_transform_edt(~inside)
            background = np.clip((3.0 - depth) / 6.0, 0.0, 1.0).astype(np.float32)
            cell = np.where(depth > 4, 1.0 - background, 0.0).astype(np.float32)
            out.append(np.stack([background, cell, 1.0 - background - cell]))
        yield TileDone(done=1, total=1)
        return np.stack(out)

    monkeypatch.setattr("napari_unet.engine.tiling.iter_predict", soft_iter_predict)

    def areas(**kwargs):
        result = drive(api.iter_segment(image, model_file, diameter=24, **kwargs))
        assert result.labels.max() == 9
        return np.bincount(result.labels.ravel())[1:]

    default, tight, loose = areas(), areas(background_threshold=0.2), areas(background_threshold=0.8)
    np.testing.assert_array_equal(default, areas(background_threshold=0.5))
    assert (tight < default).all() and (default < loose).all()
    # radius 12 - 1.8 px against 12: about 28 % less area
    assert 0.6 < np.median(tight / default) < 0.85
    estimated = [
        drive(api.iter_segment(image, model_file, **kw)).diameter
        for kw in ({}, {"background_threshold": 0.2})
    ]
    assert estimated[0] == estimated[1]


def test_a_stopped_stack_keeps_the_planes_done(model_file, oracle):
    """Planes are labelled as they are done (PlaneSegmented, ids following the planes before);
    closing the generator after two of four planes leaves those two complete, the rest 0."""
    from napari_unet.engine.events import PlaneSegmented
    from napari_unet.engine.partial import PartialLabels

    image, _ = discs((48, 48), 12, 24)
    stack = np.stack([image, image[::-1], image[:, ::-1], image])
    events, full = drain(api.iter_segment(stack, model_file, stack=True, diameter=12))
    done = [e for e in events if isinstance(e, PlaneSegmented)]
    assert [e.plane for e in done] == [0, 1, 2, 3] and {e.n_planes for e in done} == {4}
    np.testing.assert_array_equal(np.stack([e.labels for e in done]), full.labels)
    tiles = [e for e in events if isinstance(e, TileDone)]
    assert {e.total for e in tiles} == {4}  # one count for the whole job
    assert [e.plane for e in tiles] == [0, 1, 2, 3] and {e.n_planes for e in tiles} == {4}

    partial = PartialLabels()
    gen = api.iter_segment(stack, model_file, stack=True, diameter=12)
    for event in gen:
        partial.add(event)
        if partial.done == 2:
            gen.close()
            break
    labels = partial.labels()
    assert partial.n_planes == 4 and labels.shape == full.labels.shape
    np.testing.assert_array_equal(labels[:2], full.labels[:2])
    assert labels[:2].max() > 0 and not labels[2:].any()
    assert len(oracle) == 4 + 2  # planes are predicted one by one: nothing after the Stop


def test_intensity_range_replaces_the_plane_percentiles(oracle):
    """Given (low, high) the planes reach the network already normalised by them (the network
    is told not to normalise again); a range of the wrong length is refused."""
    image = np.full((40, 40), 100, np.uint16)
    image[10:30, 10:30] = 300
    drive(segment_module.iter_segment(image, tiny_net(), intensity_range=([100.0], [300.0]), min_size=0))
    call = oracle[-1]
    assert call["normalization"] is False
    with pytest.raises(ValueError, match="one low and one high value per channel"):
        drive(segment_module.iter_segment(image, tiny_net(), intensity_range=([0.0, 1.0], [2.0, 3.0])))
    with pytest.raises(ValueError, match="low must be below high"):
        drive(segment_module.iter_segment(image, tiny_net(), intensity_range=(300, 100)))
    # below as typed, equal in float32 (contrast limits dragged together): not 'must be below'
    with pytest.raises(ValueError, match="too close: they are the same number in float32"):
        drive(segment_module.iter_segment(image, tiny_net(), intensity_range=(7, 7.0000001)))


def test_one_intensity_range_for_every_channel():
    from napari_unet.engine.normalization import channel_range

    lo, hi = channel_range((10, 250), 3)
    assert lo.tolist() == [10, 10, 10] and hi.tolist() == [250, 250, 250]
    lo, hi = channel_range(([1, 2], [3, 4]), 2)
    assert lo.tolist() == [1, 2] and hi.tolist() == [3, 4]
    with pytest.raises(ValueError, match=r"must be \(low, high\)"):
        channel_range(5, 1)


def test_an_intensity_range_rescues_an_image_swamped_by_bright_debris(monkeypatch):
    """A bright square over 1 % of the image takes the top percentile: the cells, a tenth as
    bright, fall under the half-way level of the normalised image and vanish. Normalised by the
    range a user would set in napari's contrast slider, they are found again."""

    def absolute_threshold(model, image, *, normalization=None, **kwargs):
        # a stand-in network: cell wherever the normalised intensity is above 0.5
        planes = image.astype(np.float32).mean(axis=1)
        out = []
        for i, plane in enumerate(planes):
            if normalization is not False:
                lo, hi = np.percentile(plane, (1.0, 99.8))
                plane = (plane - lo) / (hi - lo)
            cell = (plane > 0.5).astype(np.float32)
            out.append(np.stack([1 - cell, cell, np.zeros_like(cell)]))
            yield TileDone(done=i + 1, total=len(planes), plane=i, n_planes=len(planes))
            yield PlaneDone(plane=i, n_planes=len(planes))
        return np.stack(out)

    monkeypatch.setattr("napari_unet.engine.tiling.iter_predict", absolute_threshold)
    image, truth = discs((120, 120), 10, 24)
    image = image.astype(np.float32)
    image[:14, :14] = 10_000.0  # debris, ten times as bright as the cells
    truth[:14, :14] = 0
    swamped = drive(segment_module.iter_segment(image, tiny_net(), min_size=0))
    assert swamped.labels[truth > 0].max() == 0
    rescued = drive(
        segment_module.iter_segment(image, tiny_net(), min_size=0, intensity_range=(100, 1000))
    )
    cells = np.unique(rescued.labels[truth > 0])
    assert len(cells[cells > 0]) == truth.max()
