"""Training: events, learning on touching blobs, sparse annotation, cancel, checkpoints, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_unet.engine.events import (
    AugmentationSample,
    CheckpointSaved,
    ModelSnapshot,
    StepDone,
    ValidationDone,
    drive,
)
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.synthetic import synthetic_nuclei
from napari_unet.engine.train_config import MAX_LR
from napari_unet.engine.training import TrainConfig, iter_train, train
from napari_unet.engine.training_tiles import sampling_probabilities
from napari_unet.engine.training_tiles import window as _window


def tiny_model(depth: int = 2, base: int = 8, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(depth=depth, base_channels=base, norm="group"))


def test_config_round_trip_and_validation():
    config = TrainConfig(steps=7, optimizer="sgd", w0=3.0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.learning_rate == pytest.approx(1e-2)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"steps": 3, "nonsense": 1})


def test_the_learning_rate_is_bounded_by_max_lr():
    """lr=1e10 was accepted and training ended at step 2 with a NaN loss; MAX_LR is allowed."""
    assert TrainConfig(optimizer="sgd", lr=MAX_LR).learning_rate == MAX_LR
    for lr in (MAX_LR * 1.01, 1e10, 0.0, -1e-3):
        with pytest.raises(ValueError, match="learning rate must be above 0 and at most 1"):
            TrainConfig(lr=lr)


def test_events_are_typed_and_in_order(nuclei):
    image, labels = nuclei
    config = TrainConfig(steps=4, sample_every=2, snapshot_every=2, val_every=2, tile_size=32)
    gen = iter_train(tiny_model(), image, labels, config=config, device="cpu")
    events = []
    result = drive(gen, events.append)
    steps = [e.step for e in events if isinstance(e, StepDone)]
    assert steps == [1, 2, 3, 4]
    samples = [e for e in events if isinstance(e, AugmentationSample)]
    assert [s.step for s in samples] == [1, 2, 4]
    sample = samples[0]
    assert sample.image.shape == sample.labels.shape == sample.weights.shape == sample.target.shape
    assert sample.image.dtype == np.float32 and sample.target.dtype == np.int64
    assert {e.step for e in events if isinstance(e, ModelSnapshot)} == {2, 4}
    validations = [e for e in events if isinstance(e, ValidationDone)]
    assert [v.step for v in validations] == [2, 4]
    assert np.isfinite(validations[-1].metrics["loss"])
    assert result.steps_done == 4
    assert next(result.model.parameters()).device.type == "cpu"
    assert [h["step"] for h in result.history if "loss" in h] == [1, 2, 3, 4]


@pytest.mark.slow
def test_training_separates_touching_cells():
    """A few hundred steps on touching synthetic nuclei: the loss falls, and instances come out
    separately on an unseen image (F1@0.5 above 0.7). 300 steps gave F1 0.68-0.76 depending on
    the precision (float32 or bfloat16 autocast) and the thread count: too close to the bound;
    500 give 0.82-0.84 in all four."""
    from napari_unet.engine.instances import instances_from_probabilities
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.tiling import predict

    train_image, train_labels = synthetic_nuclei((128, 128), n_cells=25, diameter=16, rng=3)
    test_image, test_labels = synthetic_nuclei((128, 128), n_cells=25, diameter=16, rng=4)
    touching = _touching_pairs(train_labels)
    assert touching >= 5, "the synthetic image must contain touching cells"
    model = tiny_model(depth=3, base=8)
    config = TrainConfig(steps=500, lr=3e-3, tile_size=64, val_fraction=0, sample_every=0)
    losses = [
        e.loss
        for e in iter_train(model, train_image, train_labels, config=config, device="cpu")
        if isinstance(e, StepDone)
    ]
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:10])
    prob = predict(model, test_image, device="cpu")
    pred = instances_from_probabilities(prob)
    scores = evaluate(pred, test_labels)
    assert scores["f1@0.5"] > 0.7, scores
    assert _touching_pairs(test_labels) >= 5


def _touching_pairs(labels: np.ndarray) -> int:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(p)) for p in zip(a[touch].tolist(), b[touch].tolist(), strict=True)}
    return len(pairs)


def test_sparse_annotation_ignores_unannotated_pixels(nuclei):
    """Outside the drawn regions nothing is learnt: every sampled tile's weights are 0 there."""
    image, labels = nuclei
    painted = np.where(np.isin(labels, [1, 2, 3]), labels, 0)
    region = np.zeros(labels.shape, bool)
    region[:48, :64] = True
    config = TrainConfig(steps=3, sample_every=1, augment_strength=0, tile_size=32, val_fraction=0)
    samples = [
        e
        for e in iter_train(
            tiny_model(), image, painted, regions=region, config=config, device="cpu"
        )
        if isinstance(e, AugmentationSample)
    ]
    assert samples
    for sample in samples:
        assert sample.weights.min() >= 0
        # unpainted cells outside the region (ids 4..) never appear with weight
        assert (sample.weights[sample.labels > 3] == 0).all()


