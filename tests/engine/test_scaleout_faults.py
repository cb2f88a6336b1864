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


@pytest.mark.parametrize(
    ("shape", "axes", "words"),
    [
        ((96, 96, 2), [], "(read as YXZ): give --axes in that order"),  # was 96 planes of 96 x 2 px
        ((2, 96, 96), ["--axes", "CYX"], "expects 1 channel but the image has 2"),  # was a stack
    ],
    ids=["planes-last", "axes-given"],
)
def test_block_by_block_reads_the_axes_as_in_memory(tmp_path, capsys, shape, axes, words):
    # block by block --axes was ignored and a (Y, X, 2) store was cut into Y planes of
    # (X, 2) pixels, where the in-memory path reads planes last (YXZ)
    store = zarr.create_array(str(tmp_path / "in.zarr"), shape=shape, chunks=shape, dtype="uint16")
    store[:] = np.random.default_rng(0).integers(0, 1000, shape, dtype=np.uint16)
    code, _, err = _run(
        capsys, "predict", tmp_path / "in.zarr", "-o", tmp_path / "out.zarr", *axes,
        "--diameter", 24, "--device", "cpu", "-q",
    )
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out.zarr").exists()


def test_an_rgb_store_is_segmented_gray_like_an_rgb_tiff(monkeypatch, tmp_path, capsys):
    from napari_unet.engine import blockwise

    seen = {}

    def spy(image, model=None, **kw):  # the layout handed to the engine, without segmenting
        seen.update(shape=tuple(image.shape), dtype=image.dtype, channel_axis=kw["channel_axis"])
        raise KeyboardInterrupt

    monkeypatch.setattr(blockwise, "iter_segment_blockwise", spy)
    store = zarr.create_array(str(tmp_path / "rgb.zarr"), shape=(96, 80, 3), chunks=(96, 80, 3), dtype="uint8")
    code, _, _ = _run(capsys, "predict", tmp_path / "rgb.zarr", "-o", tmp_path / "out.zarr", "--diameter", 24, "-q")
    assert code == 130
    assert seen == {"shape": (96, 80), "dtype": np.float32, "channel_axis": None}
    assert store.shape == (96, 80, 3)


def test_a_plain_group_is_refused_with_the_arrays_path_spelt_out(tmp_path):
    # the hint read "name the array inside it (e.g. {path}/0)", braces and all
    from napari_unet.engine.zarr_io import open_lazy

    zarr.open_group(str(tmp_path / "plate.zarr"), mode="w")
    with pytest.raises(ValueError, match="without OME-Zarr multiscales") as info:
        open_lazy(tmp_path / "plate.zarr")
    assert str(tmp_path / "plate.zarr" / "0") in str(info.value) and "{" not in str(info.value)


# -- dask schedulers ---------------------------------------------------------------------------


def _connect_in_a_thread(address, timeout=1.0):
    """connect(address) in a daemon thread, so that a hang fails the test instead of CI."""
    import threading

    from napari_unet.engine.cluster import connect

    outcome = []

    def attempt():
        try:
            with connect(address, timeout=timeout):
                outcome.append("connected")
        except Exception as exc:  # the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(20 * timeout)
    assert outcome, f"connect({address!r}) still waiting after {20 * timeout:g} s"
    return outcome[0]


@pytest.mark.parametrize("answer", [None, b"HTTP/1.0 400 Bad request\r\n\r\n" * 4], ids=["silent", "http"])
def test_a_port_that_is_no_dask_scheduler_is_refused_quickly(answer):
    # --scheduler tcp://host:8787 (the dashboard's port) waited forever, or read an HTTP
    # answer as a frame of exabytes and failed with "Unable to allocate 3.07 EiB"
    pytest.importorskip("distributed")
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if answer is not None:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        exc = _connect_in_a_thread(f"tcp://127.0.0.1:{server.getsockname()[1]}")
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert isinstance(exc, ConnectionError), exc
    words = "cannot reach the dask scheduler" if answer is None else "is not a dask scheduler"
    assert words in str(exc)


def test_a_worker_address_is_named_as_a_worker():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        worker = next(iter(cluster.scheduler_info["workers"]))
        assert _connect_in_a_thread(cluster.scheduler_address, timeout=5.0) == "connected"
        exc = _connect_in_a_thread(worker, timeout=5.0)
    assert isinstance(exc, ConnectionError) and "answers as a dask worker" in str(exc)


# -- BioImage.IO packages ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_package(tmp_path_factory):
    pytest.importorskip("bioimageio.core")
    from zoo_packages import foreground_boundary_package

    return foreground_boundary_package(tmp_path_factory.mktemp("zoo"))


