"""Overlap-tile prediction: equality with one whole-image pass, mirroring, events, cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.engine.events import PlaneDone, TileDone, TileSizeReduced, drive
from napari_unet.engine.model import (
    NORMS,
    TILE_DEPENDENT_NORMS,
    UNet,
    UNetConfig,
    border,
    valid_input_size,
)
from napari_unet.engine.tiling import (
    CPU_ACTIVATION_BUDGET,
    CPU_MAX_TILE,
    activation_bytes,
    axis_tiling,
    choose_tiling,
    iter_predict,
    mirror_indices,
    mirrored_window,
    normalize,
    percentile_range,
    predict,
    round_tile_size,
    tile_size_for_budget,
    valid_output_at_least,
)


def _net(depth=2, base=4, **kw) -> UNet:
    torch.manual_seed(depth * 100 + base)
    return UNet(UNetConfig(depth=depth, base_channels=base, **kw)).eval()


def _whole_image(model: UNet, image: np.ndarray) -> np.ndarray:
    """One forward pass over the whole (mirror-extended) image: the reference for tiling."""
    depth, b = model.config.depth, border(model.config.depth)
    rows, cols = image.shape[-2:]
    out_r, out_c = valid_output_at_least(rows, depth), valid_output_at_least(cols, depth)
    padded = np.pad(image, ((b, b + out_r - rows), (b, b + out_c - cols)), mode="symmetric")
    with torch.inference_mode():
        logits = model(torch.from_numpy(padded.astype(np.float32))[None, None])
    return torch.softmax(logits, 1)[0, :, :rows, :cols].numpy()


@pytest.fixture(scope="module")
def net2():
    return _net(2, 4)


@pytest.fixture(scope="module")
def net3():
    return _net(3, 4)


# --------------------------------------------------------------------------- mirroring


@pytest.mark.parametrize(
    ("mode", "n"), [("symmetric", 1), ("symmetric", 2), ("symmetric", 7), ("reflect", 2), ("reflect", 3), ("reflect", 7)]
)
def test_mirror_indices_match_numpy_pad(mode, n):
    x = np.arange(n) * 10
    for before, after in [(0, 0), (1, 2), (n, n), (3 * n + 1, 2 * n + 5)]:
        expected = np.pad(x, (before, after), mode=mode)
        assert np.array_equal(x[mirror_indices(-before, n + after, n, mode=mode)], expected)


def test_mirror_reflect_single_pixel_and_bad_mode():
    # np.pad(mode="reflect") of one pixel repeats it
    assert np.array_equal(np.zeros(1)[mirror_indices(-3, 4, 1, mode="reflect")], np.pad(np.zeros(1), (3, 3), mode="reflect"))
    assert np.array_equal(mirror_indices(-3, 4, 1, mode="reflect"), np.zeros(7, int))
    with pytest.raises(ValueError, match="mirror mode"):
        mirror_indices(0, 3, 3, mode="wrap")


def test_mirrored_window_is_a_window_of_np_pad(rng):
    image = rng.integers(0, 1000, (2, 9, 13)).astype(np.uint16)
    pad = 20
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    for rows, cols in [((-20, 5), (-3, 30)), ((2, 7), (1, 12)), ((-1, 28), (10, 33))]:
        win = mirrored_window(image, rows, cols)
        assert np.array_equal(win, padded[:, rows[0] + pad : rows[1] + pad, cols[0] + pad : cols[1] + pad])
    assert np.shares_memory(mirrored_window(image, (2, 7), (1, 12)), image)


# --------------------------------------------------------------------------- tiled == whole image


@pytest.mark.parametrize(
    ("shape", "tile_size"),
    [
        ((37, 101), 12),  # odd, many tiles
        ((53, 29), 20),  # primes
        ((5, 7), 40),  # smaller than a tile
        ((3, 257), 24),  # very elongated
        ((64, 64), 28),
    ],
)
def test_tiled_equals_one_whole_image_pass(net2, rng, shape, tile_size):
    image = rng.random(shape).astype(np.float32)
    events = []
    gen = iter_predict(net2, image, tile_size=tile_size, normalization=False, device="cpu")
    tiled = drive(gen, events.append)
    reference = _whole_image(net2, image)
    assert tiled.shape == (3, *shape) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, reference, atol=2e-5, rtol=0)
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)
    if shape == (37, 101):
        assert sum(isinstance(e, TileDone) for e in events) > 10


def test_tiled_equals_whole_image_deeper_net_and_no_seams(net3, rng):
    image = rng.random((70, 90)).astype(np.float32)
    tile = round_tile_size(24, net3.config)
    rows, cols = axis_tiling(70, tile, net3.config), axis_tiling(90, tile, net3.config)
    assert len(rows.starts) > 1 and len(cols.starts) > 1
    tiled = predict(net3, image, tile_size=tile, normalization=False, device="cpu", batch_size=3)
    diff = np.abs(tiled - _whole_image(net3, image)).max(axis=0)
    assert diff.max() < 2e-5
    # no seam: pixels on both sides of every tile border agree with the reference as well as the rest
    seam_rows = [r for s in rows.starts[1:] for r in (s - 1, s)]
    seam_cols = [c for s in cols.starts[1:] for c in (s - 1, s)]
    assert diff[seam_rows].max() <= max(diff.mean() * 20, 2e-6)
    assert diff[:, seam_cols].max() <= max(diff.mean() * 20, 2e-6)


def _with_running_statistics(model: UNet, rng) -> UNet:
    """Give every BatchNorm layer non-trivial running statistics, as a trained net has."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.3, m.num_features).astype(np.float32)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)))
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("norm", [n for n in NORMS if n not in TILE_DEPENDENT_NORMS])
def test_every_seamless_norm_gives_the_same_probabilities_whatever_the_tile_size(norm, rng):
    model = _with_running_statistics(_net(3, 4, norm=norm), rng)
    assert model.config.seamless
    image = rng.random((150, 170)).astype(np.float32)
    reference = _whole_image(model, image)
    for tile in (12, 36, 60, 156):
        tiled = predict(model, image, tile_size=tile, normalization=False, device="cpu")
        np.testing.assert_allclose(tiled, reference, atol=1e-4, rtol=0)


