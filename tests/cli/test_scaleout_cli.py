"""``napari-unet predict`` block by block: zarr and OME-Zarr in and out, large TIFFs, refusals,
nothing left behind on failure, and a cluster started with dask's own commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

zarr = pytest.importorskip("zarr")
pytest.importorskip("distributed")

from napari_unet import cli  # noqa: E402
from napari_unet.cli import predict_blocks  # noqa: E402
from napari_unet.engine import blockwise  # noqa: E402
from napari_unet.engine.synthetic import synthetic_nuclei  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
BLOCK = ["--block-size", "128", "--diameter", "24"]


def matched_min_iou(a: np.ndarray, b: np.ndarray) -> float:
    worst = 1.0
    for i in np.unique(a[a > 0]):
        mask = a == i
        ids, counts = np.unique(b[mask], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if ids.size == 0:
            return 0.0
        other = b == ids[np.argmax(counts)]
        worst = min(worst, (mask & other).sum() / (mask | other).sum())
    return worst


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A (288, 288) nuclei image as TIFF, plain zarr and OME-Zarr (tczyx, singletons), and its
    in-memory labels."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("scaleout")
    image, _ = synthetic_nuclei((288, 288), n_cells=110, diameter=24.0, rng=5)
    tifffile.imwrite(root / "cells.tif", image)
    z = zarr.create_array(str(root / "cells.zarr"), shape=image.shape, chunks=(96, 96), dtype=image.dtype)
    z[:] = image
    group = zarr.open_group(str(root / "cells.ome.zarr"), mode="w", zarr_format=2)
    level = group.create_array("0", shape=(1, 1, 1, *image.shape), chunks=(1, 1, 1, 144, 144), dtype=image.dtype)
    level[:] = image[None, None, None]
    group.create_array("1", shape=(1, 1, 1, 144, 144), chunks=(1, 1, 1, 144, 144), dtype=image.dtype)
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": n} for n in "tczyx"],
        "datasets": [{"path": "0"}, {"path": "1"}],
    }]
    from napari_unet.engine.segment import segment

    return root, segment(image, diameter=24.0, device="cpu")


@pytest.fixture
def work(data, tmp_path):
    root, reference = data
    for name in ("cells.tif", "cells.zarr", "cells.ome.zarr"):
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, tmp_path / name)
    return tmp_path, reference


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_store(path: Path) -> np.ndarray:
    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    return np.asarray(group["0"][:])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("name", ["cells.zarr", "cells.ome.zarr"])
def test_zarr_in_zarr_out_equals_in_memory(capsys, work, name):
    folder, reference = work
    code, out, err = run(capsys, "predict", folder / name, "-o", folder / "labels.zarr", *BLOCK)
    assert code == 0, err
    labels = read_store(folder / "labels.zarr")
    assert labels.shape == reference.shape and labels.dtype == np.uint32
    assert labels.max() == len(np.unique(reference)) - 1
    assert matched_min_iou(reference, labels) >= 0.9 and matched_min_iou(labels, reference) >= 0.9
    assert "9 blocks" in out and leftovers(folder) == []


def test_one_block_is_one_block(capsys, work):
    folder, _ = work
    code, out, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "one.zarr",
                         "--block-size", "512", "--diameter", "24")
    assert code == 0, err
    assert ", 1 block ->" in out, out


def test_large_tiff_goes_block_wise_to_a_tiff(capsys, work, monkeypatch):
    folder, reference = work
    monkeypatch.setattr(predict_blocks, "BLOCKWISE_PIXELS", 100 * 100)
    code, out, err = run(capsys, "predict", folder / "cells.tif", "-o", folder / "labels.tif",
                         "--diameter", "24")
    assert code == 0, err
    assert re.search(r"\d+ blocks? ->", out), out  # went block by block
    labels = tifffile.imread(folder / "labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == reference.shape
    assert matched_min_iou(reference, labels) >= 0.9 and matched_min_iou(labels, reference) >= 0.9
    assert leftovers(folder) == []


def test_existing_store_is_refused_then_replaced_with_overwrite(capsys, work):
    folder, _ = work
    target = folder / "labels.zarr"
    target.mkdir()
    (target / ".zgroup").write_text('{"zarr_format": 2}')
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", target, *BLOCK)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in target.iterdir()) == [".zgroup"]
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", target, *BLOCK, "--overwrite")
    assert code == 0, err
    assert read_store(target).max() > 0 and leftovers(folder) == []


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_mid_job_leaves_no_store(capsys, work, monkeypatch, failure):
    folder, _ = work
    calls = []
    original = blockwise.segment_block

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise failure
        return original(*args, **kwargs)

    monkeypatch.setattr(blockwise, "segment_block", fail_on_third)
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "labels.zarr", *BLOCK)
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 1)
    assert ("interrupted" if isinstance(failure, KeyboardInterrupt) else "disk on fire") in err
    assert not (folder / "labels.zarr").exists() and leftovers(folder) == []


def test_bad_block_options(capsys, work):
    folder, _ = work
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "l.zarr", "--workers", "2")
    assert code == 2 and "--scheduler local" in err
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "l.tif",
                       "--probabilities", folder / "p.tif")
    assert code == 2 and "--probabilities" in err
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "l.png")
    assert code == 2 and ".zarr" in err
    assert not (folder / "l.zarr").exists()


def test_unreachable_scheduler_exits_quickly(capsys, work):
    folder, _ = work
    start = time.monotonic()
    code, _, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "l.zarr",
                       "--scheduler", "tcp://127.0.0.1:9", *BLOCK)
    assert code == 1 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err
    assert time.monotonic() - start < 30 and not (folder / "l.zarr").exists()
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cluster_started_with_dask_commands(work, tmp_path):
    """`dask scheduler` and `dask worker` as subprocesses, `napari-unet predict --scheduler`
    against them, as a user on a cluster would."""
    folder, reference = work
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    info = tmp_path / "scheduler.json"
    dask_cli = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    worker_cli = [sys.executable, "-m", "distributed.cli.dask_worker"]
    scheduler = subprocess.Popen([*dask_cli, "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                                  str(info), "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        worker = subprocess.Popen([*worker_cli, address, "--nthreads", "1", "--no-dashboard"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = subprocess.run(
            [sys.executable, "-m", "napari_unet.cli", "predict", str(folder / "cells.zarr"), "-o",
             str(folder / "labels.zarr"), "--scheduler", address, *BLOCK],
            env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
    assert proc.returncode == 0, proc.stderr
    assert f"on {address}" in proc.stdout
    labels = read_store(folder / "labels.zarr")
    assert matched_min_iou(reference, labels) >= 0.9 and matched_min_iou(labels, reference) >= 0.9


@pytest.mark.slow
def test_scheduler_local_starts_worker_processes(capsys, work):
    folder, reference = work
    code, out, err = run(capsys, "predict", folder / "cells.zarr", "-o", folder / "labels.zarr",
                         "--scheduler", "local", "--workers", "2", *BLOCK)
    assert code == 0, err
    assert "9 blocks on local" in out
    labels = read_store(folder / "labels.zarr")
    assert matched_min_iou(reference, labels) >= 0.9 and matched_min_iou(labels, reference) >= 0.9
    assert leftovers(folder) == []


@pytest.mark.parametrize(
    ("shape", "axes", "expected"),
    [
        ((5, 120, 120), None, True),  # ZYX: the plane is 120 x 120
        ((120, 120, 120), "YXZ", False),  # planes after Y and X: block-wise refuses them
        ((120, 120, 5), "YXC", True),  # channels last: still a 120 x 120 plane
        ((5, 120, 60), "ZYX", False),  # the plane is under the limit, whatever the other axes
    ],
)
def test_the_size_that_sends_a_tiff_block_wise_is_its_plane_in_the_axes_predict_reads(
    tmp_path, monkeypatch, shape, axes, expected
):
    """The plane measured is Y x X of the axes predict reads (--axes, else detected), not the
    last two axes: a YXZ stack was measured X x Z, and sent block-wise (which refuses YXZ) by
    --axes YXZ on a large X x Z."""
    monkeypatch.setattr(predict_blocks, "BLOCKWISE_PIXELS", 100 * 100)
    source = tmp_path / "image.tif"
    tifffile.imwrite(source, np.zeros(shape, np.uint8))
    args = cli.app.build_parser().parse_args(
        ["predict", str(source), "-o", str(tmp_path / "out.tif"), *(["--axes", axes] if axes else [])]
    )
    assert predict_blocks.wanted(args, source, tmp_path / "out.tif") is expected


def test_a_tzyx_image_is_segmented_block_by_block_in_its_axes(capsys, tmp_path):
    """A TZYX zarr store or large TIFF was refused block by block ('the labels are (Y, X) or
    (planes, Y, X)'), so a TZYX TIFF over 4096² pixels a plane could not be segmented at all;
    its T x Z planes are segmented now, and the labels are written in its axes, as in memory."""
    image, _ = synthetic_nuclei((128, 160), n_cells=14, diameter=24.0, rng=5)
    tz = np.stack([np.roll(image, 11 * k, axis=1) for k in range(4)]).reshape(2, 2, 128, 160)
    tifffile.imwrite(tmp_path / "tz.tif", tz, metadata={"axes": "TZYX"})
    store = zarr.create_array(str(tmp_path / "tz.zarr"), shape=tz.shape, chunks=(1, 1, 128, 160), dtype=tz.dtype)
    store[:] = tz
    code, _, err = run(capsys, "predict", tmp_path / "tz.tif", "-o", tmp_path / "memory.tif", "--diameter", "24", "-q")
    assert code == 0, err
    reference = tifffile.imread(tmp_path / "memory.tif")
    assert reference.shape == tz.shape and reference.max() > 0
    code, _, err = run(capsys, "predict", tmp_path / "tz.zarr", "-o", tmp_path / "labels.zarr", "--axes", "TZYX", *BLOCK, "-q")
    assert code == 0, err
    labels = read_store(tmp_path / "labels.zarr")
    axes = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r").attrs["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["t", "z", "y", "x"]
    code, _, err = run(capsys, "predict", tmp_path / "tz.tif", "-o", tmp_path / "labels.tif", *BLOCK, "-q")
    assert code == 0, err
    from_tiff = tifffile.imread(tmp_path / "labels.tif")
    for blocks in (labels, from_tiff):
        assert blocks.shape == tz.shape
        for t in range(2):
            for z in range(2):
                one, other = reference[t, z], blocks[t, z]
                assert matched_min_iou(one, other) >= 0.9 and matched_min_iou(other, one) >= 0.9
    assert leftovers(tmp_path) == []


def test_plane_axes_out_of_ngff_order_are_refused_for_a_store_with_what_to_do(capsys, tmp_path):
    store = zarr.create_array(str(tmp_path / "zt.zarr"), shape=(2, 2, 96, 96), chunks=(1, 1, 96, 96), dtype="uint16")
    code, _, err = run(capsys, "predict", tmp_path / "zt.zarr", "-o", tmp_path / "out.zarr", "--axes", "ZTYX", *BLOCK)
    assert code == 2 and err.count("\n") == 1, err
    assert "NGFF orders time (T) first" in err and "write a TIFF" in err
    assert not (tmp_path / "out.zarr").exists() and store.shape == (2, 2, 96, 96)


@pytest.mark.parametrize(("name", "stem"), [("cells.ome.tif", "cells"), ("day.1.tif", "day.1")])
def test_an_image_s_labels_are_named_alike_in_memory_and_block_by_block(capsys, tmp_path, name, stem):
    """`predict IMAGE -o FOLDER` named the labels three ways: a.ome.tif gave a.ome_labels.tif in
    memory (a folder of images gave a_labels.tif), and block by block (a TIFF over 4096²
    pixels, --block-size) everything after the first dot went: day.1.tif gave day_labels.tif."""
    image, _ = synthetic_nuclei((96, 96), n_cells=6, diameter=24.0, rng=5)
    tifffile.imwrite(tmp_path / name, image)
    for folder in ("memory", "blocks", "probabilities"):
        (tmp_path / folder).mkdir()
    code, _, err = run(capsys, "predict", tmp_path / name, "-o", tmp_path / "memory", "--diameter", "24",
                       "--probabilities", tmp_path / "probabilities", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "predict", tmp_path / name, "-o", tmp_path / "blocks", *BLOCK, "-q")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "memory").iterdir()] == [f"{stem}_labels.tif"]
    assert [p.name for p in (tmp_path / "blocks").iterdir()] == [f"{stem}_labels.tif"]
    assert [p.name for p in (tmp_path / "probabilities").iterdir()] == [f"{stem}_probabilities.tif"]
