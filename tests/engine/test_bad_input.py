"""The bad-input catalogue: odd images, labels and model files, through the Python API and the
command line alike. Each case says what must happen -- the same result as a plain input, or one
clear sentence and nothing written -- so that what passes today keeps passing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import torch

from napari_unet import cli
from napari_unet.engine.checkpoint import save_checkpoint
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.segment import segment
from napari_unet.engine.synthetic import synthetic_nuclei
from napari_unet.engine.train_config import TrainConfig
from napari_unet.engine.training import train

#: The bundled model's training diameter: given, so that one pass runs and no estimate.
DIAMETER = 27.732


@pytest.fixture(scope="module")
def cells():
    """A (64, 64) uint16 image of a few nuclei and its instance labels."""
    return synthetic_nuclei((64, 64), n_cells=5, diameter=DIAMETER, rng=1)


def _api(image, tmp_path, **kw):
    return segment(image, device="cpu", diameter=DIAMETER, **kw)


def _cli(image, tmp_path, **kw):
    src, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, image)
    argv = ["predict", src, "-o", out, "--device", "cpu", "--diameter", DIAMETER, "-q"]
    code = cli.main([str(a) for a in argv])
    assert code == 0
    return tifffile.imread(out)


@pytest.fixture(params=[_api, _cli], ids=["api", "cli"])
def segment_via(request):
    return request.param


@pytest.fixture(scope="module")
def reference(cells):
    labels = segment(cells[0], device="cpu", diameter=DIAMETER)
    assert labels.max() >= 3
    return labels


# -- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1e-300, 1e300], ids=["tiny", "huge"])
def test_extreme_float64_values_segment_like_the_plain_image(
    cells, reference, segment_via, tmp_path, factor
):
    image = cells[0].astype(np.float64) * factor
    np.testing.assert_array_equal(segment_via(image, tmp_path), reference)


def test_a_bool_image_is_segmented(segment_via, tmp_path):
    image = np.zeros((64, 64), bool)
    image[10:30, 12:34] = image[40:58, 36:60] = True
    labels = segment_via(image, tmp_path)
    assert labels.shape == image.shape
    assert labels.max() >= 1


# -- refused: one sentence, nothing written -----------------------------------------------------


class _MakesFolder:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code a model file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _payload_of(net: UNet) -> dict:
    return {"format": "napari-unet", "format_version": 1, "config": net.config.to_dict(),
            "state_dict": net.state_dict()}


def _payload(**changes) -> dict:
    net = UNet(UNetConfig(depth=1, base_channels=2))
    payload = {"format": "napari-unet", "format_version": 1, "config": net.config.to_dict(),
               "state_dict": net.state_dict()}
    config = {**payload["config"], **changes.pop("config", {})}
    return {**payload, "config": config, **changes}


#: (case, the model file's content or None for the bundled model, the image, words expected)
REFUSED = [
    ("nan", None, np.full((32, 32), np.nan), "NaN"),
    ("inf", None, np.full((32, 32), np.inf), "infinite"),
    ("one-pixel", None, np.zeros((1, 1), np.uint8), "too small"),
    # RGB for a one-channel model is read as gray (the panels' and the CLI's rule); three
    # colours for a two-channel model cannot be
    ("rgb-for-a-two-channel-model", "two-channels", np.zeros((32, 32, 3), np.uint8), "channel"),
    ("depth-40", _payload(config={"depth": 40}), None, "depth must be at most"),
    ("in-channels-1e7", _payload(config={"in_channels": 10**7}), None, "in_channels must be at most"),
    ("huge-net", _payload(config={"depth": 5, "base_channels": 256}), None, "M parameters"),
    ("diameter-1e-9", _payload(diameter=1e-9), None, "at least 1"),
    ("bad-percentiles", _payload(normalization={"low": 60.0, "high": 5.0}), None, "0 <= low < high"),
    ("bare-weights", UNet(UNetConfig(depth=1, base_channels=2)).state_dict(), None, "bare weights"),
    ("code", "pickle", None, "refused"),
    ("truncated", b"PK\x03\x04" + b"\x00" * 40, None, "could not be read"),
]


def _model_file(tmp_path, content):
    if content is None:
        return None
    path = tmp_path / "model.pt"
    if content == "pickle":
        torch.save({"format": "napari-unet", "x": _MakesFolder(tmp_path / "ran")}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "two-channels":
        torch.save(_payload_of(UNet(UNetConfig(in_channels=2, depth=1, base_channels=2))), path)
    else:
        torch.save(content, path)
    return path


@pytest.mark.parametrize(("content", "image", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize("via", ["api", "cli"])
def test_refused_with_one_sentence_and_nothing_written(tmp_path, capsys, via, content, image, words):
    model = _model_file(tmp_path, content)
    image = np.zeros((32, 32), np.uint8) if image is None else image
    out = tmp_path / "out.tif"
    if via == "api":
        with pytest.raises(ValueError, match=words):
            segment(image, model, device="cpu")
    else:
        src = tmp_path / "in.tif"
        tifffile.imwrite(src, image, photometric="rgb" if image.ndim == 3 else "minisblack")
        argv = ["predict", src, "-o", out, "--device", "cpu"]
        code = cli.main([str(a) for a in [*argv, *(["--model", model] if model else [])]])
        err = capsys.readouterr().err
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "ran").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- training data ----------------------------------------------------------------------------


def _tiny() -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(depth=1, base_channels=2, padding="same"))


def test_training_on_a_bool_image():
    image = np.zeros((32, 32), bool)
    image[4:12, 4:12] = True
    labels = image.astype(np.int32)
    result = train(_tiny(), image, labels, config=TrainConfig(steps=1, val_fraction=0), device="cpu")
    assert result.steps_done == 1


def test_label_ids_past_int32_stay_distinct(monkeypatch):
    """Ids 2**32 + 5 and 5 would be one cell as int32; 2**31 would be negative."""
    from napari_unet.engine import weights

    seen = []
    original = weights.training_targets
    monkeypatch.setattr(
        weights, "training_targets", lambda labels, *a, **k: seen.append(labels) or original(labels, *a, **k)
    )
    labels = np.zeros((32, 32), np.int64)
    labels[4:12, 4:12], labels[12:20, 4:12], labels[20:28, 20:28] = 2**32 + 5, 5, 2**31
    image = (labels > 0).astype(np.float32)
    train(_tiny(), image, labels, config=TrainConfig(steps=1, val_fraction=0), device="cpu")
    (used,) = seen
    assert used.dtype == np.int32 and used.min() == 0
    assert len(np.unique(used[labels > 0])) == 3


# -- label files on the command line --------------------------------------------------------


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_a_uint64_file_with_ids_past_int64(tmp_path, capsys):
    labels = np.zeros((32, 32), np.uint64)
    labels[2:10, 2:10], labels[15:25, 15:25] = 2**63 + 3, 7
    tifffile.imwrite(tmp_path / "pred.tif", labels)
    tifffile.imwrite(tmp_path / "gt.tif", labels)
    code, _, err = _run(capsys, "evaluate", tmp_path / "pred.tif", tmp_path / "gt.tif")
    assert code == 0, err
    assert "negative" not in err


def test_training_with_bool_labels_measures_the_cells(tmp_path, capsys):
    image, labels = synthetic_nuclei((64, 64), n_cells=6, diameter=12.0, rng=2)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "img_labels.tif", labels > 0)
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    code, _, err = _run(
        capsys, "train", "--images", tmp_path / "img.tif", "--labels", tmp_path / "img_labels.tif",
        "--from", tmp_path / "start.pt", "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu",
    )
    assert code == 0, err
    assert "stores none" not in err and "too few" not in err


def _three_cells() -> tuple[np.ndarray, np.ndarray]:
    """A (40, 40) bool mask of three separate squares and its connected regions as ids."""
    labels = np.zeros((40, 40), np.int32)
    labels[4:12, 4:12], labels[4:12, 20:30], labels[22:34, 10:20] = 1, 2, 3
    return labels > 0, labels


def test_a_bool_label_image_is_its_connected_regions_in_the_engine(monkeypatch):
    """The command line read a bool label file as its connected regions (one cell each), while
    the engine read a bool array as one object (the metrics, merges and splits, the weight map,
    the diameter estimate), or refused it (training, the error map): one mask of three cells
    scored AP 0 against those cells, and a weight map had no border between them."""
    from napari_unet.engine import weights
    from napari_unet.engine.diameter import estimate_diameter
    from napari_unet.engine.errors import error_map, merges_and_splits
    from napari_unet.engine.layout import mask_cells
    from napari_unet.engine.metrics import evaluate, match_instances

    mask, cells = _three_cells()
    assert np.array_equal(mask_cells(mask), cells)
    scores = evaluate(mask, cells)
    assert (scores["n_pred"], scores["ap@0.5"]) == (3.0, 1.0)
    assert match_instances(cells, mask).tp == 3
    assert merges_and_splits(mask, cells).merges == 0
    assert error_map(mask, cells).counts["correct"] == 3
    assert estimate_diameter(mask) == estimate_diameter(cells)
    np.testing.assert_array_equal(weights.weight_map(mask).total, weights.weight_map(cells).total)
    # a stack's regions are taken plane by plane (the planes of one cell are three objects)
    stack = np.stack([mask, mask, mask])
    assert evaluate(stack, np.stack([cells, cells, cells]))["ap@0.5"] == 1.0
    # training takes the regions as its cells, where it refused "labels must be integer ids"
    seen = []
    original = weights.training_targets
    monkeypatch.setattr(
        weights, "training_targets", lambda labels, *a, **k: seen.append(labels) or original(labels, *a, **k)
    )
    train(_tiny(), mask.astype(np.float32), mask, config=TrainConfig(steps=1, val_fraction=0), device="cpu")
    (used,) = seen
    assert np.array_equal(used, cells)


def test_a_bool_label_file_is_read_by_the_command_line_as_by_the_engine(tmp_path, capsys):
    """`evaluate` of a bool file scores what the engine's `evaluate` of the bool array scores,
    for a plane and for a stack."""
    import json

    from napari_unet.engine.metrics import evaluate

    mask, cells = _three_cells()
    shifted = np.roll(cells, 3, axis=1)  # some pairs under IoU 0.75, so the AP varies
    for name, pred, gt in [
        ("plane", mask, shifted), ("stack", np.stack([mask, mask[::-1]]), np.stack([shifted, cells[::-1]]))
    ]:
        tifffile.imwrite(tmp_path / f"{name}_pred.tif", pred)
        tifffile.imwrite(tmp_path / f"{name}_gt.tif", gt)
        code, out, err = _run(
            capsys, "evaluate", tmp_path / f"{name}_pred.tif", tmp_path / f"{name}_gt.tif", "--json"
        )
        assert code == 0, err
        assert json.loads(out)["mean"] == pytest.approx(evaluate(pred, gt)), name


def test_a_bool_label_file_with_planes_last_has_the_regions_of_its_planes(tmp_path, capsys, monkeypatch):
    """A bool label file's regions were taken in its last two axes before its axes were read:
    in a YXZ file those are X x Z slices, so a cell became a region per row (3 cells in 2
    planes scored 56 predicted objects and AP 0 against themselves), and training learnt those
    rows as cells."""
    import json

    from napari_unet.engine import training

    _, cells = _three_cells()
    yxz = np.stack([cells, np.roll(cells, 5, axis=0)], axis=-1)  # (40, 40, 2): planes last
    tifffile.imwrite(tmp_path / "pred.tif", yxz > 0)
    tifffile.imwrite(tmp_path / "gt.tif", yxz)
    code, out, err = _run(capsys, "evaluate", tmp_path / "pred.tif", tmp_path / "gt.tif", "--axes", "YXZ", "--json")
    assert code == 0, err
    assert (json.loads(out)["mean"]["n_pred"], json.loads(out)["mean"]["ap@0.5"]) == (6.0, 1.0)

    seen = []

    def spy(model, images, labels, **kw):  # the labels handed to the engine, without training
        seen.extend(labels)
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(training, "iter_train", spy)
    tifffile.imwrite(tmp_path / "img.tif", (yxz > 0).astype(np.uint16) * 900)
    tifffile.imwrite(tmp_path / "img_labels.tif", yxz > 0)
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    _run(
        capsys, "train", "--images", tmp_path / "img.tif", "--labels", tmp_path / "img_labels.tif",
        "--axes", "YXZ", "--from", tmp_path / "start.pt", "-o", tmp_path / "m.pt", "--steps", 1,
        "--device", "cpu",
    )
    # two planes of three cells each (rescaled to the model's diameter, so compared by count)
    assert len(seen) == 2 and [len(np.unique(plane)) for plane in seen] == [4, 4]


def test_too_few_cells_to_measure_keep_the_models_diameter(tmp_path, capsys):
    image, labels = synthetic_nuclei((48, 48), n_cells=1, diameter=12.0, rng=2)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "img_labels.tif", labels.astype(np.uint16))
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    code, _, err = _run(
        capsys, "train", "--images", tmp_path / "img.tif", "--labels", tmp_path / "img_labels.tif",
        "--from", tmp_path / "start.pt", "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu",
    )
    assert code == 0, err
    assert "the model keeps its 12.0 px" in err and "stores none" not in err


@pytest.mark.parametrize("target", ["img.tif", "img_labels.tif"])
def test_train_never_writes_its_model_over_a_training_file(tmp_path, capsys, target):
    image, labels = synthetic_nuclei((32, 32), n_cells=2, diameter=12.0, rng=2)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "img_labels.tif", labels.astype(np.uint16))
    before = (tmp_path / target).read_bytes()
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    code, _, err = _run(
        capsys, "train", "--images", tmp_path, "--labels", tmp_path / "img_labels.tif",
        "--from", tmp_path / "start.pt", "-o", tmp_path / target, "--overwrite", "--steps", 1,
        "--device", "cpu",
    )
    assert code == 2
    assert "would replace an input file" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / target).read_bytes() == before


@pytest.mark.parametrize("bad", ["nan", "truncated"])
def test_a_folder_with_a_bad_image_still_segments_the_others(cells, tmp_path, capsys, bad):
    """The header of b.tif is fine, its pixels are not: a.tif and c.tif are still written."""
    folder, out = tmp_path / "images", tmp_path / "labels"
    folder.mkdir()
    for name in ("a", "c"):
        tifffile.imwrite(folder / f"{name}.tif", cells[0][:32, :32])
    broken = cells[0][:32, :32].astype(np.float32)
    broken[3, 3] = np.nan
    tifffile.imwrite(folder / "b.tif", broken)
    if bad == "truncated":
        data = (folder / "a.tif").read_bytes()
        (folder / "b.tif").write_bytes(data[: len(data) // 2])
    code, _, err = _run(
        capsys, "predict", folder, "-o", out, "--device", "cpu", "--diameter", DIAMETER, "-q"
    )
    assert code == 2
    assert err.count("\n") == 1 and "b.tif" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "c_labels.tif"]


@pytest.mark.parametrize(
    "options",
    [{"w0": float("nan")}, {"w0": float("inf")}, {"sigma": float("nan")},
     {"augment_strength": float("nan")}, {"seed": -1}, {"seed": 2**70}, {"lr": 1e10},
     {"lr": float("inf")}, {"lr": float("nan")}],
    ids=["w0-nan", "w0-inf", "sigma-nan", "augment-nan", "seed-negative", "seed-2**70",
         "lr-1e10", "lr-inf", "lr-nan"],
)
def test_training_options_that_no_training_can_use_are_refused(options):
    """NaN w0 ended in torch's 'Probabilities contain NaN', NaN augmentation trained silently,
    a seed past 2**63 in 'Overflow when unpacking long long', a learning rate of 1e10 read all
    the data and started training, to end in 'the loss became nan at step 2'."""
    words = {"lr": "learning rate"}.get(next(iter(options)), next(iter(options)).split("_")[0])
    with pytest.raises(ValueError, match=words):
        TrainConfig(**options)


@pytest.mark.parametrize(
    "option",
    [("--w0", "nan"), ("--augment", "nan"), ("--seed", "-1"), ("--seed", str(2**70)),
     ("--lr", "1e10"), ("--lr", "1.5"), ("--val-fraction", "1"), ("--val-fraction", "nan")],
)
def test_training_options_are_checked_on_the_command_line(tmp_path, capsys, option):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "img_labels.tif", np.ones((16, 16), np.uint8))
    code, _, err = _run(
        capsys, "train", "--images", tmp_path / "img.tif", "--labels", tmp_path / "img_labels.tif",
        "-o", tmp_path / "m.pt", "--device", "cpu", *option,
    )
    assert code == 2 and f"argument {option[0]}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(("diameter", "words"), [(1e6, "larger than the image"), (0.5, "smaller than a pixel")])
def test_a_training_diameter_is_checked_like_predicts(diameter, words):
    """1e6 px shrank a fine-tuning image to 2 x 2 pixels and trained on it; 0.5 px enlarged it 24-fold."""
    from napari_unet.engine.diameter import match_training_diameter

    image, labels = synthetic_nuclei((48, 48), n_cells=3, diameter=12.0, rng=2)
    with pytest.raises(ValueError, match=words):
        match_training_diameter([image], [labels], [None], model_diameter=12.0, diameter=diameter)


def test_the_error_map_is_not_written_under_another_format_s_name(tmp_path, capsys):
    """--errors map.png wrote a TIFF named .png; predict's outputs must be .tif already."""
    labels = np.zeros((16, 16), np.uint16)
    labels[2:8, 2:8] = 1
    tifffile.imwrite(tmp_path / "pred.tif", labels)
    tifffile.imwrite(tmp_path / "gt.tif", labels)
    code, out, err = _run(
        capsys, "evaluate", tmp_path / "pred.tif", tmp_path / "gt.tif", "--errors", tmp_path / "map.png"
    )
    assert code == 2 and ".tif or .tiff" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "map.png").exists() and out == ""