def test_cancel_leaves_a_loadable_checkpoint(nuclei, tmp_path):
    from napari_unet.engine.checkpoint import load_checkpoint

    image, labels = nuclei
    path = tmp_path / "model.pt"
    config = TrainConfig(
        steps=1000, checkpoint_path=str(path), checkpoint_every=2, tile_size=32, val_fraction=0
    )
    model = tiny_model()
    gen = iter_train(model, image, labels, config=config, device="cpu")
    saved = []
    for event in gen:
        if isinstance(event, CheckpointSaved):
            saved.append(event.step)
        if isinstance(event, StepDone) and event.step == 3:
            gen.close()  # as a GUI worker's quit does
            break
    assert saved == [2]
    loaded, meta = load_checkpoint(path)
    assert meta.training["steps_done"] == 3  # the last completed step was written on cancel
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_a_diverged_step_never_overwrites_the_last_good_checkpoint(nuclei, tmp_path, monkeypatch):
    """The loss turns NaN at step 3 (after the good checkpoint of step 2): the optimiser has
    already stepped with NaN gradients, so the model is ruined; the file must keep step 2."""
    from napari_unet.engine import losses
    from napari_unet.engine.checkpoint import load_checkpoint

    image, labels = nuclei
    path = tmp_path / "model.pt"
    config = TrainConfig(
        steps=10, checkpoint_path=str(path), checkpoint_every=2, tile_size=32, val_fraction=0
    )
    model = tiny_model()
    real = losses.weighted_cross_entropy
    calls = []

    def diverging(logits, target, weights):
        calls.append(1)
        loss = real(logits, target, weights)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(losses, "weighted_cross_entropy", diverging)
    saved = []
    with pytest.raises(FloatingPointError, match="step 3"):
        for event in iter_train(model, image, labels, config=config, device="cpu"):
            if isinstance(event, CheckpointSaved):
                saved.append(event.step)
                good = path.read_bytes()
    assert saved == [2]
    assert not all(torch.isfinite(v).all() for v in model.state_dict().values())  # ruined
    assert path.read_bytes() == good
    _, meta = load_checkpoint(path)  # refuses non-finite weights
    assert meta.training["steps_done"] == 2


def test_an_interrupted_step_keeps_the_last_completed_one(nuclei, tmp_path, monkeypatch):
    """Ctrl-C inside step 4 (before its update): the model of step 3 is written."""
    from napari_unet.engine import losses
    from napari_unet.engine.checkpoint import load_checkpoint

    image, labels = nuclei
    path = tmp_path / "model.pt"
    config = TrainConfig(
        steps=10, checkpoint_path=str(path), checkpoint_every=2, tile_size=32, val_fraction=0
    )
    real = losses.weighted_cross_entropy
    calls = []

    def interrupted(logits, target, weights):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(logits, target, weights)

    monkeypatch.setattr(losses, "weighted_cross_entropy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        drive(iter_train(tiny_model(), image, labels, config=config, device="cpu"))
    assert load_checkpoint(path)[1].training["steps_done"] == 3


def test_checkpoint_stores_history_and_normalization(nuclei, tmp_path):
    from napari_unet.engine.checkpoint import load_checkpoint

    image, labels = nuclei
    path = tmp_path / "m.pt"
    config = TrainConfig(steps=2, checkpoint_path=str(path), tile_size=32, val_fraction=0)
    result = train(
        tiny_model(), image, labels, config=config, device="cpu",
        normalization={"low": 2.0, "high": 99.0}, extra={"data": "nuclei"}, diameter=16.0,
    )
    assert result.checkpoint_path == path
    _, meta = load_checkpoint(path)
    assert meta.normalization == {"low": 2.0, "high": 99.0}
    assert meta.diameter == 16.0 and meta.extra == {"data": "nuclei"}
    assert [h["step"] for h in meta.history if "loss" in h] == [1, 2]
    assert meta.training["optimizer"] == "adam"


def test_fine_tuning_continues_from_a_checkpoint(nuclei, tmp_path):
    from napari_unet.engine.checkpoint import load_checkpoint, save_checkpoint

    image, labels = nuclei
    model = tiny_model()
    save_checkpoint(tmp_path / "start.pt", model)
    start, _ = load_checkpoint(tmp_path / "start.pt")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    train(start, image, labels, config=TrainConfig(steps=2, tile_size=32), device="cpu")
    changed = [not torch.equal(before[k], v) for k, v in start.state_dict().items()]
    assert any(changed)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((32, 32)), np.zeros((32, 32), int), "no painted cells"),
        (np.zeros((32, 32)), np.ones((16, 32), int), "do not match"),
        (np.zeros((2, 32, 32)), np.ones((32, 32), int), r"\(Y, X\) was expected"),
        (np.zeros((32, 32)), np.ones((32, 32)), "integer"),
        (np.full((32, 32), np.nan), np.ones((32, 32), int), "NaN"),
    ],
)
def test_bad_input_is_refused_before_work(images, labels, message):
    with pytest.raises(ValueError, match=message):
        next(iter_train(tiny_model(), images, labels, config=TrainConfig(steps=1), device="cpu"))


