"""Importing napari_unet shortens how long torch's OpenMP threads spin, unless the user chose."""

import os
import subprocess
import sys

import pytest

from napari_unet.engine.openmp_wait import SPIN_COUNT


def _spin_after(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | env
    command = [sys.executable, "-c", f"{code}; import os; print(os.environ.get('GOMP_SPINCOUNT'))"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_importing_the_package_sets_a_short_spin_before_torch_loads():
    assert _spin_after("import napari_unet; import torch") == SPIN_COUNT
    # any submodule imports the package first
    assert _spin_after("import napari_unet.engine.segment") == SPIN_COUNT


@pytest.mark.parametrize(
    ("code", "env", "expected"),
    [
        ("import napari_unet", {"GOMP_SPINCOUNT": "123"}, "123"),  # the user's choice stays
        ("import torch; import napari_unet", {}, "None"),  # too late: libgomp has read it
    ],
)
def test_the_spin_is_left_alone_when_chosen_or_too_late(code, env, expected):
    assert _spin_after(code, **env) == expected
