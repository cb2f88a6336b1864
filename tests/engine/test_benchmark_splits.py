"""The spatial train/test splits of the benchmark sets (benchmarks/datasets.py): crops that never
overlap, far enough apart that no nucleus lies in both."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import datasets

#: (columns, planes or None, width of the image, nucleus diameter in px as documented)
SPLITS = {
    "scratch": (datasets.SCRATCH_COLUMNS, None, 576, 12),
    "scratch-cells": (datasets.SCRATCH_CELL_COLUMNS, None, 576, 32),
    "cells3d": (datasets.CELLS3D_COLUMNS, datasets.CELLS3D_PLANES, 256, 39),
    "lightsheet": (datasets.LIGHTSHEET_COLUMNS, datasets.LIGHTSHEET_PLANES, 160, 25),
}


@pytest.mark.parametrize("name", SPLITS)
def test_train_and_test_crops_are_apart(name):
    columns, planes, width, diameter = SPLITS[name]
    (a0, a1), (b0, b1) = columns["train"], columns["test"]
    assert 0 <= a0 < a1 <= b0 < b1 <= width
    assert b0 - a1 >= diameter  # at least one nucleus diameter between the crops
    if planes is not None:
        assert set(planes) == {"train", "test"} and all(planes.values())


def test_column_splits_crop_and_renumber():
    rng = np.random.default_rng(0)
    image = rng.random((6, 20, 50)).astype(np.float32)
    labels = np.zeros((6, 20, 50), np.int32)
    labels[:, 2:8, 2:8] = 7  # left only
    labels[:, 10:16, 40:46] = 9  # right only
    labels[:, 10:16, 22:28] = 3  # in the gap: in neither crop
    splits = datasets._column_splits(
        image, labels, {"train": (1, 3), "test": (4,)}, {"train": (0, 20), "test": (30, 50)}
    )
    assert [len(v) for v in splits.values()] == [2, 1]
    train, test = splits["train"][0], splits["test"][0]
    np.testing.assert_array_equal(train.image, image[1, :, 0:20])
    np.testing.assert_array_equal(test.image, image[4, :, 30:50])
    assert set(np.unique(train.labels)) == {0, 1} and set(np.unique(test.labels)) == {0, 1}
    assert train.labels[5, 5] == 1 and test.labels[12, 12] == 1


def test_edge_band_marks_both_sides_of_each_edge():
    from benchmarks.corpus import _edge_band

    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 5:15] = 1
    band = _edge_band(labels, 2)
    assert band[5, 10] and band[6, 10] and band[4, 10] and band[3, 10]  # 2 px on each side
    assert not band[10, 10] and not band[0, 0] and not band[7, 10]


def test_median_diameter_leaves_out_nuclei_cut_by_the_edge():
    labels = np.zeros((60, 60), np.int32)
    for i, (r, c) in enumerate([(10, 10), (10, 35), (35, 10), (35, 35)]):
        labels[r : r + 12, c : c + 12] = i + 1  # four whole 12 x 12 squares
    labels[50:60, 50:54] = 5  # cut by the edge: 10 x 4
    labels[0:3, 20:30] = 6  # cut by the edge: 3 x 10
    whole = 2 * np.sqrt(144 / np.pi)
    assert datasets.median_diameter([labels]) == pytest.approx(whole)
    # fewer than three whole objects: every object counts
    few = np.where(labels <= 2, labels, 0) + np.where(labels >= 5, labels, 0)
    expected = 2 * np.sqrt(np.median([144, 144, 40, 30]) / np.pi)
    assert datasets.median_diameter([few]) == pytest.approx(expected)
    assert np.isnan(datasets.median_diameter([few * (few <= 2)]))  # two objects: no estimate
    # v3's corpus rule counts the cut ones too
    assert datasets.median_diameter_all([labels]) == pytest.approx(whole)
    assert datasets.median_diameter_all([few]) == pytest.approx(
        np.median(2 * np.sqrt(np.array([144, 144, 40, 30]) / np.pi))
    )
    assert datasets.median_diameter_all([few * (few == 5)]) == pytest.approx(
        2 * np.sqrt(40 / np.pi)
    )
    assert np.isnan(datasets.median_diameter_all([np.zeros((4, 4), int)]))


def test_the_simulated_user_deletes_what_matches_no_cell():
    """The correction benchmark's user (benchmarks/bench_correction.py): a blob over two cells
    and a fragment are removed, the two cells painted (two corrected cells), a matched cell is
    left alone, and a false object far from every cell is deleted."""
    from benchmarks.bench_correction import simulate_user

    ref = np.zeros((40, 60), np.int32)
    ref[5:15, 5:15], ref[5:15, 17:27], ref[25:35, 5:15] = 1, 2, 3
    pred = np.zeros_like(ref)
    pred[3:17, 3:29] = 5  # one blob over cells 1 and 2 (and around them)
    pred[25:35, 5:15] = 6  # cell 3, matched
    pred[30:34, 40:44] = 7  # a false object
    corrected, area, fixed = simulate_user(pred, ref, [(0, 0, 40, 60)], budget=10)
    assert fixed == 2 and area.all()
    assert 5 not in corrected and 7 not in corrected and (corrected[25:35, 5:15] == 6).all()
    for cell in (1, 2):
        ids = np.unique(corrected[ref == cell])
        assert len(ids) == 1 and ids[0] > 7 and (corrected == ids[0]).sum() == 100
    # with a budget of one cell the box is left half done: only the edited area counts
    corrected, area, fixed = simulate_user(pred, ref, [(0, 0, 40, 60)], budget=1)
    assert fixed == 1 and area.any() and not area.all()


def test_a_per_platform_wheel_is_fetched_as_one_fixed_build(tmp_path, monkeypatch):
    """StarDist's wheels differ per platform, not in their data: every machine asks pip for the
    same build (a wheel, never an sdist) and finds it in the cache under one name."""
    from types import SimpleNamespace

    commands = []

    def fake_pip(cmd, **_):
        commands.append(cmd)
        (tmp_path / "stardist-0.9.2-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(datasets.subprocess, "run", fake_pip)
    wheel = datasets.fetch_wheel("stardist", cache=tmp_path)
    assert wheel.name.startswith("stardist-0.9.2-")
    cmd = commands[0]
    assert "stardist==0.9.2" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("--only-binary") + 1] == ":all:" and "--platform" in cmd
    datasets.fetch_wheel("stardist", cache=tmp_path)  # cached: pip is not asked again
    assert len(commands) == 1
