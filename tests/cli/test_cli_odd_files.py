"""Files users really have, through the command line: each works, or is refused with one line that
names the file and the problem."""

from __future__ import annotations

import json

import numpy as np
import tifffile
import torch

from napari_unet import cli
from napari_unet.engine.checkpoint import save_checkpoint
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.synthetic import synthetic_nuclei


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _tiny(in_channels: int = 1) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(in_channels=in_channels, depth=1, base_channels=2, padding="same"))


def _labels() -> np.ndarray:
    return synthetic_nuclei((32, 32), n_cells=3, diameter=10.0, rng=4)[1].astype(np.uint16)


def test_a_tiff_of_several_images_says_that_only_the_first_is_read(tmp_path, capsys):
    """An OME-TIFF of three stage positions: the first was scored (or segmented) and the
    others were dropped without a word."""
    labels = _labels()
    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for plane in (labels, labels[::-1], labels[:, ::-1]):
            tif.write(np.ascontiguousarray(plane), metadata={"axes": "YX"})
    tifffile.imwrite(tmp_path / "truth.tif", labels)
    code, _, err = _run(capsys, "evaluate", path, tmp_path / "truth.tif")
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-unet: warning: ")
    assert "positions.ome.tif holds 3 images" in lines[0] and "only the first" in lines[0]
    # predict reads the header before the pixels: still said once
    image = tmp_path / "image.ome.tif"
    image.write_bytes(path.read_bytes())
    save_checkpoint(tmp_path / "m.pt", _tiny(), diameter=10.0)
    code, _, err = _run(
        capsys, "predict", image, "-o", tmp_path / "out.tif", "--model", tmp_path / "m.pt",
        "--diameter", 10, "--device", "cpu", "-q",
    )
    assert code == 0
    assert err.count("holds 3 images") == 1, err
    assert tifffile.imread(tmp_path / "out.tif").shape == labels.shape


def test_evaluate_reads_the_two_plane_axes_predict_writes(tmp_path, capsys):
    """predict keeps a TZYX image's axes in its labels; evaluate refused such a file as 'not a
    label image of shape (Y, X) or (P, Y, X)', with or without --axes TZYX."""
    labels = _labels()
    stack = np.stack([np.stack([labels, labels[::-1]]), np.stack([labels[:, ::-1], labels])])
    tifffile.imwrite(tmp_path / "pred.tif", stack)
    tifffile.imwrite(tmp_path / "truth.tif", stack)
    n_cells = sum(len(np.unique(plane)) - 1 for plane in stack.reshape(-1, *labels.shape))
    for axes in ([], ["--axes", "TZYX"]):
        code, out, err = _run(
            capsys, "evaluate", tmp_path / "pred.tif", tmp_path / "truth.tif", "--json",
            "--errors", tmp_path / "errors.tif", "--overwrite", *axes,
        )
        assert code == 0, err
        metrics = json.loads(out)["mean"]
        assert metrics["ap@0.5"] == 1.0 and metrics["n_gt"] == n_cells
        assert tifffile.imread(tmp_path / "errors.tif").shape == stack.shape


def test_a_training_image_the_model_cannot_read_is_named(tmp_path, capsys):
    """A 1x1 image, or a gray image for a three-channel model: the error came from the training
    loop, without the file's name, after warnings about the labels."""
    labels = _labels()
    tifffile.imwrite(tmp_path / "dot.tif", np.ones((1, 1), np.uint16))
    tifffile.imwrite(tmp_path / "dot_labels.tif", np.ones((1, 1), np.uint16))
    tifffile.imwrite(tmp_path / "gray.tif", labels * 100)
    tifffile.imwrite(tmp_path / "gray_labels.tif", labels)
    save_checkpoint(tmp_path / "rgb.pt", _tiny(3), diameter=10.0)
    for image, start, words in (
        ("dot", "scratch", "too small"),
        ("gray", tmp_path / "rgb.pt", "expects 3 channels"),
    ):
        code, _, err = _run(
            capsys, "train", "--images", tmp_path / f"{image}.tif",
            "--labels", tmp_path / f"{image}_labels.tif", "--from", start,
            "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu", "-q",
        )
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"napari-unet: error: {tmp_path / image}.tif: ")
        assert words in lines[0]
    assert not (tmp_path / "m.pt").exists()


def test_a_plane_too_small_gets_no_hint_about_its_axes(tmp_path, capsys):
    """A (1, 50) image was refused with '(read as YX; pass --axes, or --stack for planes first)'
    after the reason: a 2-D image has no other reading of its axes."""
    tifffile.imwrite(tmp_path / "line.tif", np.ones((1, 50), np.uint16))
    save_checkpoint(tmp_path / "m.pt", _tiny(), diameter=10.0)
    code, _, err = _run(
        capsys, "predict", tmp_path / "line.tif", "-o", tmp_path / "out.tif",
        "--model", tmp_path / "m.pt", "--device", "cpu",
    )
    assert code == 2
    reason = "image is too small: 1x50 pixels; at least 2x2 are needed"
    assert err == f"napari-unet: error: {tmp_path / 'line.tif'}: {reason}\n"
    assert not (tmp_path / "out.tif").exists()