def test_a_tile_dependent_norm_is_predicted_in_one_tile_per_plane(rng):
    model = _net(3, 4, norm="group")
    assert not model.config.seamless
    image = rng.random((150, 170)).astype(np.float32)
    small = predict(model, image, tile_size=28, normalization=False, device="cpu")
    reference = _whole_image(model, image)
    # tiles of their own statistics differ from the whole-image pass ...
    assert np.abs(small - reference).max() > 1e-3
    # ... so without a tile size the plane is one tile, whatever the memory budget says
    auto = predict(model, image, normalization=False, device="cpu")
    np.testing.assert_allclose(auto, reference, atol=1e-4, rtol=0)


def test_valid_axis_tiling_keeps_the_pooling_phase():
    config = UNetConfig(depth=3, base_channels=4)
    for size in [1, 5, 37, 100, 257]:
        for tile_size in [4, 12, 20, 36, 60]:
            tile = round_tile_size(tile_size, config)
            axis = axis_tiling(size, tile, config)
            assert all(s % 8 == 0 for s in axis.starts)
            assert axis.starts[-1] + axis.tile >= size
            assert all(b - a <= axis.tile for a, b in zip(axis.starts, axis.starts[1:], strict=False))
            assert axis.input == valid_input_size(axis.input, 3) == axis.tile + 2 * border(3)
            assert axis.tile <= max(tile, valid_output_at_least(8, 3))


def test_same_net_single_tile_equals_forward_and_multi_tile_blends(rng):
    model = _net(2, 4, padding="same")
    image = rng.random((32, 48)).astype(np.float32)
    with torch.inference_mode():
        reference = torch.softmax(model(torch.from_numpy(image)[None, None]), 1)[0].numpy()
    single = predict(model, image, tile_size=64, normalization=False, device="cpu")
    np.testing.assert_allclose(single, reference, atol=2e-5)
    tiled = predict(model, image, tile_size=16, normalization=False, device="cpu")
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)
    assert np.abs(tiled - reference).mean() < 0.05
    odd = predict(model, rng.random((13, 21)).astype(np.float32), tile_size=16, normalization=False, device="cpu")
    assert odd.shape == (3, 13, 21) and np.isfinite(odd).all()


# --------------------------------------------------------------------------- inputs, normalisation


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_percentile_range_matches_numpy(rng, dtype):
    values = (rng.random((2, 37, 41)) * 250).astype(dtype)
    values[1] = 7  # constant channel
    lo, hi = percentile_range(values, low=1.0, high=99.8, channel_axis=0)
    for c in range(2):
        np.testing.assert_allclose([lo[c], hi[c]], np.percentile(values[c], [1.0, 99.8]), rtol=1e-6)


