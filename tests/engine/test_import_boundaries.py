"""The package and its engine must stay light: no torch at package import, no Qt in the engine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

GUI_MODULES = ("qtpy", "napari", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")


def _loaded_after(code: str) -> set[str]:
    script = "\n".join(
        ["import sys", textwrap.dedent(code), 'print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))']
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_package_import_is_light():
    loaded = _loaded_after("import napari_unet")
    assert "torch" not in loaded
    assert not loaded & set(GUI_MODULES)


@pytest.mark.parametrize(
    "module",
    [
        "napari_unet.engine",
        "napari_unet.engine.events",
        "napari_unet.engine.device",
        "napari_unet.engine.synthetic",
    ],
)
def test_engine_imports_no_gui(module):
    loaded = _loaded_after(f"import {module}")
    assert not loaded & set(GUI_MODULES), f"{module} pulled in {loaded & set(GUI_MODULES)}"


def test_every_engine_module_imports_no_gui():
    """Import every engine module at once, so a new module is covered without editing this test."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, napari_unet.engine as eng
        for info in pkgutil.iter_modules(eng.__path__):
            importlib.import_module(f"napari_unet.engine.{info.name}")
        """
    )
    loaded = _loaded_after(code)
    assert not loaded & set(GUI_MODULES), f"the engine pulled in {loaded & set(GUI_MODULES)}"
