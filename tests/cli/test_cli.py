"""The command line, called in-process (``cli.main([...])``) on small TIFF files, plus one run of
the installed console script."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet import cli
from napari_unet.engine.checkpoint import load_checkpoint, save_checkpoint
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.synthetic import synthetic_nuclei


def _tiny(in_channels: int = 1) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(in_channels=in_channels, depth=2, base_channels=4))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with a small nuclei image, its ground truth and two tiny model files."""
    root = tmp_path_factory.mktemp("cli")
    image, labels = synthetic_nuclei((48, 64), n_cells=6, diameter=12.0, rng=3)
    tifffile.imwrite(root / "cells.tif", image)
    tifffile.imwrite(root / "cells_ground_truth.tif", labels.astype(np.uint16))
    save_checkpoint(root / "gray.pt", _tiny(1), diameter=12.0)
    save_checkpoint(root / "rgb.pt", _tiny(3), diameter=12.0)
    return root


@pytest.fixture
def work(files, tmp_path):
    for name in ("cells.tif", "cells_ground_truth.tif"):
        shutil.copy(files / name, tmp_path / name)
    return tmp_path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-unet: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


# -- predict ----------------------------------------------------------------------------------


def test_predict_writes_uint16_labels_of_the_input_shape(files, work, capsys):
    out = work / "labels.tif"
    code, stdout, err = run(capsys, "predict", work / "cells.tif", "-o", out, "--model", files / "gray.pt")
    assert code == 0, err
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint16
    assert labels.shape == (48, 64)
    assert "cells.tif" in stdout and str(out) in stdout
    assert err == ""  # not a terminal: no progress bar
    assert sorted(p.name for p in work.iterdir()) == ["cells.tif", "cells_ground_truth.tif", "labels.tif"]


def test_predict_with_test_time_augmentation(files, work, capsys):
    plain, tta = work / "plain.tif", work / "tta.tif"
    common = ["--model", files / "gray.pt", "--probabilities"]
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", plain, *common, work / "p0.tif")
    assert code == 0, err
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", tta, *common, work / "p1.tif", "--tta")
    assert code == 0, err
    assert tifffile.imread(tta).shape == (48, 64)
    # the averaged probabilities differ from one pass of the (random) net
    assert np.abs(tifffile.imread(work / "p0.tif") - tifffile.imread(work / "p1.tif")).max() > 1e-3


def test_predict_background_threshold_draws_tighter_outlines(files, work, capsys):
    common = ["--model", files / "gray.pt", "--min-confidence", "0", "--min-size", "0"]
    areas = []
    for value in ("0.2", "0.5"):
        out = work / f"labels_{value}.tif"
        code, _, err = run(capsys, "predict", work / "cells.tif", "-o", out, *common,
                           "--background-threshold", value)  # fmt: skip
        assert code == 0, err
        areas.append(int((tifffile.imread(out) > 0).sum()))
    default = work / "labels_default.tif"
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", default, *common)
    assert code == 0, err
    assert areas[0] < areas[1] == int((tifffile.imread(default) > 0).sum())


def test_engine_warnings_are_one_line_each(files, work, capsys, monkeypatch):
    """A warning of the engine (here: an estimate it did not trust) prints as one
    ``napari-unet: warning:`` line on standard error that names the image, and the command
    still succeeds."""
    import warnings

    import napari_unet.engine.segment as segment_module

    real = segment_module.iter_segment

    def warning_segment(*args, **kwargs):
        warnings.warn("the estimated cell diameter (4.5 px) would enlarge the image\n5.3x", stacklevel=2)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(segment_module, "iter_segment", warning_segment)
    out = work / "labels.tif"
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", out, "--model", files / "gray.pt")
    assert code == 0 and out.exists()
    assert err.strip().splitlines() == [
        "napari-unet: warning: cells.tif: the estimated cell diameter (4.5 px) would enlarge "
        "the image 5.3x"
    ]


def test_predict_intensity_range_reaches_the_engine(files, work, capsys, segment_calls):
    out = work / "labels.tif"
    common = ("predict", work / "cells.tif", "-o", out, "--model", files / "gray.pt")
    code, _, err = run(capsys, *common, "--intensity-range", "100", "2000")
    assert code == 0 and [c["intensity_range"] for c in segment_calls] == [[100.0, 2000.0]], err
    code, _, err = run(capsys, *common, "--overwrite", "--intensity-range", "5", "5")
    assert code == 2
    assert_one_line_error(err, "--intensity-range", "LOW must be below HIGH")


