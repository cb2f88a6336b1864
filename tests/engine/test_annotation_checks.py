"""Warnings about annotations that teach the wrong thing (engine.annotation_checks), as the
Fine-tune panel and ``napari-unet train`` give them."""

from __future__ import annotations

import numpy as np

from napari_unet.engine.annotation_checks import annotation_warnings


def test_annotation_warnings():
    labels = np.zeros((40, 40), np.int32)
    labels[2:10, 2:10] = 1
    labels[20:30, 20:30] = 2
    assert annotation_warnings(labels, None) == []
    labels[32:38, 2:8] = 2  # id 2 on a second object
    (text,) = annotation_warnings(labels, None)
    assert text.startswith("label 2 covers 2 separate objects")
    labels[32:38, 2:8] = 0
    labels[5, 30] = 1  # a stray dab of one pixel is not an object
    assert annotation_warnings(labels, None) == []
    region = np.zeros((40, 40), bool)
    region[20:30, 20:30] = True  # the region holds only painted pixels
    (text,) = annotation_warnings(labels, region)
    assert "every pixel inside the annotated regions is painted" in text
    assert "on the plane is painted" in annotation_warnings(np.ones((8, 8), np.int32), None)[0]


def test_a_plane_with_nothing_annotated_is_named():
    labels = np.zeros((16, 16), np.int32)
    empty = np.zeros((16, 16), bool)
    (text,) = annotation_warnings(labels, empty)
    assert "nothing is annotated" in text
    assert annotation_warnings(labels, None) == []  # the whole plane is background: it teaches
    labels[4:8, 4:8] = 1  # a painted cell counts outside any region
    assert annotation_warnings(labels, empty) == []
