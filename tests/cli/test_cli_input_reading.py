"""Reading inputs on the command line: a guess is said, nothing is dropped without a word, and the
options that name inputs and outputs mean one thing."""

from __future__ import annotations

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


def _model(tmp_path, in_channels: int = 1):
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=in_channels, depth=1, base_channels=2, padding="same"))
    path = tmp_path / f"m{in_channels}.pt"
    save_checkpoint(path, net, diameter=10.0)
    return path


def _image() -> np.ndarray:
    return synthetic_nuclei((32, 40), n_cells=3, diameter=10.0, rng=4)[0].astype(np.float32)


def _predict(capsys, tmp_path, image, model, *extra):
    return _run(
        capsys, "predict", image, "-o", tmp_path / "out.tif", "--model", model,
        "--diameter", 10, "--device", "cpu", "-q", "--overwrite", *extra,
    )  # fmt: skip


def test_two_small_axes_are_read_as_the_model_can_and_the_guess_is_said(tmp_path, capsys):
    """A (2, 3, Y, X) array was read as ZCYX without a word, and a one-channel model then
    refused its 3 channels; now it is read as planes (TZYX) and a warning names the axes chosen,
    the other readings and --axes."""
    stack = np.stack([np.stack([_image()] * 3)] * 2)
    tifffile.imwrite(tmp_path / "a.tif", stack, photometric="minisblack")
    code, _, err = _predict(capsys, tmp_path, tmp_path / "a.tif", _model(tmp_path))
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"napari-unet: warning: {tmp_path / 'a.tif'}: ")
    assert "read as TZYX" in line and "ZCYX" in line and "--axes" in line
    assert tifffile.imread(tmp_path / "out.tif").shape == stack.shape
    # given --axes, or one small axis only: no guess, no warning
    code, _, err = _predict(capsys, tmp_path, tmp_path / "a.tif", _model(tmp_path), "--axes", "TZYX")
    assert code == 0 and err == ""
    many = np.stack([np.stack([_image()] * 3)] * 6)
    tifffile.imwrite(tmp_path / "b.tif", many, photometric="minisblack")
    code, _, err = _predict(capsys, tmp_path, tmp_path / "b.tif", _model(tmp_path, 3))
    assert code == 0 and err == "", err


def test_the_pages_a_multi_page_tiff_drops_are_counted(tmp_path, capsys):
    """A multi-page TIFF without metadata whose pages differ in size (a scanner's, PIL's): the
    pages of the first size were read as a stack and the others left out; the warning spoke of
    '2 images (TIFF series)'. Now it counts the pages read and left out, and says why."""
    image = _image()
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in (image, image[::-1], image[:20, :20], image[:, ::-1]):
            tif.write(np.ascontiguousarray(page), metadata=None)
    code, _, err = _predict(capsys, tmp_path, tmp_path / "pages.tif", _model(tmp_path))
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"napari-unet: warning: {tmp_path / 'pages.tif'} holds 4 pages of 2 ")
    assert "only the 3 pages of 32x40 pixels are read" in line and "the other 1 is not" in line
    assert tifffile.imread(tmp_path / "out.tif").shape == (3, *image.shape)


def test_counts_agree_with_their_nouns(tmp_path, capsys):
    """'1 images but 2 label images; give one label image per image', 'axes 'Y' name 1 axes but
    the image has 2 dimensions', 'wrote m.pt (1 steps)'."""
    labels = synthetic_nuclei((32, 40), n_cells=3, diameter=10.0, rng=4)[1].astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", _image())
    tifffile.imwrite(tmp_path / "a_labels.tif", labels)
    tifffile.imwrite(tmp_path / "b_labels.tif", labels)
    train = ("train", "--images", tmp_path / "a.tif", "--from", "scratch", "--depth", 1,
             "--base-channels", 2, "--steps", 1, "--device", "cpu", "-o", tmp_path / "m.pt")
    code, _, err = _run(capsys, *train, "--labels", tmp_path / "a_labels.tif", tmp_path / "b_labels.tif")
    assert code == 2
    assert "error: 1 image but 2 label images; give one label image per image" in err
    code, _, err = _predict(capsys, tmp_path, tmp_path / "a.tif", _model(tmp_path), "--axes", "Y")
    assert code == 2 and "axes 'Y' name 1 axis but the image has 2 dimensions" in err, err
    code, out, err = _run(capsys, *train, "--labels", tmp_path / "a_labels.tif")
    assert code == 0, err
    assert f"wrote {tmp_path / 'm.pt'} (1 step," in out