def test_normalize_percentiles_and_constant_images():
    ramp = np.arange(101, dtype=np.uint8)
    np.testing.assert_allclose(normalize(ramp, low=0, high=100)[[0, 50, 100]], [0, 0.5, 1])
    np.testing.assert_allclose(normalize(ramp, low=10, high=60)[[10, 60]], [0, 1], atol=1e-6)
    const = normalize(np.full((4, 5), 7, np.uint16))
    assert const.dtype == np.float32 and np.array_equal(const, np.zeros((4, 5)))
    two = np.stack([ramp, ramp.astype(np.float32) * 1000 + 5], axis=-1)
    out = normalize(two, low=0, high=100, channel_axis=-1)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        normalize(np.zeros((0, 3)))


def test_dtypes_and_normalization_options_agree(net2, nuclei):
    image = nuclei[0]  # uint16
    base = predict(net2, image, device="cpu")
    as_float = predict(net2, image.astype(np.float64), device="cpu")
    pre = predict(net2, normalize(image), normalization=False, device="cpu")
    from_ckpt = predict(net2, image, normalization={"low": 1.0, "high": 99.8}, device="cpu")
    for other in (as_float, pre, from_ckpt):
        np.testing.assert_allclose(other, base, atol=1e-5)
    narrow = predict(net2, image, normalization={"low": 20.0, "high": 80.0}, device="cpu")
    assert np.abs(narrow - base).max() > 1e-3
    as_uint8 = predict(net2, (image // 256).astype(np.uint8), device="cpu")
    assert as_uint8.shape == base.shape and np.isfinite(as_uint8).all()
    half = predict(net2, image, device="cpu", out_dtype=np.float16)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, base, atol=2e-3)
    with pytest.raises(ValueError, match="normalization"):
        predict(net2, image, normalization="percentile")


def test_channels_and_stacks(rng):
    model = _net(2, 4, in_channels=2)
    planes = rng.random((3, 20, 27, 2)).astype(np.float32)
    stack = predict(model, planes, stack=True, channel_axis=-1, device="cpu", tile_size=8)
    assert stack.shape == (3, 3, 20, 27)
    for p in range(3):
        single = predict(model, np.moveaxis(planes[p], -1, 0), channel_axis=0, device="cpu", tile_size=8)
        np.testing.assert_allclose(stack[p], single, atol=1e-6)
    events = list(iter_predict(model, planes, stack=True, channel_axis=3, device="cpu", tile_size=8))
    tiles = [e for e in events if isinstance(e, TileDone)]
    assert [e.plane for e in events if isinstance(e, PlaneDone)] == [0, 1, 2]
    assert [e.done for e in tiles] == list(range(1, len(tiles) + 1))
    assert all(e.total == len(tiles) and e.n_planes == 3 for e in tiles)


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((4, 5, 6)), {}, r"\(3 dimensions\) but \(Y, X\) was expected"),
        (np.zeros((5, 6)), {"stack": True}, r"\(P, Y, X\) was expected"),
        (np.zeros((8, 9, 3)), {"channel_axis": -1}, "expects 1 channel but the image has 3"),
        (np.zeros((0, 9)), {}, "empty"),
        (np.ones((1, 1)), {}, "too small: 1x1"),
        (np.array([[1.0, np.nan], [0.0, 2.0]]), {}, "NaN or infinite"),
        (np.array([[1.0, np.inf], [0.0, 2.0]]), {}, "NaN or infinite"),
        (np.zeros((3, 3), complex), {}, "real-valued"),
        (np.zeros((8, 8)), {"out_dtype": np.int32}, "out_dtype"),
        (np.zeros((8, 8)), {"tile_size": 0}, "tile_size"),
    ],
)
def test_bad_input_raises_a_clear_value_error(net2, image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict(net2, image, device="cpu", **kwargs)


def test_channel_count_error_names_both_numbers():
    model = _net(2, 4, in_channels=3)
    with pytest.raises(ValueError, match="expects 3 channels but the image has 1"):
        predict(model, np.zeros((9, 9)), device="cpu")


# --------------------------------------------------------------------------- cancel and out-of-memory


class _Shared(list):
    """A list its copies share: prediction runs a copy of the model (``inference_copy``)."""

    def __deepcopy__(self, memo):
        return self


class _CountingUNet(UNet):
    """A UNet that counts forward passes and raises a CUDA out-of-memory error above a size."""

    def __init__(self, config, *, oom_above: int | None = None):
        super().__init__(config)
        self._calls = _Shared([0])
        self.oom_above = oom_above

    @property
    def calls(self) -> int:
        return self._calls[0]

    def forward(self, x):
        self._calls[0] += 1
        if self.oom_above is not None and x.shape[-1] > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return super().forward(x)


def test_closing_the_generator_stops_at_once(rng):
    model = _CountingUNet(UNetConfig(depth=2, base_channels=4)).eval()
    gen = iter_predict(model, rng.random((60, 60)).astype(np.float32), tile_size=8, device="cpu")
    first = next(gen)
    assert isinstance(first, TileDone) and first.total > 4
    assert model.calls == 1
    gen.close()
    assert model.calls == 1
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value is None


def test_a_suspended_prediction_leaves_the_thread_out_of_inference_mode(net2, rng):
    """Inference mode is the thread's. The prediction held it across its yields, so that a
    generator left suspended in a worker thread and closed from another (the Segment panel's
    job when napari aborts it as the viewer closes) left that pool thread in inference mode,
    and a Fine-tune run there later failed with 'element 0 of tensors does not require grad'.
    The mode is now held for each batch only."""
    import threading

    gen = iter_predict(net2, rng.random((60, 60)).astype(np.float32), tile_size=8, device="cpu")
    assert isinstance(next(gen), TileDone)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    closer = threading.Thread(target=gen.close)  # closed from another thread
    closer.start()
    closer.join()
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()


def test_out_of_memory_halves_the_tile_and_retries(rng):
    torch.manual_seed(3)
    model = _CountingUNet(UNetConfig(depth=2, base_channels=4)).eval()
    image = rng.random((50, 120)).astype(np.float32)
    expected = predict(model, image, tile_size=64, device="cpu")
    model.oom_above = axis_tiling(120, 64, model.config).input - 1  # 64-pixel tiles do not fit
    events = list(iter_predict(model, image, tile_size=64, device="cpu"))
    reduced = [e for e in events if isinstance(e, TileSizeReduced)]
    assert reduced and reduced[0].old == 64 and reduced[0].new <= 32
    result = predict(model, image, tile_size=64, device="cpu")
    np.testing.assert_allclose(result, expected, atol=2e-5)
    model.oom_above = 1  # nothing fits
    with pytest.raises(MemoryError, match="out of memory even with the smallest tile"):
        predict(model, image, tile_size=64, device="cpu")


def test_other_errors_are_not_mistaken_for_out_of_memory(rng):
    class Broken(UNet):
        def forward(self, x):
            raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        predict(Broken(UNetConfig(depth=2, base_channels=4)), rng.random((20, 20)), device="cpu")


# --------------------------------------------------------------------------- memory budget


def test_tile_size_from_memory_budget():
    config = UNetConfig.default()
    sizes = [tile_size_for_budget(config, mb * 1024**2) for mb in (16, 64, 256, 1024)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    for mb, tile in zip((64, 256, 1024), sizes[1:], strict=True):
        assert activation_bytes(config, tile) <= mb * 1024**2 < activation_bytes(config, tile + 16)
        assert round_tile_size(tile, config) == tile
    assert tile_size_for_budget(config, 1) == valid_output_at_least(1, 4)  # never below the minimum
    paper = UNetConfig.paper()
    assert activation_bytes(paper, 388, batch_size=2) == 2 * activation_bytes(paper, 388)
    assert activation_bytes(paper, 388, bytes_per_value=2) * 2 == activation_bytes(paper, 388)


def test_choose_tiling_per_device():
    config = UNetConfig.default()
    tile, batch = choose_tiling(config, torch.device("cpu"), free_bytes=8 * 1024**3)
    assert batch == 1 and tile == round_tile_size(CPU_MAX_TILE, config)
    paper = UNetConfig.paper()
    paper_tile, _ = choose_tiling(paper, torch.device("cpu"), free_bytes=8 * 1024**3)
    assert paper_tile <= CPU_MAX_TILE and activation_bytes(paper, paper_tile) <= CPU_ACTIVATION_BUDGET
    tight, _ = choose_tiling(paper, torch.device("cpu"), free_bytes=2 * 1024**3)
    assert tight < paper_tile and activation_bytes(paper, tight) <= 2 * 1024**3 // 4
    small, _ = choose_tiling(config, torch.device("cpu"), free_bytes=64 * 1024**2)
    assert small < tile
    gpu_tile, gpu_batch = choose_tiling(config, torch.device("cuda"), free_bytes=40 * 1024**3)
    assert gpu_tile == round_tile_size(1024, config) and gpu_batch > 1
    assert gpu_batch * activation_bytes(config, gpu_tile, bytes_per_value=2) <= 20 * 1024**3


def test_channels_last_gives_the_same_probabilities(rng):
    model = _net()
    image = rng.random((70, 53)).astype(np.float32)
    plain = predict(model, image, tile_size=16, device="cpu", channels_last=False)
    np.testing.assert_allclose(predict(model, image, tile_size=16, device="cpu"), plain, atol=1e-5)
    np.testing.assert_allclose(
        predict(model, image, tile_size=16, device="cpu", channels_last=True), plain, atol=1e-5
    )


def test_model_is_handed_back_as_it_was(rng):
    model = _net().train()  # a model being trained (a fine-tune's preview) stays in training
    image = rng.random((40, 40)).astype(np.float32)
    predict(model, image, tile_size=16, device="cpu", channels_last=True)
    assert model.training
    assert all(p.is_contiguous() for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"
    gen = iter_predict(model, image, tile_size=8, device="cpu", channels_last=True)
    next(gen)
    gen.close()  # cancelled mid-way: the same
    assert all(p.is_contiguous() for p in model.parameters())


# --------------------------------------------------------------------------- CUDA


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
def test_cuda_prediction_matches_cpu(nuclei):
    torch.manual_seed(0)
    model = UNet(UNetConfig.default())
    image = nuclei[0]
    on_cpu = predict(model, image, device="cpu")
    full = predict(model, image, device="cuda", amp=False)
    np.testing.assert_allclose(full, on_cpu, atol=5e-3)  # cuDNN may use TF32
    mixed = predict(model, image, device="cuda", amp=True, out_dtype=np.float16)
    assert mixed.dtype == np.float16
    assert np.abs(mixed.astype(np.float32) - on_cpu).max() < 3e-2
    # the model goes back to the CPU, and its device memory with it
    assert next(model.parameters()).device.type == "cpu"
    assert torch.cuda.memory_allocated() == 0


@pytest.mark.cuda
@cuda
def test_cuda_out_of_memory_retry(rng):
    model = _CountingUNet(UNetConfig(depth=2, base_channels=4))
    model.oom_above = axis_tiling(120, 64, model.config).input - 1
    image = rng.random((50, 120)).astype(np.float32)
    events = list(iter_predict(model, image, tile_size=64, device="cuda"))
    assert any(isinstance(e, TileSizeReduced) for e in events)


def test_test_time_augmentation_averages_the_symmetries(net3, rng):
    image = rng.random((70, 90)).astype(np.float32)
    plain = predict(net3, image, normalization=False, device="cpu", tile_size=24)
    tta = predict(net3, image, normalization=False, device="cpu", tile_size=24, tta=True)
    assert tta.shape == plain.shape and np.abs(tta - plain).max() > 1e-3
    np.testing.assert_allclose(tta.sum(0), 1.0, atol=1e-5)
    # averaged over the symmetries, the prediction of a flipped or turned image is the flipped or
    # turned prediction (a random net alone is far from that). One tile that the image fills
    # exactly, so that the pooling grid maps onto itself.
    side = valid_output_at_least(60, 3)
    square = rng.random((side, side)).astype(np.float32)

    def run(x, tta):
        return predict(net3, np.ascontiguousarray(x), normalization=False, device="cpu", tile_size=side, tta=tta)

    ref = run(square, True)
    np.testing.assert_allclose(run(square[:, ::-1], True)[:, :, ::-1], ref, atol=1e-5)
    np.testing.assert_allclose(np.rot90(run(np.rot90(square), True), -1, axes=(1, 2)), ref, atol=1e-5)
    assert np.abs(run(square[:, ::-1], False)[:, :, ::-1] - run(square, False)).max() > 1e-3


def test_a_non_square_tile_gets_all_eight_symmetries(net3, rng):
    """A tile smaller than tile_size along one side (a non-square image) was averaged over the
    four symmetries that keep its shape only, so a transposed image did not get the transposed
    prediction; a quarter-turned tile is as valid for the U-Net, and all eight are averaged."""
    rows, cols = valid_output_at_least(40, 3), valid_output_at_least(70, 3)
    image = rng.random((rows, cols)).astype(np.float32)

    def run(x):
        return predict(net3, np.ascontiguousarray(x), normalization=False, device="cpu",
                       tile_size=cols, tta=True)  # fmt: skip

    ref = run(image)
    assert ref.shape[-2:] == image.shape
    np.testing.assert_allclose(run(image.T).transpose(0, 2, 1), ref, atol=1e-5)
    np.testing.assert_allclose(np.rot90(run(np.rot90(image)), -1, axes=(1, 2)), ref, atol=1e-5)


def test_the_bundled_model_is_seamless(rng):
    """The model a user gets gives the same probabilities whatever tile size the memory picks."""
    from napari_unet.engine.api import load_model

    model, _ = load_model("default", device="cpu")
    assert model.config.seamless
    image = rng.random((300, 260)).astype(np.float32)
    whole = predict(model, image, tile_size=300, normalization=False, device="cpu")
    for tile in (60, 124):
        tiled = predict(model, image, tile_size=tile, normalization=False, device="cpu")
        np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)
