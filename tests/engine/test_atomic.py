"""Outputs: checked before the work, written all or nothing, temporary files cleaned up, modes
from the umask -- through the engine and the command line."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import namedtuple

import numpy as np
import pytest
import tifffile
import torch

from napari_unet import cli
from napari_unet.engine import atomic
from napari_unet.engine.checkpoint import save_checkpoint
from napari_unet.engine.io import write_tiff
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.synthetic import synthetic_nuclei


def _tiny() -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(depth=1, base_channels=2))


@pytest.fixture
def umask():
    """Set the umask for a test and restore it afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.fixture
def image_file(tmp_path):
    image, _ = synthetic_nuclei((48, 48), n_cells=4, diameter=12.0, rng=1)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, image)
    save_checkpoint(tmp_path / "m.pt", _tiny(), diameter=12.0)
    return path


def _predict(capsys, image_file, *extra):
    folder = image_file.parent
    argv = ["predict", image_file, "-o", folder / "out.tif", "--model", folder / "m.pt",
            "--device", "cpu", "-q", *extra]
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mask):
    umask(mask)
    tiff = write_tiff(tmp_path / "a.tif", np.zeros((4, 4), np.uint16))
    model = save_checkpoint(tmp_path / "m.pt", _tiny())
    for path in (tiff, model):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_overwrite_keeps_the_umask_mode(tmp_path, umask):
    path = write_tiff(tmp_path / "a.tif", np.zeros((4, 4), np.uint16))
    write_tiff(path, np.ones((4, 4), np.uint16), overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o644


# -- checked before the work ------------------------------------------------------------------


@pytest.fixture
def no_segmentation(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("segmented although the output cannot be written")

    monkeypatch.setattr("napari_unet.engine.segment.iter_segment", refuse)


def test_a_read_only_output_folder_is_found_before_segmenting(
    image_file, capsys, monkeypatch, no_segmentation
):
    folder = image_file.parent
    real = atomic.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if str(dir) == str(folder):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    code, err = _predict(capsys, image_file)
    assert code == 2
    assert f"cannot write {folder / 'out.tif'}" in err and "not writable" in err
    assert ".tmp" not in err


def test_too_little_free_space_is_found_before_segmenting(
    image_file, capsys, monkeypatch, no_segmentation
):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda folder: usage(10**9, 10**9, 1000))
    code, err = _predict(capsys, image_file, "--probabilities", image_file.parent / "p.tif")
    assert code == 2 and "not enough free space" in err
    assert not (image_file.parent / "out.tif").exists()


def test_training_to_a_full_disk_is_found_before_training(image_file, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda folder: usage(10**9, 10**9, 1000))
    monkeypatch.setattr(
        "napari_unet.engine.training.iter_train", lambda *a, **k: pytest.fail("trained")
    )
    folder = image_file.parent
    labels = synthetic_nuclei((48, 48), n_cells=4, diameter=12.0, rng=1)[1]
    tifffile.imwrite(folder / "in_labels.tif", labels.astype(np.uint16))
    argv = ["train", "--images", image_file, "--labels", folder / "in_labels.tif", "--from",
            folder / "m.pt", "-o", folder / "new.pt", "--steps", "1", "--device", "cpu"]
    assert cli.main([str(a) for a in argv]) == 2
    assert "not enough free space" in capsys.readouterr().err


def test_a_torch_write_failure_names_the_model_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=f"could not write the model file {tmp_path / 'm.pt'}"):
        save_checkpoint(tmp_path / "m.pt", _tiny())
    assert list(tmp_path.iterdir()) == []


# -- all or nothing -----------------------------------------------------------------------------


def _fail_second_write(monkeypatch, exc):
    real, calls = tifffile.imwrite, []

    def write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise exc
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", write)


@pytest.mark.parametrize(
    ("exc", "status"),
    [(OSError(errno.ENOSPC, "No space left on device"), 1), (KeyboardInterrupt(), 130)],
    ids=["full-disk", "ctrl-c"],
)
def test_labels_and_probabilities_are_written_together_or_not_at_all(
    image_file, capsys, monkeypatch, exc, status
):
    folder = image_file.parent
    _fail_second_write(monkeypatch, exc)
    code, err = _predict(capsys, image_file, "--probabilities", folder / "p.tif")
    assert code == status
    assert not (folder / "out.tif").exists() and not (folder / "p.tif").exists()
    assert _leftovers(folder) == []
    if status == 1:
        assert f"could not write {folder / 'p.tif'}: No space left on device" in err


def test_sigterm_while_writing_removes_the_temporary_file(image_file, capsys, monkeypatch):
    real = tifffile.imwrite

    def write_then_terminate(path, *args, **kwargs):
        real(path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(tifffile, "imwrite", write_then_terminate)
    code, err = _predict(capsys, image_file)
    assert code == 143 and "terminated" in err
    assert _leftovers(image_file.parent) == []
    assert not (image_file.parent / "out.tif").exists()


# -- temporary files left by killed processes ---------------------------------------------------


def test_stale_temporary_files_are_removed_before_a_save(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".m.pt.{dead}.k2j4h5l1.tmp"
    legacy = tmp_path / ".m.pt.abcd1234.tmp"
    live = tmp_path / f".m.pt.{os.getppid()}.q9w8e7r6.tmp"  # a running process's save
    recent_legacy = tmp_path / ".m.pt.zzzz9999.tmp"
    other = tmp_path / f".other.pt.{dead}.a1b2c3d4.tmp"
    for path in (stale, legacy, live, recent_legacy, other):
        path.write_bytes(b"x")
    old = time.time() - 2 * atomic.STALE_SECONDS
    os.utime(legacy, (old, old))
    save_checkpoint(tmp_path / "m.pt", _tiny())
    assert _leftovers(tmp_path) == sorted(p.name for p in (live, recent_legacy, other))


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_missing_folder_under_one_that_takes_no_files_is_named(tmp_path, monkeypatch):
    """/proc/new/out.tif: the missing folder is named, not only its ancestor as 'not writable'
    with the strerror of an ancestor that exists ('No such file or directory')."""
    real = atomic.tempfile.mkstemp

    def procfs(*args, dir=None, **kwargs):
        if str(dir) == str(tmp_path):
            raise OSError(errno.ENOENT, "No such file or directory")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", procfs)
    target = tmp_path / "new" / "out.tif"
    with pytest.raises(PermissionError) as info:
        atomic.check_writable(target)
    message = str(info.value)
    assert f"the folder {tmp_path / 'new'} does not exist" in message
    assert f"{tmp_path} does not take new files" in message
    with pytest.raises(PermissionError, match="is not writable"):
        atomic.check_writable(tmp_path / "out.tif")