@pytest.mark.parametrize(
    "content", [b"not a model\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"II*\x00" + bytes(64)],
    ids=["text", "png", "tiff"],
)
def test_a_file_that_is_no_model_is_not_called_hostile(tmp_path, content):
    """torch's weights-only reader stops at the first byte it does not know; that used to be
    reported as 'could run code' for a text file or an image."""
    from napari_unet.engine.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch file") as err:
        load_checkpoint(path)
    assert "code" not in str(err.value)


def test_a_training_image_with_nan_is_named(tmp_path, capsys):
    """In a folder of training images the sentence said 'image contains NaN' without saying which."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    image, label = synthetic_nuclei((32, 32), n_cells=2, diameter=12.0, rng=2)
    broken = image.astype(np.float32)
    broken[5, 5] = np.nan
    for name, data in (("a", image), ("b", broken)):
        tifffile.imwrite(images / f"{name}.tif", data)
        tifffile.imwrite(labels / f"{name}_labels.tif", label.astype(np.uint16))
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    code, _, err = _run(
        capsys, "train", "--images", images, "--labels", labels, "--from", tmp_path / "start.pt",
        "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu",
    )
    assert code == 2 and "b.tif" in err and "NaN" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_the_sample_and_its_ground_truth_are_written_together(tmp_path, capsys, monkeypatch):
    """An interrupt while the ground truth was written left nuclei.tif alone (and the next run
    refused it as an existing output)."""
    real = tifffile.imwrite

    def interrupted(path, *args, **kwargs):
        if "ground_truth" in str(path):
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    code, _, _ = _run(capsys, "sample", "nuclei", "--output-dir", tmp_path)
    assert code == 130
    assert list(tmp_path.iterdir()) == []


def test_trains_warnings_are_the_programs_warnings(tmp_path, capsys):
    """Regions that cover nothing leave no cell to choose the minimum confidence on, two cells
    too few to measure a diameter; the lines said 'warning: ...' or nothing of the kind instead
    of the program's 'napari-unet: warning: ...'."""
    image, labels = synthetic_nuclei((32, 32), n_cells=2, diameter=12.0, rng=2)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "img_labels.tif", labels.astype(np.uint16))
    tifffile.imwrite(tmp_path / "img_regions.tif", np.zeros((32, 32), np.uint8))
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    code, out, err = _run(
        capsys, "train", "--images", tmp_path / "img.tif", "--labels", tmp_path / "img_labels.tif",
        "--regions", tmp_path / "img_regions.tif", "--from", tmp_path / "start.pt",
        "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu", "-q",
    )
    assert code == 0, err
    assert out == ""  # -q: nothing but errors and warnings
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("napari-unet: warning: ") for line in lines), err
    assert "too few labelled cells" in lines[0] and "minimum confidence stays" in lines[1]


