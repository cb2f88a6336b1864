"""BioImage.IO packages: export, bioimageio.core's own test, re-import, foreign packages, refusals."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.engine.bioimageio import build_unet, input_size_rule, output_offset
from napari_unet.engine.checkpoint import save_checkpoint
from napari_unet.engine.confidence_calibration import model_min_confidence
from napari_unet.engine.model import UNet, UNetConfig, border

pytest.importorskip("bioimageio.core")

from zoo_packages import discs, foreground_boundary_package

from napari_unet.engine.bioimageio import export_package
from napari_unet.engine.foreign import ForeignModel, to_classes
from napari_unet.engine.models import load_model, require_unet
from napari_unet.engine.packages import PackageError, PackageSource
from napari_unet.engine.segment import segment


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    """A small trained-looking model file: depth 2, batch norm with non-trivial statistics,
    its own percentiles and training diameter."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_channels=4, norm="batch"))
    net.train()
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from their initial values
            net(torch.rand(2, 1, 76, 76) * 2 + 0.5)
    net.eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    chosen = {"min_confidence": 0.2, "chosen_on_cells": 12}  # as a fine-tune records it
    save_checkpoint(path, net, normalization={"low": 2.0, "high": 99.5}, diameter=18.0,
                    extra={"name": "tiny test net", "instance_step": chosen})
    return path


@pytest.fixture(scope="module")
def tiny_package(tiny_model_file, tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("pkg") / "tiny.zip"
    results = export_package(tiny_model_file, path, authors=["Test Author"], test_side=102)
    return path, results


def _rdf(package: Path) -> dict:
    import yaml

    with zipfile.ZipFile(package) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


# -- the architecture callable -----------------------------------------------------------------


def test_build_unet_validates_kwargs_and_gives_probabilities():
    net = build_unet(depth=2, base_channels=4)
    out = net(torch.rand(1, 1, 44, 44))
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="depth must be at most"):
        build_unet(depth=40)
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        build_unet(depth=2, evil="os.system")


def test_size_rule_matches_the_network():
    config = UNetConfig(depth=3, base_channels=4)
    low, step = input_size_rule(config)
    net = UNet(config).eval()
    for n in range(3):
        side = low + n * step
        with torch.no_grad():
            assert net(torch.zeros(1, 1, side, side)).shape[-1] == side + output_offset(config)
    assert output_offset(config) == -2 * border(3)
    with pytest.raises(ValueError):  # one below the smallest is refused
        net(torch.zeros(1, 1, low - step, low - step))


# -- export and bioimageio.core's test ---------------------------------------------------------


def test_export_writes_a_format_05_package(tiny_package):
    path, results = tiny_package
    assert results == {"pytorch_state_dict": None, "torchscript": None, "onnx": None}
    rdf = _rdf(path)
    assert rdf["format_version"].startswith("0.5.")
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    state = rdf["weights"]["pytorch_state_dict"]
    assert len(state["sha256"]) == 64
    assert state["architecture"]["import_from"] == "napari_unet.engine.bioimageio"
    assert state["architecture"]["kwargs"]["depth"] == 2
    (pre,) = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range"]
    assert (pre["kwargs"]["min_percentile"], pre["kwargs"]["max_percentile"]) == (2.0, 99.5)
    y_in = rdf["inputs"][0]["axes"][2]
    assert y_in["size"] == {"min": 44, "step": 4}
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -2 * border(2)
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["background", "interior", "border"]
    assert rdf["config"]["napari_unet"]["diameter"] == 18.0
    assert "10.1007/978-3-319-24574-4_28" in [c.get("doi") for c in rdf["cite"]]
    with zipfile.ZipFile(path) as zf:
        test_in = np.load(io.BytesIO(zf.read(rdf["inputs"][0]["test_tensor"]["source"])))
        test_out = np.load(io.BytesIO(zf.read(rdf["outputs"][0]["test_tensor"]["source"])))
    assert test_in.shape == (1, 1, 104, 104)  # 102 rounded up to 44 + n * 4
    assert test_out.shape == (1, 3, 104 - 2 * border(2), 104 - 2 * border(2))


def test_exported_package_passes_bioimageio_core_test(tiny_package):
    from bioimageio.core import test_model

    summary = test_model(tiny_package[0])
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    names = " ".join(d.name for d in summary.details)
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in names


def test_export_refuses_an_existing_temp_free_target(tmp_path, tiny_model_file):
    # replaced only by a complete package: the old bytes stay until the new zip is in place
    target = tmp_path / "out.zip"
    target.write_bytes(b"old")
    export_package(tiny_model_file, target, formats=())
    assert zipfile.is_zipfile(target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]


# -- re-import ---------------------------------------------------------------------------------