def test_predict_refuses_an_existing_output_unless_overwrite(files, work, capsys):
    out = work / "labels.tif"
    out.write_bytes(b"precious")
    args = ["predict", work / "cells.tif", "-o", out, "--model", files / "gray.pt"]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    code, _, err = run(capsys, *args, "--overwrite", "--diameter", "10", "--probabilities", work / "p.tif")
    assert code == 0, err
    assert tifffile.imread(out).shape == (48, 64)
    probs = tifffile.imread(work / "p.tif")
    assert probs.shape == (3, 48, 64) and probs.dtype == np.float32


@pytest.mark.parametrize(
    ("make_input", "words"),
    [
        (lambda d: d / "missing.tif", ["no such file", "missing.tif"]),
        (lambda d: _write(d / "notes.tif", b"just some text, not a TIFF"), ["cannot read", "notes.tif"]),
        (lambda d: _write(d / "empty.tif", b""), ["cannot read", "empty.tif"]),
        (lambda d: _tiff(d / "line.tif", np.zeros(50, np.uint8)), ["has 1 dimension (shape (50,)"]),
        (lambda d: _tiff(d / "five.tif", np.zeros((2, 2, 2, 8, 8), np.uint8)), ["5 dimensions"]),
    ],
)
def test_predict_bad_input_is_one_line_and_writes_nothing(files, work, capsys, make_input, words):
    source = make_input(work)
    out = work / "labels.tif"
    code, stdout, err = run(capsys, "predict", source, "-o", out, "--model", files / "gray.pt")
    assert code == 2
    assert_one_line_error(err, *words)
    assert not out.exists()
    assert stdout == ""


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tiff(path: Path, data: np.ndarray) -> Path:
    tifffile.imwrite(path, data)
    return path


def test_predict_model_for_other_channels_is_refused(files, work, capsys):
    out = work / "labels.tif"
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", out, "--model", files / "rgb.pt")
    assert code == 2
    assert_one_line_error(err, "expects 3 channels but the image has 1", "--channel-axis")
    assert not out.exists()


def test_predict_bad_model_files(work, capsys, tmp_path):
    out = work / "labels.tif"
    broken = _write(tmp_path / "broken.pt", b"\x00" * 100)
    for model, words in ((tmp_path / "nope.pt", ["model file not found"]), (broken, ["broken.pt"])):
        code, _, err = run(capsys, "predict", work / "cells.tif", "-o", out, "--model", model)
        assert code == 2
        assert_one_line_error(err, *words)
        assert not out.exists()


