"""Fault cases of the scale-out and model-sharing paths, as a user hits them on the command
line: zarr stores in and out, dask schedulers, BioImage.IO packages. Each must end in one line
and exit status 2 (or the plain result), never a traceback, a hang or a lost input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet import cli

zarr = pytest.importorskip("zarr")


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_output_store_that_holds_the_input_is_refused(tmp_path, capsys):
    # predict plate.ome.zarr/0 -o plate.ome.zarr --overwrite replaced the whole store, image
    # included, by the labels
    group = zarr.open_group(str(tmp_path / "plate.ome.zarr"), mode="w", zarr_format=2)
    level = group.create_array("0", shape=(96, 96), chunks=(96, 96), dtype="uint16")
    level[:] = np.arange(96 * 96, dtype=np.uint16).reshape(96, 96)
    code, _, err = _run(
        capsys, "predict", tmp_path / "plate.ome.zarr" / "0", "-o", tmp_path / "plate.ome.zarr",
        "--overwrite", "--diameter", 24, "--device", "cpu", "-q",
    )
    assert code == 2 and err.count("\n") == 1
    assert "holds the input" in err
    assert zarr.open_array(str(tmp_path / "plate.ome.zarr" / "0"), mode="r")[5, 7] == 5 * 96 + 7