def test_own_package_reimports_the_same_model(tiny_model_file, tiny_package):
    net0, ck0 = load_model(tiny_model_file)
    net1, ck1 = load_model(tiny_package[0])
    assert type(net1) is UNet and net1.config == net0.config
    for (k0, v0), (k1, v1) in zip(net0.state_dict().items(), net1.state_dict().items(), strict=True):
        assert k0 == k1 and torch.equal(v0, v1)
    assert ck1.diameter == ck0.diameter == 18.0
    assert ck1.normalization == {"low": 2.0, "high": 99.5}
    assert model_min_confidence(ck1) == model_min_confidence(ck0) == 0.2  # the filter travels
    image = (discs((120, 120)) / 4).astype(np.uint16)
    a = segment(image, tiny_model_file, device="cpu", diameter=18)
    b = segment(image, tiny_package[0], device="cpu", diameter=18)
    np.testing.assert_array_equal(a, b)


def test_own_package_via_its_rdf_yaml(tiny_package, tmp_path):
    with zipfile.ZipFile(tiny_package[0]) as zf:
        zf.extractall(tmp_path)
    net, ck = load_model(tmp_path / "rdf.yaml")
    assert isinstance(net, UNet) and ck.diameter == 18.0


@pytest.mark.slow
def test_bundled_model_exports_passes_and_segments_the_same(tmp_path):
    from bioimageio.core import test_model

    from napari_unet.engine.nucleus_generator import generate_nuclei

    path = tmp_path / "default.zip"
    export_package("default", path, formats=("torchscript",))
    summary = test_model(path)
    assert summary.status == "passed", [d.name for d in summary.details if d.status == "failed"]
    image, truth = generate_nuclei((192, 192), rng=6)  # 18 nuclei, most of them whole
    a = segment(image, "default", device="cpu")
    b = segment(image, path, device="cpu")
    assert a.max() > 0.7 * truth.max()
    np.testing.assert_array_equal(a, b)


# -- foreign packages --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def _three_discs_found(labels: np.ndarray) -> None:
    assert labels.max() == 3
    for r, c in ((24, 24), (24, 70), (70, 40)):  # the centres of discs()
        assert labels[r, c] > 0
    assert len({labels[24, 24], labels[24, 70], labels[70, 40]}) == 3


def test_foreign_torchscript_needs_trust_then_segments(zoo_dir):
    path = foreground_boundary_package(zoo_dir / "ts")
    with pytest.raises(PackageError, match=r"TorchScript program.*--trust-package-code") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    net, checkpoint = load_model(PackageSource(path, trust_code=True))
    assert isinstance(net, ForeignModel) and net.semantics == "foreground_boundary"
    assert checkpoint.diameter is None and checkpoint.in_channels == 1
    _three_discs_found(segment(discs(), (net, checkpoint), device="cpu"))
    with pytest.raises(ValueError, match=r"foreign BioImage\.IO package"):
        require_unet(net, checkpoint)


def test_foreign_state_dict_with_architecture_file(zoo_dir):
    path = foreground_boundary_package(zoo_dir / "sd", weights="pytorch_state_dict")
    with pytest.raises(PackageError, match=r"Python architecture in its file edge_net\.py"):
        load_model(path)
    _three_discs_found(segment(discs(), PackageSource(path, trust_code=True), device="cpu"))


def test_unknown_architecture(zoo_dir):
    path = foreground_boundary_package(
        zoo_dir / "unknown", weights="pytorch_state_dict", import_from="no_such_module_for_unet_tests"
    )
    with pytest.raises(PackageError, match=r"no_such_module_for_unet_tests\.EdgeNet"):
        load_model(path)
    with pytest.raises(PackageError, match="could not load its pytorch_state_dict weights") as info:
        load_model(PackageSource(path, trust_code=True))
    assert "\n" not in str(info.value)


def test_3d_model_refused(zoo_dir):
    path = foreground_boundary_package(zoo_dir / "3d", three_d=True)
    with pytest.raises(PackageError, match=r"is a 3D model .*runs 2D models"):
        load_model(PackageSource(path, trust_code=True))


def test_unknown_output_meaning_refused(zoo_dir):
    path = foreground_boundary_package(
        zoo_dir / "names", channel_names=("alpha", "beta"), description="two maps of something"
    )
    with pytest.raises(PackageError, match=r"output channels \['alpha', 'beta'\] whose meaning"):
        load_model(PackageSource(path, trust_code=True))


# -- broken packages ---------------------------------------------------------------------------


def _rezip(source: Path, target: Path, *, drop=(), replace=None) -> Path:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            if item.filename in drop:
                continue
            data = zin.read(item.filename)
            if replace and item.filename in replace:
                data = replace[item.filename]
            zout.writestr(item, data)
    return target


def test_corrupt_zip(tiny_package, tmp_path):
    data = tiny_package[0].read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match="not a zip file") as info:
        load_model(truncated)
    assert "\n" not in str(info.value)


def test_missing_weights_file(tiny_package, tmp_path):
    broken = _rezip(tiny_package[0], tmp_path / "noweights.zip", drop={"weights.pt"})
    with pytest.raises(PackageError, match=r"noweights\.zip") as info:
        load_model(broken)
    assert "\n" not in str(info.value)