def test_predict_an_rgb_tiff_with_a_three_channel_model(files, work, capsys):
    image = tifffile.imread(work / "cells.tif")
    rgb = np.stack([image // 16, image // 32, image // 64], axis=-1).astype(np.uint8)
    tifffile.imwrite(work / "rgb.tif", rgb, photometric="rgb")
    code, _, err = run(capsys, "predict", work / "rgb.tif", "-o", work / "l.tif", "--model", files / "rgb.pt")
    assert code == 0, err
    assert tifffile.imread(work / "l.tif").shape == (48, 64)
    # a one-channel model reads the mean of the colours, as the Segment panel does
    code, _, err = run(capsys, "predict", work / "rgb.tif", "-o", work / "g.tif", "--model", files / "gray.pt")
    assert code == 0, err
    assert tifffile.imread(work / "g.tif").shape == (48, 64)


def test_predict_a_stack_plane_by_plane(files, work, capsys):
    image = tifffile.imread(work / "cells.tif")
    stack = np.stack([image, image[::-1], image[:, ::-1]])
    tifffile.imwrite(work / "stack.tif", stack, photometric="minisblack")
    # without photometric, tifffile stores 3 planes as planar RGB: refused, with a hint ...
    tifffile.imwrite(work / "planar.tif", stack)
    code, _, err = run(capsys, "predict", work / "planar.tif", "-o", work / "p.tif", "--model", files / "gray.pt")
    assert code == 2
    assert_one_line_error(err, "has 3", "--stack")
    # ... that works
    code, _, err = run(
        capsys, "predict", work / "planar.tif", "-o", work / "p.tif", "--model", files / "gray.pt", "--stack",
        "--diameter", "12",
    )
    assert code == 0, err
    assert tifffile.imread(work / "p.tif").shape == (3, 48, 64)
    code, _, err = run(
        capsys, "predict", work / "stack.tif", "-o", work / "s.tif", "--model", files / "gray.pt",
        "--diameter", "12",
    )
    assert code == 0, err
    labels = tifffile.imread(work / "s.tif")
    assert labels.shape == (3, 48, 64)
    planes = [set(np.unique(p)) - {0} for p in labels]
    assert not planes[0] & planes[1] and not planes[1] & planes[2]


def test_predict_a_folder(files, work, capsys):
    folder = work / "images"
    folder.mkdir()
    for name in ("a.tif", "b.TIFF"):
        shutil.copy(work / "cells.tif", folder / name)
    (folder / "readme.txt").write_text("not an image")
    out = work / "results"
    args = ["predict", folder, "-o", out, "--model", files / "gray.pt", "--diameter", "12"]
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "b_labels.tif"]
    assert tifffile.imread(out / "b_labels.tif").shape == (48, 64)
    assert "[2/2]" not in stdout  # the counter is for the progress bar only
    # one existing output: refused before any work, the other is not rewritten either
    (out / "a_labels.tif").unlink()
    before = (out / "b_labels.tif").stat().st_mtime_ns
    code, _, err = run(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "b_labels.tif", "already exists")
    assert not (out / "a_labels.tif").exists()
    assert (out / "b_labels.tif").stat().st_mtime_ns == before
    # results written next to the inputs are not taken for inputs the next time
    code, _, err = run(capsys, "predict", folder, "-o", folder, "--model", files / "gray.pt", "--diameter", "12")
    assert code == 0, err
    code, _, err = run(capsys, "predict", folder, "-o", folder, "--model", files / "gray.pt", "--overwrite", "--diameter", "12")
    assert code == 0, err
    assert sorted(p.name for p in folder.glob("*_labels.tif")) == ["a_labels.tif", "b_labels.tif"]


def test_predict_a_folder_needs_an_output_folder(files, work, capsys):
    folder = work / "images"
    folder.mkdir()
    shutil.copy(work / "cells.tif", folder / "a.tif")
    code, _, err = run(capsys, "predict", folder, "-o", work / "cells.tif", "--model", files / "gray.pt")
    assert code == 2
    assert_one_line_error(err, "must be a folder")
    empty = work / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "predict", empty, "-o", work / "out", "--model", files / "gray.pt")
    assert code == 2
    assert_one_line_error(err, "no .tif/.tiff images")


def test_predict_refuses_to_replace_its_input(files, work, capsys):
    image = work / "cells.tif"
    before = image.read_bytes()
    code, _, err = run(capsys, "predict", image, "-o", image, "--model", files / "gray.pt", "--overwrite")
    assert code == 2
    assert_one_line_error(err, "replace an input")
    assert image.read_bytes() == before