def test_evaluate_skips_the_probabilities_predict_wrote_beside_the_labels(tmp_path, capsys):
    """`predict images/ -o results/ --probabilities results/` then `evaluate results/ truth/`:
    refused with 'no ground truth for a_probabilities.tif'."""
    labels = _labels()
    results, truth = tmp_path / "results", tmp_path / "truth"
    results.mkdir()
    truth.mkdir()
    tifffile.imwrite(results / "a_labels.tif", labels)
    probabilities = np.full((3, *labels.shape), 0.3, np.float32)
    tifffile.imwrite(results / "a_probabilities.tif", probabilities, photometric="minisblack")
    tifffile.imwrite(truth / "a.tif", labels)
    code, out, err = _run(capsys, "evaluate", results, truth, "--json")
    assert code == 0, err
    (pair,) = json.loads(out)["pairs"]
    assert pair["prediction"] == str(results / "a_labels.tif")
    assert pair["metrics"]["ap@0.5"] == 1.0


def test_one_file_as_image_and_labels_is_named(tmp_path, capsys):
    """`--images a.tif --labels a.tif` was refused as '1 images but 0 label images'."""
    labels = _labels()
    tifffile.imwrite(tmp_path / "a.tif", labels * 100)
    tifffile.imwrite(tmp_path / "a_labels.tif", labels)
    for name, words in (("a.tif", "an image cannot be its own labels"),
                        ("a_labels.tif", "named as label images")):
        code, _, err = _run(
            capsys, "train", "--images", tmp_path / name, "--labels", tmp_path / name,
            "--from", "scratch", "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu",
        )
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"both give {tmp_path / name}" in lines[0], err
        assert words in lines[0] and "0 label images" not in lines[0] and "0 images" not in lines[0]


def test_a_region_mask_with_nan_is_refused_naming_it(tmp_path, capsys):
    """A float region mask with NaN for "no data": astype(bool) made every NaN pixel annotated,
    so its unpainted cells were taught as background. Now the file is refused in one line; the
    engine refuses the array too."""
    import pytest

    from napari_unet.engine.events import drive
    from napari_unet.engine.training import TrainConfig, iter_train

    labels = _labels()
    region = np.ones(labels.shape, np.float32)
    region[:, 16:] = np.nan
    tifffile.imwrite(tmp_path / "img.tif", labels * 100)
    tifffile.imwrite(tmp_path / "img_labels.tif", labels)
    tifffile.imwrite(tmp_path / "img_regions.tif", region)
    code, _, err = _run(
        capsys, "train", "--images", tmp_path / "img.tif", "--labels", tmp_path / "img_labels.tif",
        "--regions", tmp_path / "img_regions.tif", "-o", tmp_path / "m.pt", "--steps", 1,
        "--device", "cpu", "-q",
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napari-unet: error: {tmp_path}/img_regions.tif")
    assert "NaN" in lines[0] and not (tmp_path / "m.pt").exists()
    config = TrainConfig(steps=1, val_fraction=0, sample_every=0, tile_size=16)
    with pytest.raises(ValueError, match="NaN"):
        drive(iter_train(_tiny(), labels * 100.0, labels, regions=region, config=config, device="cpu"))
    ones = region.copy()
    ones[:, 16:] = 0  # the same mask in 0 and 1 trains
    drive(iter_train(_tiny(), labels * 100.0, labels, regions=ones, config=config, device="cpu"))


def test_label_images_named_for_other_images_are_refused(tmp_path, capsys):
    """Images a, b, c with label images a, c, d: the names matched in part, and the pairing fell
    back to sorted order, which trained b on c's labels and c on d's without a word."""
    labels = _labels()
    images, masks = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    masks.mkdir()
    for name in ("a", "b", "c"):
        tifffile.imwrite(images / f"{name}.tif", labels * 100)
    for name in ("a", "c", "d"):
        tifffile.imwrite(masks / f"{name}_labels.tif", labels)
    code, _, err = _run(
        capsys, "train", "--images", images, "--labels", masks, "--from", "scratch",
        "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu",
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "b.tif has no label image named like it and d_labels.tif no image" in lines[0]
    assert "(b_labels.tif)" in lines[0] and not (tmp_path / "m.pt").exists()

    # names that share nothing are still paired in sorted order
    for name in ("a", "c", "d"):
        (masks / f"{name}_labels.tif").rename(masks / f"mask_{name}.tif")
    code, _, err = _run(
        capsys, "train", "--images", images, "--labels", masks, "--from", "scratch",
        "-o", tmp_path / "m.pt", "--steps", 1, "--device", "cpu", "--val-fraction", 0, "-q",
    )  # fmt: skip
    assert code == 0, err


def test_an_empty_reference_is_said_to_leave_seg_undefined(tmp_path, capsys):
    """Ground truth without objects: SEG and recall have no objects to average over; the 0 that
    stands for them is said, where it was printed like a real score of 0."""
    labels = _labels()
    tifffile.imwrite(tmp_path / "pred.tif", labels)
    tifffile.imwrite(tmp_path / "truth.tif", np.zeros_like(labels))
    code, out, err = _run(capsys, "evaluate", tmp_path / "pred.tif", tmp_path / "truth.tif")
    assert code == 0
    assert "SEG" in out
    assert err.startswith("napari-unet: warning: ") and "truth.tif has no objects" in err
    assert "SEG are undefined" in err and err.count("\n") == 1