def test_wrong_channel_count_is_refused():
    image = np.random.default_rng(0).random((32, 32, 3))
    labels = np.ones((32, 32), int)
    with pytest.raises(ValueError, match="expects 1 channel but the image has 3"):
        next(iter_train(tiny_model(), image, labels, channel_axis=-1, device="cpu"))


def test_window_mirrors_like_numpy_pad():
    array = np.arange(5 * 7, dtype=float).reshape(5, 7)
    expected = np.pad(array, 20, mode="symmetric")
    # a window far larger than the array, reaching beyond it on every side
    window = _window(array, -12, -15, 30, mode="symmetric")
    np.testing.assert_array_equal(window, expected[8:38, 5:35])
    zeros = _window(array, -2, 3, 4, mode="constant")
    np.testing.assert_array_equal(zeros[2:, :4], array[:2, 3:7])
    assert (zeros[:2] == 0).all()


def _tiles_with_cells(foreground_fraction: float) -> float:
    """Share of 20 training tiles that hold a cell, on a 256² image with one cell in a corner."""
    image = np.zeros((256, 256), np.float32)
    labels = np.zeros((256, 256), np.int32)
    labels[8:20, 8:20] = 1
    image[labels > 0] = 1.0
    config = TrainConfig(
        steps=20,
        tile_size=16,
        augment_strength=0.0,
        val_fraction=0.0,
        sample_every=1,
        foreground_fraction=foreground_fraction,
    )
    samples = [
        e
        for e in iter_train(tiny_model(), image, labels, config=config, device="cpu")
        if isinstance(e, AugmentationSample)
    ]
    assert len(samples) == 20
    return float(np.mean([(s.labels > 0).any() for s in samples]))


def test_foreground_fraction_centres_tiles_on_cells():
    assert _tiles_with_cells(1.0) == 1.0
    assert _tiles_with_cells(0.0) < 0.5  # the cell covers 0.2 % of the image
    with pytest.raises(ValueError, match="foreground_fraction"):
        TrainConfig(foreground_fraction=1.5)


def _steps(gen) -> tuple[list[StepDone], object]:
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return [e for e in events if isinstance(e, StepDone)], stop.value


def test_time_limit_stops_the_run_and_anneals_over_the_time(nuclei, monkeypatch):
    import types

    from napari_unet.engine import training

    # a clock that moves 0.1 s at every reading, so that the test does not depend on the load
    clock = iter(np.arange(0, 1e6, 0.1))
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    image, labels = nuclei
    config = TrainConfig(
        steps=10_000, schedule="cosine", time_limit=3.0, tile_size=32, sample_every=0, val_fraction=0
    )
    steps, result = _steps(iter_train(tiny_model(), image, labels, config=config, device="cpu"))
    assert 3 <= len(steps) < 100 and result.steps_done == len(steps)
    lrs = [s.lr for s in steps]
    # the cosine followed the clock: falling at every step, near the 5 % floor at the end
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.2 * lrs[0]
    with pytest.raises(ValueError, match="time_limit"):
        TrainConfig(time_limit=0)