def test_quiet_sample_prints_nothing(tmp_path, capsys):
    code, out, err = _run(capsys, "sample", "nuclei", "--output-dir", tmp_path, "-q")
    assert code == 0 and out == err == ""
    assert (tmp_path / "nuclei_ground_truth.tif").exists()


def test_a_block_size_below_the_engines_minimum_is_named_as_given(cells, tmp_path, capsys):
    """--block-size 8 was rounded up to 16 before the engine's check, whose sentence then said
    'block_size must be at least 64 pixels, not 16'."""
    tifffile.imwrite(tmp_path / "in.tif", cells[0])
    code, _, err = _run(
        capsys, "predict", tmp_path / "in.tif", "-o", tmp_path / "out.zarr", "--block-size", 8,
        "--device", "cpu",
    )
    assert code == 2 and "argument --block-size" in err and "got 8" in err
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    "argv",
    [["predict", "", "-o", "out.tif"], ["predict", "in.tif", "-o", ""],
     ["train", "--images", "", "--labels", "in.tif", "-o", "m.pt"], ["evaluate", "in.tif", ""],
     ["sample", "nuclei", "--output-dir", ""]],
    ids=["predict-input", "predict-output", "train-images", "evaluate-gt", "sample-dir"],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, capsys, monkeypatch, argv):
    """`napari-unet predict "$IMAGE" -o out.tif` with IMAGE unset segmented every TIFF of the
    current folder into a new folder named out.tif."""
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((32, 32), np.uint8))
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_a_folder_is_not_segmented_into_a_folder_named_like_a_tiff(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((32, 32), np.uint8))
    code, _, err = _run(capsys, "predict", folder, "-o", tmp_path / "out.tif", "--device", "cpu")
    assert code == 2 and "must be a folder" in err
    assert not (tmp_path / "out.tif").exists()