def test_a_foreign_package_block_by_block_is_refused_with_one_line(foreign_package, tmp_path, capsys):
    # --trust-package-code was dropped block by block (the refusal asked for the flag that had
    # been given), and with it passed on the blocks failed with "'ForeignConfig' object has no
    # attribute 'depth'" (exit 1)
    from zoo_packages import discs

    store = zarr.create_array(str(tmp_path / "discs.zarr"), shape=(96, 96), chunks=(96, 96), dtype="uint16")
    store[:] = discs()
    code, _, err = _run(
        capsys, "predict", tmp_path / "discs.zarr", "-o", tmp_path / "labels.zarr", "--model",
        foreign_package, "--trust-package-code", "--device", "cpu", "-q",
    )
    errors = [line for line in err.splitlines() if "error:" in line]  # (torch warns of jit.load)
    assert code == 2 and len(errors) == 1, err
    assert "foreign BioImage.IO package" in err and "block by block" in err
    assert not (tmp_path / "labels.zarr").exists()


def test_the_block_wise_engine_refuses_a_foreign_network_with_a_sentence(foreign_package):
    from zoo_packages import discs

    from napari_unet.engine.blockwise import segment_blockwise
    from napari_unet.engine.packages import PackageSource

    with pytest.raises(ValueError, match="runs on whole images only"):
        segment_blockwise(discs(), PackageSource(foreign_package, trust_code=True), block_size=64)


@pytest.fixture(scope="module")
def own_package(tmp_path_factory):
    pytest.importorskip("bioimageio.core")
    import torch

    from napari_unet.engine.bioimageio import export_package
    from napari_unet.engine.checkpoint import save_checkpoint
    from napari_unet.engine.model import UNet, UNetConfig

    folder = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    save_checkpoint(folder / "tiny.pt", UNet(UNetConfig(depth=2, base_channels=4)).eval(), diameter=18.0)
    export_package(folder / "tiny.pt", folder / "tiny.zip", authors=["Test"], formats=(), test_side=102)
    return folder / "tiny.zip"


@pytest.mark.parametrize("dropped", ["weights.pt", "README.md"])
def test_a_package_missing_a_file_names_it(own_package, tmp_path, dropped):
    # bioimageio.spec said only "Invalid model description: : expected str, bytes or
    # os.PathLike object, not NoneType"
    import zipfile

    from napari_unet.engine.models import load_model
    from napari_unet.engine.packages import PackageError

    load_model(own_package)  # complete, it loads
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(own_package) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if name != dropped:
                dst.writestr(name, src.read(name))
    with pytest.raises(PackageError, match=rf"broken.zip lacks {dropped}, named in its rdf.yaml"):
        load_model(broken)


@pytest.mark.parametrize("given", ["folder", "rdf.yaml"])
@pytest.mark.parametrize("dropped", ["weights.pt", "README.md"])
def test_a_package_folder_missing_a_file_names_it(own_package, tmp_path, dropped, given):
    # a folder (rdf.yaml beside its files) was refused with bioimageio.spec's pydantic error,
    # "could not be read: ValueError: Invalid model description: weights.pytorch_state_dict.
    # source.function-after[HttpUrl(), str]: Input should be a valid URL, ...", cut at 300
    # characters; zips named the missing file
    import zipfile

    from napari_unet.engine.models import load_model
    from napari_unet.engine.packages import PackageError

    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(own_package) as archive:
        archive.extractall(folder)
    load_model(folder if given == "folder" else folder / "rdf.yaml")  # complete, it loads
    (folder / dropped).unlink()
    with pytest.raises(PackageError) as caught:
        load_model(folder if given == "folder" else folder / "rdf.yaml")
    assert str(caught.value) == (
        f"the package folder {folder} lacks {dropped}, named in its rdf.yaml "
        "(an incomplete folder: export or download it again)"
    )


def test_a_package_is_sent_to_dask_workers_as_its_network(own_package):
    """A package path went to the workers as the zip's bytes, which the workers read as a model
    file: `napari_unet.segment(dask_array, model="model.zip")` (segment_dask) and
    `iter_segment_blockwise(..., "model.zip", client=...)` failed in every block with 'not a
    PyTorch file'. The package's network goes as a model file now."""
    import dask.array as da
    import torch

    from napari_unet.engine.blockwise import ModelPayload, segment_dask, worker_model
    from napari_unet.engine.models import load_model

    net, checkpoint = worker_model(ModelPayload.from_model(own_package))
    ours, ours_checkpoint = load_model(own_package)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ours.state_dict().values(), strict=True))
    assert checkpoint.diameter == ours_checkpoint.diameter == 18.0
    assert checkpoint.normalization == ours_checkpoint.normalization
    image = np.random.default_rng(0).integers(0, 1000, (96, 96)).astype(np.uint16)
    labels = segment_dask(da.from_array(image), own_package, block_size=64, diameter=18.0)
    assert labels.compute(scheduler="synchronous").shape == (96, 96)