def test_an_empty_axes_option_is_refused(tmp_path, capsys):
    """`--axes ""` (an unset shell variable) detected the axes without a word, as if the option
    were left out; now each command refuses it in one line naming --axes."""
    tifffile.imwrite(tmp_path / "a.tif", _image())
    labels = tmp_path / "a_labels.tif"
    tifffile.imwrite(labels, np.zeros((32, 40), np.uint16))
    model = _model(tmp_path)
    for argv in (
        ("predict", tmp_path / "a.tif", "-o", tmp_path / "out.tif", "--model", model),
        ("train", "--images", tmp_path / "a.tif", "--labels", labels, "-o", tmp_path / "m.pt"),
        ("evaluate", labels, labels),
    ):
        code, out, err = _run(capsys, *argv, "--axes", " ")
        assert code == 2 and out == ""
        (line,) = err.strip().splitlines()
        assert line.startswith("napari-unet: error: argument --axes: expected one letter per axis")
        assert "leave --axes out to detect" in line
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "m.pt").exists()


def test_export_never_writes_a_package_over_its_model(tmp_path, capsys):
    """`export pkg.zip -o pkg.zip --overwrite` replaced the package it read, where predict,
    evaluate and train refuse an output that is one of their inputs, --overwrite or not."""
    package = tmp_path / "pkg.zip"
    package.write_bytes(b"PK\x05\x06" + bytes(18))  # refused before it is read
    code, out, err = _run(capsys, "export", package, "-o", package, "--overwrite")
    assert code == 2 and out == ""
    assert err == f"napari-unet: error: the output {package} would replace an input file; choose another name\n"
    assert package.read_bytes() == b"PK\x05\x06" + bytes(18)


def test_labels_with_nan_are_not_called_fractional(tmp_path, capsys):
    """A float label image with NaN (a mask exported with 'no data') was refused as holding
    'fractional values', which sent the user looking for 0.5s."""
    labels = synthetic_nuclei((32, 40), n_cells=3, diameter=10.0, rng=4)[1].astype(np.float32)
    tifffile.imwrite(tmp_path / "truth.tif", labels)
    for value, words in ((np.nan, "NaN or infinite values"), (0.5, "fractional values")):
        odd = labels.copy()
        odd[0, 0] = value
        tifffile.imwrite(tmp_path / "pred.tif", odd)
        code, _, err = _run(capsys, "evaluate", tmp_path / "pred.tif", tmp_path / "truth.tif")
        assert code == 2
        assert err == f"napari-unet: error: {tmp_path / 'pred.tif'} is not a label image: it holds {words}\n"


def test_empty_export_texts_are_refused(tmp_path, capsys):
    """`export --name ""` (an unset shell variable) took the model file's name without a word,
    and an empty --author or --description went into the package; each is refused in one line,
    before anything is exported."""
    for option in ("--name", "--description", "--author"):
        code, out, err = _run(
            capsys, "export", "default", "-o", tmp_path / "pkg.zip", option, "", "--skip", "onnx"
        )
        assert code == 2 and out == ""
        (line,) = err.strip().splitlines()
        assert line.startswith(
            f"napari-unet: error: argument {option}: expected some text, got an empty string"
        )
    assert not (tmp_path / "pkg.zip").exists()