def test_one_folder_for_images_and_labels_pairs_each_image_with_its_labels(tmp_path, monkeypatch, capsys):
    """--images data --labels data paired every file with itself: the image was read as its own
    labels (hundreds of 'cells' of 1 px) and trained on silently."""
    from napari_unet.engine import training

    seen = {}
    monkeypatch.setattr(
        training, "iter_train", lambda net, images, labels, **kw: seen.update(labels=labels) or iter(())
    )
    image, labels = synthetic_nuclei((32, 32), n_cells=3, diameter=12.0, rng=2)
    folder = tmp_path / "data"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image)
    tifffile.imwrite(folder / "a_labels.tif", labels.astype(np.uint16))
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    _run(
        capsys, "train", "--images", folder, "--labels", folder, "--from", tmp_path / "start.pt",
        "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu",
    )
    (used,) = seen["labels"]
    assert len(np.unique(used[used > 0])) == len(np.unique(labels[labels > 0]))


def test_one_folder_as_prediction_and_ground_truth_is_refused(tmp_path, capsys):
    """Every file was paired with itself: AP 1.0 for an empty prediction."""
    labels = np.zeros((16, 16), np.uint16)
    labels[2:8, 2:8] = 1
    tifffile.imwrite(tmp_path / "a_ground_truth.tif", labels)
    tifffile.imwrite(tmp_path / "a_labels.tif", np.zeros_like(labels))
    code, out, err = _run(capsys, "evaluate", tmp_path, tmp_path)
    assert code == 2 and "scored against itself" in err and out == ""


