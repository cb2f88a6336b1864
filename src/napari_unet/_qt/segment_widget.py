"""The SegmentWidget dock widget (being built: see issue 5)."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class SegmentWidget(QWidget):
    """Dock widget; takes the viewer napari injects."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("SegmentWidget"))