def test_altered_weights_fail_their_checksum(tiny_package, tmp_path):
    evil = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, evil)
    broken = _rezip(tiny_package[0], tmp_path / "altered.zip", replace={"weights.pt": evil.getvalue()})
    with pytest.raises(PackageError, match=r"altered\.zip"):
        load_model(broken)


def test_input_layouts():
    from types import SimpleNamespace as Axis

    from napari_unet.engine.foreign import _in_layout

    plane = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    bcyx = [Axis(type="batch", id="batch"), Axis(type="channel", id="c"),
            Axis(type="space", id="y"), Axis(type="space", id="x")]
    assert _in_layout(plane, bcyx).shape == (1, 2, 3, 4)
    byxc = [bcyx[0], bcyx[2], bcyx[3], bcyx[1]]
    np.testing.assert_array_equal(_in_layout(plane, byxc)[0, ..., 1], plane[1])
    byx = [bcyx[0], bcyx[2], bcyx[3]]
    np.testing.assert_array_equal(_in_layout(plane[:1], byx)[0], plane[0])


def test_output_mapping_by_hand():
    fg_b = np.array([[[0.8]], [[0.25]]], np.float32)  # foreground 0.8, boundary 0.25
    np.testing.assert_allclose(
        to_classes(fg_b, "foreground_boundary", (0, 1))[:, 0, 0], [0.75 * 0.2, 0.75 * 0.8, 0.25]
    )
    logits = np.array([[[0.0]], [[np.log(3.0)]]], np.float32)  # background/foreground logits
    np.testing.assert_allclose(
        to_classes(logits, "background_foreground", (0, 1))[:, 0, 0], [0.25, 0.75, 0.0], rtol=1e-6
    )


def test_foreign_tiling_is_seamless(zoo_dir, monkeypatch):
    """bioimageio.core tiles by the package's halo: blocks of 64 or 256 px give one result."""
    from napari_unet.engine import foreign
    from napari_unet.engine.events import drive
    from napari_unet.engine.segment import iter_segment

    path = foreground_boundary_package(zoo_dir / "tiles")
    model = load_model(PackageSource(path, trust_code=True))
    image = np.tile(discs(), (3, 3))  # 288 x 288: more than one block either way
    whole = drive(iter_segment(image, model, device="cpu")).probabilities
    monkeypatch.setattr(foreign, "BLOCK_SIDE", 64)
    events = []
    tiled = drive(iter_segment(image, model, device="cpu"), events.append).probabilities
    assert len(events) > 4  # one TileDone per block
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_a_bad_licence_or_name_is_said_in_one_plain_sentence(tiny_model_file, tmp_path):
    """An unknown licence is refused before any work, without the spec's list of every SPDX id;
    a name the zoo does not accept names the field and the characters it allows."""
    target = tmp_path / "p.zip"
    with pytest.raises(ValueError, match=r"^licence 'FOO' is not an SPDX licence id") as info:
        export_package(tiny_model_file, target, license="FOO", formats=())
    assert len(str(info.value)) < 200
    with pytest.raises(ValueError, match=r"does not validate: name: 'Zoë' is not restricted to"):
        export_package(tiny_model_file, target, name="Zoë", formats=())
    assert not target.exists()


@pytest.mark.parametrize(
    ("stored", "exported"),
    [("Zoë's nuclei v1.2", "Zoe s nuclei v1 2"), ("ft", "napari-unet U-Net"), ("n" * 300, "n" * 128)],
    ids=["dot-and-accent", "too-short", "too-long"],
)
def test_a_model_files_own_name_is_made_one_the_zoo_accepts(tmp_path, stored, exported):
    """Without --name the package is named after the model file's metadata; a name there that
    the zoo refuses (a dot, an accent, under 5 or over 128 characters) is cleaned, where the
    export failed on a name the user never typed."""
    net = UNet(UNetConfig(depth=2, base_channels=4))
    model = tmp_path / "m.pt"
    save_checkpoint(model, net, diameter=18.0, extra={"name": stored})
    export_package(model, tmp_path / "p.zip", formats=())
    assert _rdf(tmp_path / "p.zip")["name"] == exported


def test_a_package_exported_again_keeps_its_datas_terms_and_papers(tmp_path):
    """Exporting a package again (``export pkg.zip -o new.zip``) keeps the training data's terms
    and the papers they ask to cite; the re-imported model had lost them."""
    model = tmp_path / "m.pt"
    terms = "Trained on Cell Tracking Challenge data: cite Maska et al. 2023."
    save_checkpoint(model, UNet(UNetConfig(depth=2, base_channels=4)), diameter=18.0,
                    extra={"training_data": {"licence": terms}})
    first, again = tmp_path / "first.zip", tmp_path / "again.zip"
    export_package(model, first, formats=())
    export_package(first, again, formats=())
    rdf = _rdf(again)
    assert rdf["config"]["napari_unet"]["training_data_terms"] == terms
    assert rdf["cite"] == _rdf(first)["cite"] and len(rdf["cite"]) == 3