def test_image_weights_choose_how_often_each_image_is_drawn(nuclei):
    image, labels = nuclei
    blank = np.zeros_like(labels)
    blank[:4, :4] = 1  # a second image whose tiles are almost all background
    config = TrainConfig(
        steps=12, tile_size=32, sample_every=1, val_fraction=0, augment_strength=0,
        foreground_fraction=1.0,
    )

    def cell_share(weights):
        gen = iter_train(
            tiny_model(), [image, image], [labels, blank], config=config, device="cpu",
            image_weights=weights,
        )
        events = []
        while True:
            try:
                events.append(next(gen))
            except StopIteration:
                break
        samples = [e for e in events if isinstance(e, AugmentationSample)]
        return np.mean([s.labels.max() > 1 for s in samples])  # the blank image has id 1 only

    assert cell_share([1.0, 0.0]) == 1.0
    assert cell_share([0.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="image_weights"):
        iter_train(tiny_model(), image, labels, config=config, image_weights=[1.0, 2.0]).send(None)


def test_image_weights_on_images_without_annotation_are_refused(nuclei):
    """The annotated image weighed 0 and the other has no annotated pixel: the sampling fell back
    to drawing both alike, and steps on the second had loss 0.0 (weight 0 everywhere)."""
    image, labels = nuclei
    nowhere = np.zeros(labels.shape, bool)
    gen = iter_train(
        tiny_model(), [image, image], [labels, np.zeros_like(labels)], regions=[None, nowhere],
        config=TrainConfig(steps=2, tile_size=32, val_fraction=0), device="cpu",
        image_weights=[0.0, 1.0],
    )
    with pytest.raises(ValueError, match="image_weights draw only images without an annotated"):
        next(gen)
    # the sampling itself refuses a set with nothing to draw, rather than drawing all alike
    prepared = SimpleNamespace(weights=np.zeros((8, 8), np.float32), share=1.0)
    with pytest.raises(ValueError, match="no training image has an annotated pixel"):
        sampling_probabilities([prepared, prepared])


@pytest.mark.parametrize("seed", range(4))
def test_validation_never_takes_the_only_annotated_image(nuclei, seed):
    """An image annotated nowhere (no cell, an empty region) beside an annotated one, with half
    held out: seeds 0-2 held out the annotated image and trained on weight 0 alone (loss 0.0 at
    every step, the model unchanged). Now only annotated images are held out whole."""
    image, labels = nuclei
    nowhere = np.zeros(labels.shape, bool)
    config = TrainConfig(steps=3, tile_size=32, sample_every=0, val_fraction=0.5, seed=seed)
    gen = iter_train(
        tiny_model(), [image, image], [labels, np.zeros_like(labels)], regions=[None, nowhere],
        config=config, device="cpu",
    )
    steps, _ = _steps(gen)
    assert len(steps) == 3 and all(s.loss > 0 for s in steps)


def test_held_out_cells_never_take_every_annotated_pixel():
    """Eight 3 x 3 cells packed in a 6 x 12 block, annotated around themselves only: the
    surroundings of seven held-out cells covered the eighth and the whole margin, and training ran
    on weight 0 (loss 0.0). Now no cell is held out then, as with too few cells."""
    labels = np.zeros((48, 48), np.int32)
    for k in range(8):
        r, c = 20 + 3 * (k // 4), 18 + 3 * (k % 4)
        labels[r : r + 3, c : c + 3] = k + 1
    image = (labels > 0).astype(np.float32)
    config = TrainConfig(steps=3, tile_size=32, sample_every=0, val_fraction=0.9)
    gen = iter_train(
        tiny_model(), image, labels, regions=np.zeros(labels.shape, bool), config=config,
        device="cpu",
    )
    steps, _ = _steps(gen)
    assert len(steps) == 3 and all(s.loss > 0 for s in steps)


def test_tile_workers_are_reproducible_whatever_their_number(nuclei):
    image, labels = nuclei

    def losses(workers):
        config = TrainConfig(
            steps=3, tile_size=32, batch_size=2, sample_every=0, val_fraction=0, workers=workers
        )
        steps, _ = _steps(iter_train(tiny_model(), image, labels, config=config, device="cpu"))
        return [s.loss for s in steps]

    one, two = losses(1), losses(2)
    assert one == pytest.approx(two, rel=1e-5)
    assert one != pytest.approx(losses(0), rel=1e-5)  # workers seed every tile on its own


def test_batch_norm_statistics_stay_when_fine_tuning_one_tile_per_step(nuclei):
    image, labels = nuclei
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=8, norm="batch"))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    fresh = TrainConfig(steps=2, tile_size=32, batch_size=2, sample_every=0, val_fraction=0)
    train(model, image, labels, config=fresh, device="cpu")
    assert int(bn.num_batches_tracked) == 2  # a new net learns its statistics
    before = bn.running_mean.clone()
    tune = TrainConfig(steps=2, tile_size=32, batch_size=1, sample_every=0, val_fraction=0)
    train(model, image, labels, config=tune, device="cpu")
    assert int(bn.num_batches_tracked) == 2 and torch.equal(bn.running_mean, before)