def test_train_never_holds_out_its_only_annotated_image(tmp_path, capsys):
    """b.tif has no cell and an empty region mask; with --val-fraction 0.5 the split held out
    a.tif and trained on b.tif's weight 0 alone ('loss 0.0000' at every step)."""
    image, labels = synthetic_nuclei((48, 48), n_cells=4, diameter=12.0, rng=2)
    for name, lab, region in (("a", labels, True), ("b", np.zeros_like(labels), False)):
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", lab.astype(np.uint16))
        tifffile.imwrite(tmp_path / f"{name}_regions.tif", np.full(labels.shape, region, np.uint8))
    save_checkpoint(tmp_path / "start.pt", _tiny(), diameter=12.0)
    code, _, err = _run(
        capsys, "train", "--images", tmp_path / "a.tif", tmp_path / "b.tif",
        "--labels", tmp_path / "a_labels.tif", tmp_path / "b_labels.tif",
        "--regions", tmp_path / "a_regions.tif", tmp_path / "b_regions.tif",
        "--from", tmp_path / "start.pt", "-o", tmp_path / "m.pt", "--steps", 3, "--log-every", 1,
        "--val-fraction", 0.5, "--seed", 0, "--device", "cpu",
    )
    assert code == 0, err
    losses = [float(line.split("loss ")[1]) for line in err.splitlines() if line.startswith("step ")]
    assert len(losses) == 3 and min(losses) > 0, err
