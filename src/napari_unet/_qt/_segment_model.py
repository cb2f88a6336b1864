"""The Segment panel's model choice: the session's models, or a model file or package picked
by the user (with *run package code* for a foreign package), and the minimum confidence a
model brings with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_unet._qt import _controls as controls
from napari_unet._qt._session import ModelEntry

MODEL_FILE = "model file…"


class ModelChoice:
    """The model part of the Segment panel (a mixin of
    :class:`~napari_unet._qt.segment_widget.SegmentWidget`, whose ``model``, ``model_file``,
    ``trust_code``, ``min_confidence`` controls and ``session`` it uses)."""

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        choices: list[tuple[str, Any]] = [(e.label, e) for e in self.session.entries()]
        return [*choices, (MODEL_FILE, MODEL_FILE)]

    def _select_entry(self, entry: ModelEntry) -> None:
        self.model.reset_choices()
        if entry in [c for c in self.model.choices]:
            self.model.value = entry
        self._take_min_confidence(entry)
        self.model_file.visible = self.model.value == MODEL_FILE
        self.model.tooltip = controls.model_description(entry)
        self._update_trust()

    def _update_trust(self, *_: Any) -> None:
        """Offer *run package code* only when a package file is picked."""
        from napari_unet.engine.packages import is_package_path

        picked = str(self.model_file.value) not in ("", ".")
        self.trust_code.visible = (
            self.model.value == MODEL_FILE and picked and is_package_path(self.model_file.value)
        )

    def _session_changed(self, entry: ModelEntry) -> None:
        if self.model.value is not entry:
            self._select_entry(entry)

    def _take_min_confidence(self, entry: ModelEntry) -> None:
        """A model that knows its own minimum confidence (the bundled default's, or the one a
        fine-tune chose on the painted cells) sets the control; the user can change it after."""
        if entry.min_confidence is not None:
            self.min_confidence.value = round(float(entry.min_confidence), 2)

    def _model_changed(self, value: Any) -> None:
        self.model_file.visible = value == MODEL_FILE
        if isinstance(value, ModelEntry):
            self.model.tooltip = controls.model_description(value)
            self._take_min_confidence(value)
        self._update_trust()
        if isinstance(value, ModelEntry) and value is not self.session.current:
            self.session.set_current(value)

    def selected_model(self) -> ModelEntry:
        """The :class:`ModelEntry` to segment with (a file entry when a file is picked)."""
        value = self.model.value
        if value == MODEL_FILE:
            path = Path(self.model_file.value)
            if str(self.model_file.value) in ("", ".") or path.is_dir():
                raise ValueError("choose a model file (.pt) or package (.zip) first")
            if not path.is_file():
                raise ValueError(f"the model file {path} does not exist")
            from napari_unet.engine.packages import PackageSource, is_package_path

            source: Any = str(path)
            if is_package_path(path):
                source = PackageSource(str(path), trust_code=bool(self.trust_code.value))
            current = self.session.current
            if current.kind == "file" and current.source == source:
                return current
            entry = ModelEntry(
                path.name, source, kind="file", min_confidence=_file_min_confidence(path)
            )
            self.session.set_current(entry)
            self.model.value = MODEL_FILE  # keep showing the file picker
            return entry
        return value


def _file_min_confidence(path: Path) -> float | None:
    """The minimum confidence a model file (.pt) chose for itself; ``None`` for a package or a
    file whose metadata cannot be read (loading it reports the problem). Read once, when the
    file becomes the current model."""
    from napari_unet.engine.checkpoint import read_checkpoint_metadata
    from napari_unet.engine.confidence_calibration import chosen_min_confidence
    from napari_unet.engine.packages import is_package_path

    if is_package_path(path):
        return None
    try:
        return chosen_min_confidence(read_checkpoint_metadata(path))
    except Exception:  # the segment job loads the file and tells the user what is wrong
        return None
