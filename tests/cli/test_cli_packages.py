"""``napari-unet export`` and BioImage.IO packages in ``napari-unet predict``."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet import cli
from napari_unet.engine.checkpoint import save_checkpoint
from napari_unet.engine.model import UNet, UNetConfig

pytest.importorskip("bioimageio.core")

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from zoo_packages import discs, foreground_boundary_package


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_pkg")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", UNet(UNetConfig(depth=2, base_channels=4)), diameter=12.0)
    tifffile.imwrite(root / "discs.tif", discs())
    return root


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-unet: error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def test_export_then_predict_with_the_package(files, tmp_path, capsys):
    package = tmp_path / "tiny.zip"
    code, out, err = run(capsys, "export", files / "tiny.pt", "-o", package, "--author", "Ada L",
                         "--skip", "onnx")
    assert code == 0, err
    assert "weights: pytorch_state_dict, torchscript" in out
    with zipfile.ZipFile(package) as zf:
        assert "Ada L" in zf.read("rdf.yaml").decode()
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert run(capsys, "predict", files / "discs.tif", "-o", a, "--model", files / "tiny.pt",
               "--device", "cpu", "--diameter", "12")[0] == 0
    assert run(capsys, "predict", files / "discs.tif", "-o", b, "--model", package,
               "--device", "cpu", "--diameter", "12")[0] == 0
    np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
    # an existing package is kept unless --overwrite; a name that is not .zip is refused
    code, _, err = run(capsys, "export", files / "tiny.pt", "-o", package)
    assert code == 2
    one_line_error(err, "already exists")
    code, _, err = run(capsys, "export", files / "tiny.pt", "-o", tmp_path / "x.pt")
    assert code == 2
    one_line_error(err, ".zip")


def test_predict_with_a_foreign_package_needs_the_flag(files, tmp_path, capsys):
    package = foreground_boundary_package(tmp_path / "zoo")
    out = tmp_path / "labels.tif"
    code, _, err = run(capsys, "predict", files / "discs.tif", "-o", out, "--model", package)
    assert code == 2 and not out.exists()
    one_line_error(err, "--trust-package-code")
    code, stdout, err = run(capsys, "predict", files / "discs.tif", "-o", out, "--model", package,
                            "--trust-package-code", "--device", "cpu")
    assert code == 0, err
    assert "3 cells" in stdout
    assert tifffile.imread(out).max() == 3


def test_predict_with_a_corrupt_package(files, tmp_path, capsys):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run(capsys, "predict", files / "discs.tif", "-o", tmp_path / "l.tif", "--model", bad)
    assert code == 2
    one_line_error(err, "broken.zip", "not a zip file")