def test_predict_draws_a_progress_bar_on_a_terminal(files, work, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = cli.main(["predict", str(work / "cells.tif"), "-o", str(work / "l.tif"), "--model", str(files / "gray.pt")])
    assert code == 0
    drawn = terminal.getvalue()
    assert "\r" in drawn and "100.0%" in drawn and "tiles" in drawn and "cells.tif" in drawn
    assert drawn.endswith("\n")


def test_usage_errors_are_one_line(capsys):
    for argv in (["predict"], ["predict", "x.tif"], ["frobnicate"], ["predict", "a", "-o", "b", "--threshold", "2"],
                 ["predict", "a", "-o", "b", "--diameter", "-3"], ["predict", "a", "-o", "b", "--device", "tpu"],
                 ["predict", "a", "-o", "b", "--min-confidence", "1"],
                 ["predict", "a", "-o", "b", "--background-threshold", "0"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert_one_line_error(err)
    code, _, err = run(capsys)
    assert code == 2 and "predict" in err


def test_help_and_debug(work, capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "predict" in out and "evaluate" in out
    code, out, _ = run(capsys, "predict", "--help")
    assert code == 0 and "--diameter" in out
    code, _, err = run(capsys, "predict", work / "missing.tif", "-o", work / "x.tif", "--debug")
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("napari-unet: error:")


def test_an_unavailable_device_is_a_usage_error(files, work, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", work / "x.tif", "--model", files / "gray.pt", "--device", "cuda")
    assert code == 2
    assert_one_line_error(err, "cuda")
    assert not (work / "x.tif").exists()


def test_a_missing_bundled_model_is_a_usage_error(work, capsys, monkeypatch):
    monkeypatch.setattr("napari_unet.engine.models.bundled_model_path", lambda: None)
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", work / "x.tif")
    assert code == 2
    assert_one_line_error(err, "bundled model is not installed")


def test_a_failure_while_working_exits_1(files, work, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        yield  # pragma: no cover

    monkeypatch.setattr("napari_unet.engine.segment.iter_segment", boom)
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", work / "x.tif", "--model", files / "gray.pt")
    assert code == 1
    assert_one_line_error(err, "out of memory")
    assert not (work / "x.tif").exists()


# -- evaluate ---------------------------------------------------------------------------------


def test_evaluate_prints_the_metrics(work, capsys):
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    code, out, err = run(capsys, "evaluate", work / "cells_ground_truth.tif", work / "cells_ground_truth.tif")
    assert code == 0, err
    for name in ("AP@0.5", "AP@0.75", "AP@0.9", "F1@0.5", "precision@0.5", "recall@0.5", "SEG",
                 "foreground IoU", "pixel error", "Rand error"):
        assert name in out, name
    assert "AP@0.5 " in out and "1.0000" in out
    worse = truth.copy()
    worse[worse == 1] = 0
    tifffile.imwrite(work / "pred.tif", worse)
    code, out, _ = run(capsys, "evaluate", work / "pred.tif", work / "cells_ground_truth.tif", "--json")
    assert code == 0
    payload = json.loads(out)
    metrics = payload["pairs"][0]["metrics"]
    n = int(truth.max())
    assert metrics["recall@0.5"] == pytest.approx((n - 1) / n)
    assert metrics["precision@0.5"] == 1.0
    assert payload["mean"]["recall@0.5"] == metrics["recall@0.5"]


def test_evaluate_folders_pairs_files_by_name(work, capsys):
    pred, gt = work / "pred", work / "gt"
    pred.mkdir()
    gt.mkdir()
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    for stem in ("one", "two"):
        tifffile.imwrite(pred / f"{stem}_labels.tif", truth)
        tifffile.imwrite(gt / f"{stem}.tif", truth)
    code, out, err = run(capsys, "evaluate", pred, gt)
    assert code == 0, err
    assert "one_labels.tif" in out and "two_labels.tif" in out and "mean over 2 images" in out
    (gt / "two.tif").unlink()
    code, _, err = run(capsys, "evaluate", pred, gt)
    assert code == 2
    assert_one_line_error(err, "no ground truth for two_labels.tif")


def test_evaluate_bad_input(work, capsys):
    tifffile.imwrite(work / "small.tif", np.zeros((10, 10), np.uint16))
    code, _, err = run(capsys, "evaluate", work / "small.tif", work / "cells_ground_truth.tif")
    assert code == 2
    assert_one_line_error(err, "shape")
    tifffile.imwrite(work / "float.tif", np.full((48, 64), 0.5, np.float32))
    code, _, err = run(capsys, "evaluate", work / "float.tif", work / "cells_ground_truth.tif")
    assert code == 2
    assert_one_line_error(err, "not a label image")


def test_evaluate_writes_the_error_map_and_refuses_to_replace_it(work, capsys):
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    pred = truth.copy()
    pred[pred == 1] = 0  # one miss
    tifffile.imwrite(work / "pred.tif", pred)
    out_path = work / "errors.tif"
    code, out, err = run(
        capsys, "evaluate", work / "pred.tif", work / "cells_ground_truth.tif", "--errors", out_path
    )
    assert code == 0, err
    codes = tifffile.imread(out_path)
    assert codes.shape == truth.shape
    assert (codes[truth == 1] == 3).all()  # the miss
    assert (codes[(truth > 1)] == 1).all()  # the rest correct
    assert "misses 1" in out and "error map" in out
    out_path.write_bytes(b"keep me")
    code, _, err = run(
        capsys, "evaluate", work / "pred.tif", work / "cells_ground_truth.tif", "--errors", out_path
    )
    assert code == 2
    assert_one_line_error(err, "already exists", "--overwrite")
    assert out_path.read_bytes() == b"keep me"
    code, _, err = run(
        capsys, "evaluate", work / "pred.tif", work / "cells_ground_truth.tif", "--errors",
        out_path, "--overwrite",
    )
    assert code == 0, err
    assert tifffile.imread(out_path).shape == truth.shape
    code, _, err = run(capsys, "evaluate", work, work, "--errors", work / "e2.tif")
    assert code == 2
    assert_one_line_error(err, "--errors needs one prediction file")


# -- sample -----------------------------------------------------------------------------------


def test_sample_writes_the_image_and_its_ground_truth(tmp_path, capsys):
    code, _, err = run(capsys, "sample", "nuclei", "--output-dir", tmp_path / "out")
    assert code == 0, err
    image = tifffile.imread(tmp_path / "out" / "nuclei.tif")
    truth = tifffile.imread(tmp_path / "out" / "nuclei_ground_truth.tif")
    assert image.shape == truth.shape == (512, 512)
    assert image.dtype == np.uint16 and truth.dtype == np.uint16 and truth.max() > 50
    code, _, err = run(capsys, "sample", "nuclei", "--output-dir", tmp_path / "out")
    assert code == 2
    assert_one_line_error(err, "already exists")
    code, _, err = run(capsys, "sample", "nuclei", "--output-dir", tmp_path / "out", "--overwrite")
    assert code == 0, err


# -- train ------------------------------------------------------------------------------------


def test_train_from_scratch_writes_a_loadable_model(work, capsys):
    out = work / "model.pt"
    args = [
        "train", "--images", work / "cells.tif", "--labels", work / "cells_ground_truth.tif",
        "--from", "scratch", "--depth", "2", "--base-channels", "4", "--steps", "3",
        "--tile-size", "16", "--val-fraction", "0", "--device", "cpu", "--out", out,
    ]
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert "step 3/3 loss" in err
    assert str(out) in stdout
    net, checkpoint = load_checkpoint(out)
    assert net.config.depth == 2 and net.config.in_channels == 1
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    from napari_unet.engine.diameter import estimate_diameter

    assert checkpoint.diameter == pytest.approx(estimate_diameter(truth))
    # the minimum confidence was chosen on the training cells, stored, and said
    from napari_unet.engine.confidence_calibration import CANDIDATES

    chosen = checkpoint.extra["instance_step"]
    assert chosen["min_confidence"] in CANDIDATES and chosen["chosen_on_cells"] == truth.max()
    said = next(line for line in stdout.splitlines() if line.startswith("minimum confidence"))
    assert f"{chosen['min_confidence']:g}" in said and "predict uses it" in said
    # the model file can be used at once, and an existing one is not replaced
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", work / "l.tif", "--model", out)
    assert code == 0, err
    before = out.read_bytes()
    code, _, err = run(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "already exists")
    assert out.read_bytes() == before


def test_train_bad_input(work, capsys):
    blank = work / "blank.tif"
    tifffile.imwrite(blank, np.zeros((48, 64), np.uint16))
    common = ["--from", "scratch", "--depth", "2", "--base-channels", "4", "--steps", "1", "--out", work / "m.pt"]
    code, _, err = run(capsys, "train", "--images", work / "cells.tif", "--labels", blank, *common)
    assert code == 2
    assert_one_line_error(err, "no cells")
    tifffile.imwrite(work / "wrong.tif", np.ones((10, 10), np.uint16))
    code, _, err = run(capsys, "train", "--images", work / "cells.tif", "--labels", work / "wrong.tif", *common)
    assert code == 2
    assert_one_line_error(err, "shape")
    code, _, err = run(capsys, "train", "--images", work / "cells.tif", work / "cells.tif", "--labels", blank, *common)
    assert code == 2
    assert_one_line_error(err, "2 images but 1 label image; give one label image per image")
    assert not (work / "m.pt").exists()


@pytest.fixture
def fake_training(monkeypatch):
    """Replace iter_train by a stand-in that records its input and yields two steps."""
    from napari_unet.engine.events import StepDone
    from napari_unet.engine.training import TrainResult

    seen = {}

    def fake_iter_train(
        model, images, labels, *, regions=None, config=None, extra=None, diameter=None, **kwargs
    ):
        seen.update(
            model=model, images=images, labels=labels, regions=regions, config=config,
            extra=extra, diameter=diameter,
        )
        for step in (1, 2):
            if seen.get("interrupt_at") == step:
                raise KeyboardInterrupt
            yield StepDone(step=step, total=2, loss=0.5, lr=1e-3, seconds=0.01)
        save_checkpoint(config.checkpoint_path, model, extra=extra, diameter=diameter)
        return TrainResult(model=model, history=[], checkpoint_path=Path(config.checkpoint_path), steps_done=2)

    monkeypatch.setattr("napari_unet.engine.training.iter_train", fake_iter_train)
    return seen


def test_fine_tuning_rescales_the_data_to_the_model_diameter(files, work, capsys, fake_training):
    # the model was trained on 24 px cells; the data has ~12 px cells: images are enlarged 2x
    model = work / "big.pt"
    save_checkpoint(model, _tiny(1), diameter=24.0)
    tifffile.imwrite(work / "regions.tif", np.ones((48, 64), np.uint8))
    code, _, err = run(
        capsys, "train", "--images", work / "cells.tif", "--labels", work / "cells_ground_truth.tif",
        "--regions", work / "regions.tif", "--from", model, "--out", work / "tuned.pt", "--steps", "2",
    )
    assert code == 0, err
    assert "rescaled by" in err
    (image,), (labels,), (regions,) = fake_training["images"], fake_training["labels"], fake_training["regions"]
    assert 90 <= image.shape[0] <= 100 and image.shape == labels.shape == regions.shape
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    assert set(np.unique(labels)) == set(np.unique(truth))  # nearest neighbour: no new ids
    assert fake_training["diameter"] == 24.0
    assert fake_training["config"].steps == 2
    assert load_checkpoint(work / "tuned.pt")[1].diameter == 24.0


def test_foreground_fraction_option(files, work, capsys, fake_training):
    args = ["train", "--images", work / "cells.tif", "--labels", work / "cells_ground_truth.tif",
            "--from", "scratch", "--depth", "2", "--base-channels", "4", "--steps", "2"]
    code, _, err = run(capsys, *args, "-o", work / "a.pt")  # -o as in predict
    assert code == 0, err
    assert fake_training["config"].foreground_fraction == 0.5  # as in the Fine-tune panel
    code, _, err = run(capsys, *args, "--out", work / "b.pt", "--foreground-fraction", "0")
    assert code == 0, err
    assert fake_training["config"].foreground_fraction == 0.0
    code, _, err = run(capsys, *args, "--out", work / "c.pt", "--foreground-fraction", "1.5")
    assert code == 2 and "from 0 to 1" in err and not (work / "c.pt").exists()


def test_training_diameter_option_and_ctrl_c(files, work, capsys, fake_training):
    fake_training["interrupt_at"] = 2
    args = [
        "train", "--images", work / "cells.tif", "--labels", work / "cells_ground_truth.tif",
        "--from", "scratch", "--depth", "2", "--base-channels", "4", "--diameter", "30",
        "--out", work / "m.pt", "--steps", "2",
    ]
    code, _, err = run(capsys, *args)
    assert code == 130
    assert err.strip().splitlines()[-1].startswith("napari-unet: error: training interrupted")
    assert fake_training["diameter"] == 30.0
    assert fake_training["images"][0].shape == (48, 64)  # from scratch: never rescaled


def test_ctrl_c_names_the_step_the_file_holds(work, capsys, monkeypatch):
    """Interrupted after step 3 completed but before its event was shown (the clock read that
    ends the step raises): the message names step 3, as the file does."""
    from napari_unet.engine import training

    calls = []

    class Clock:
        @staticmethod
        def perf_counter():
            calls.append(None)
            # the run's start, then the start and end of steps 1-3: the end of step 3
            if len(calls) == 7:
                raise KeyboardInterrupt
            return float(len(calls))

    monkeypatch.setattr(training, "time", Clock)
    code, _, err = run(
        capsys, "train", "--images", work / "cells.tif", "--labels", work / "cells_ground_truth.tif",
        "--from", "scratch", "--depth", "1", "--base-channels", "2", "--out", work / "m.pt",
        "--steps", "5", "--device", "cpu", "--val-fraction", "0",
    )
    assert code == 130, err
    assert load_checkpoint(work / "m.pt")[1].training["steps_done"] == 3
    assert err.strip().splitlines()[-1].endswith(f"the model after step 3 is in {work / 'm.pt'}")


# -- the installed console script -------------------------------------------------------------


def test_the_console_script_runs(tmp_path):
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "napari-unet"]
    assert script.value == "napari_unet.cli:main"
    exe = shutil.which("napari-unet", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert exe is not None, "the napari-unet script is not installed"
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "predict" in done.stdout and "train" in done.stdout and "evaluate" in done.stdout
    done = subprocess.run(
        [exe, "evaluate", str(tmp_path / "a.tif"), str(tmp_path / "b.tif")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.startswith("napari-unet: error: no such file")


def test_the_cli_imports_no_gui():
    code = "import sys, napari_unet.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not {m for m in loaded if m.split(".")[0] in ("qtpy", "napari", "magicgui", "PyQt5")}


def test_predict_reads_a_small_trailing_axis_as_planes(files, work, capsys):
    """A (Y, X, 2) TIFF is two planes (was read as 48 planes of 64 x 2), and --axes says so
    too; the labels keep the input's axes."""
    image = tifffile.imread(work / "cells.tif")
    tifffile.imwrite(work / "yxz.tif", np.stack([image, image[::-1]], axis=-1))
    code, _, err = run(capsys, "predict", work / "yxz.tif", "-o", work / "a.tif", "--model", files / "gray.pt", "--diameter", "12")
    assert code == 0, err
    labels = tifffile.imread(work / "a.tif")
    assert labels.shape == (48, 64, 2)
    code, _, err = run(capsys, "predict", work / "cells.tif", "-o", work / "b.tif", "--model", files / "gray.pt", "--diameter", "12")
    assert code == 0, err
    np.testing.assert_array_equal(labels[..., 0] > 0, tifffile.imread(work / "b.tif") > 0)
    code, _, err = run(capsys, "predict", work / "yxz.tif", "-o", work / "c.tif", "--model", files / "gray.pt", "--diameter", "12", "--axes", "yxz")
    assert code == 0, err
    np.testing.assert_array_equal(tifffile.imread(work / "c.tif"), labels)
    code, _, err = run(capsys, "predict", work / "yxz.tif", "-o", work / "d.tif", "--model", files / "gray.pt", "--axes", "YXQ")
    assert code == 2
    assert_one_line_error(err, "yxz.tif", "contain Q")
    code, _, err = run(capsys, "predict", work / "yxz.tif", "-o", work / "d.tif", "--model", files / "gray.pt", "--axes", "YXZ", "--stack")
    assert code == 2
    assert_one_line_error(err, "not both")


def test_train_with_axes(work, capsys):
    image = tifffile.imread(work / "cells.tif")
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    tifffile.imwrite(work / "yxz.tif", np.stack([image, image], axis=-1))
    tifffile.imwrite(work / "yxz_labels.tif", np.stack([truth, truth], axis=-1))
    common = ["--from", "scratch", "--depth", "2", "--base-channels", "4", "--steps", "2", "--tile-size", "16", "--val-fraction", "0", "--device", "cpu"]
    code, _, err = run(capsys, "train", "--images", work / "yxz.tif", "--labels", work / "yxz_labels.tif", *common, "--out", work / "m.pt")
    assert code == 0, err
    code, _, err = run(capsys, "train", "--images", work / "yxz.tif", "--labels", work / "yxz_labels.tif", *common, "--axes", "YXC", "--out", work / "n.pt")
    assert code == 2
    assert_one_line_error(err, "labels of shape")


def test_evaluate_planes_last_with_axes(work, capsys):
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    empty = np.zeros_like(truth)
    tifffile.imwrite(work / "p.tif", np.stack([truth, empty], axis=-1))
    tifffile.imwrite(work / "g.tif", np.stack([truth, truth], axis=-1))
    code, out, err = run(capsys, "evaluate", work / "p.tif", work / "g.tif", "--axes", "YXZ", "--json")
    assert code == 0, err
    metrics = json.loads(out)["mean"]
    # plane 0 is perfect, plane 1 finds nothing: half of the cells
    assert metrics["tp@0.5"] == np.unique(truth).size - 1
    assert metrics["fn@0.5"] == np.unique(truth).size - 1
    errors_path = work / "errors.tif"
    code, _, err = run(capsys, "evaluate", work / "p.tif", work / "g.tif", "--axes", "YXZ",
                       "--errors", errors_path)
    assert code == 0, err
    codes = tifffile.imread(errors_path)
    assert codes.shape == (*truth.shape, 2)  # the files' axes, planes last
    assert (codes[..., 0][truth > 0] == 1).all() and (codes[..., 1][truth > 0] == 3).all()
    code, _, err = run(capsys, "evaluate", work / "p.tif", work / "g.tif", "--axes", "YXC")
    assert code == 2
    assert_one_line_error(err, "no channel axis")
    # without --axes, the small last axis is detected as planes: the same scores
    code, out, err = run(capsys, "evaluate", work / "p.tif", work / "g.tif", "--json")
    assert code == 0, err
    assert json.loads(out)["mean"] == metrics


def test_train_chooses_the_minimum_confidence_on_a_few_images(files, work, capsys, fake_training, monkeypatch):
    """A large training set: the minimum confidence is chosen on 8 images spread over it."""
    import napari_unet.engine.confidence_calibration as calibration_module

    seen = {}
    real = calibration_module.calibrate_min_confidence

    def spy(model, images, labels, regions=None, **kwargs):
        seen["n"] = len(images)
        return real(model, images, labels, regions, **kwargs)

    monkeypatch.setattr(calibration_module, "calibrate_min_confidence", spy)
    image = tifffile.imread(work / "cells.tif")
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    tifffile.imwrite(work / "many.tif", np.stack([image] * 12), photometric="minisblack")
    tifffile.imwrite(work / "many_labels.tif", np.stack([truth] * 12))
    code, stdout, err = run(
        capsys, "train", "--images", work / "many.tif", "--labels", work / "many_labels.tif",
        "--from", "scratch", "--depth", "2", "--base-channels", "4", "--steps", "2", "-o", work / "m.pt",
    )
    assert code == 0, err
    assert len(fake_training["images"]) == 12 and seen["n"] == 8
    assert "minimum confidence" in stdout


def test_train_warns_about_one_id_on_several_cells(files, work, capsys, fake_training):
    """The Fine-tune panel's annotation check on the command line: every cell painted with one
    id is warned about (the run goes on, as in the panel); a label stack names the plane."""
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    tifffile.imwrite(work / "one_id.tif", (truth > 0).astype(np.uint16))
    args = ["train", "--images", work / "cells.tif", "--from", "scratch", "--depth", "2",
            "--base-channels", "4", "--steps", "2"]
    code, _, err = run(capsys, *args, "--labels", work / "one_id.tif", "-o", work / "a.pt")
    assert code == 0, err
    assert "napari-unet: warning: one_id.tif: label 1 covers" in err
    code, _, err = run(capsys, *args, "--labels", work / "cells_ground_truth.tif", "-o", work / "b.pt")
    assert code == 0 and "covers" not in err, err
    image = tifffile.imread(work / "cells.tif")
    tifffile.imwrite(work / "stack.tif", np.stack([image, image]))
    tifffile.imwrite(work / "stack_labels.tif", np.stack([truth, (truth > 0)]).astype(np.uint16))
    code, _, err = run(capsys, "train", "--images", work / "stack.tif", "--labels",
                       work / "stack_labels.tif", "--axes", "ZYX", "--from", "scratch", "--depth", "2",
                       "--base-channels", "4", "--steps", "2", "-o", work / "c.pt")
    assert code == 0, err
    assert "stack_labels.tif, plane 1: label 1 covers" in err


def test_train_names_a_plane_with_nothing_annotated(files, work, capsys, fake_training):
    """A label plane with no painted cell and an empty region teaches nothing; training used to
    leave it out without a word."""
    truth = tifffile.imread(work / "cells_ground_truth.tif")
    image = tifffile.imread(work / "cells.tif")
    tifffile.imwrite(work / "stack.tif", np.stack([image, image]))
    tifffile.imwrite(work / "stack_labels.tif", np.stack([truth, 0 * truth]).astype(np.uint16))
    regions = np.ones((2, *truth.shape), np.uint8)
    regions[1] = 0
    tifffile.imwrite(work / "stack_regions.tif", regions)
    code, _, err = run(capsys, "train", "--images", work / "stack.tif", "--labels",
                       work / "stack_labels.tif", "--regions", work / "stack_regions.tif",
                       "--axes", "ZYX", "--from", "scratch", "--depth", "2",
                       "--base-channels", "4", "--steps", "2", "-o", work / "c.pt")
    assert code == 0, err
    assert "stack_labels.tif, plane 1: nothing is annotated" in err
    assert "plane 0" not in err


def test_library_deprecations_are_not_the_users_warnings(capsys):
    """torch's "`torch.jit.load` is deprecated", raised inside bioimageio.core while a foreign
    TorchScript package loads, printed as "napari-unet: warning: ..." even with -q; the user can
    do nothing about it. napari-unet's own warnings still print."""
    import warnings

    from napari_unet.cli.output import show_warning, warnings_about

    library = "/venv/site-packages/torch/jit/_serialization.py"
    own = "/venv/site-packages/napari_unet/engine/diameter.py"
    show_warning("`torch.jit.load` is deprecated.", DeprecationWarning, library, 1)
    show_warning("the estimate fell back to the model's scale", UserWarning, own, 1)
    show_warning("an option of ours is deprecated", DeprecationWarning, own, 1)
    with warnings_about("cells.tif"), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("old API", DeprecationWarning, library, 1)
        warnings.warn_explicit("odd image", UserWarning, own, 1)
    err = capsys.readouterr().err
    assert "jit.load" not in err and "old API" not in err
    assert "napari-unet: warning: the estimate fell back" in err
    assert "an option of ours is deprecated" in err
    assert "napari-unet: warning: cells.tif: odd image" in err
