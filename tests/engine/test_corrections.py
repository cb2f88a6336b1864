"""Corrections: the inferred corrected area, the annotation Fine-tune learns from, splitting."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.corrections import correction_annotation, edited_region, split_object


def _two_cells():
    lab = np.zeros((20, 30), np.int32)
    lab[2:8, 2:8] = 1
    lab[2:8, 20:26] = 2
    lab[12:18, 2:8] = 3
    return lab


def test_edited_region_covers_the_edited_objects_and_a_margin():
    original = _two_cells()
    corrected = original.copy()
    corrected[corrected == 2] = 0  # a false object deleted
    corrected[14:16, 14:16] = 4  # a missed cell painted
    region = edited_region(original, corrected, margin=0)
    assert region[2:8, 20:26].all() and region[14:16, 14:16].all()
    assert region.sum() == 36 + 4  # nothing else: objects 1 and 3 were not touched
    grown = edited_region(original, corrected, margin=2)
    assert grown[0, 22] and grown[14, 12] and not grown[2, 2] and not grown[15, 5]


def test_edited_region_holds_both_halves_of_a_split():
    original = _two_cells()
    corrected = original.copy()
    corrected[2:8, 5:8] = 7  # the right half of cell 1 gets a new id
    region = edited_region(original, corrected, margin=0)
    assert region[2:8, 2:8].all() and region.sum() == 36


def test_nothing_edited_is_an_empty_region_and_nothing_to_learn():
    lab = _two_cells()
    assert not edited_region(lab, lab.copy()).any()
    with pytest.raises(ValueError, match="nothing to learn"):
        correction_annotation(lab, lab.copy())


def test_correction_annotation_labels_whole_objects_in_the_area():
    original = _two_cells()
    corrected = original.copy()
    corrected[corrected == 2] = 0
    area = np.zeros(original.shape, bool)
    area[0:10, 6:28] = True  # cuts cell 1, holds the deleted cell 2
    labels, region = correction_annotation(original, corrected, region=area)
    assert set(np.unique(labels)) == {0, 1}  # cell 1 whole, cell 3 outside, 2 deleted
    assert (labels == 1).sum() == 36
    assert region[2:8, 2:8].all()  # the cut cell counts in full, never half background
    assert region[5, 22] and labels[5, 22] == 0  # the deleted object is background
    assert not region[15, 5]  # cell 3 is outside: ignored
    with pytest.raises(ValueError, match="differ in shape"):
        correction_annotation(original, corrected, region=area[:5])


def test_split_object_along_a_line():
    lab = np.zeros((9, 20), np.int32)
    lab[2:7, 2:18] = 5
    lab[0, 0] = 1
    out = split_object(lab, [(0, 9.2), (8, 10.6)])
    ids = set(np.unique(out[2:7, 2:18]))
    assert ids == {5, 6}
    assert (out == 5).sum() + (out == 6).sum() == (lab == 5).sum()  # no pixel lost to the line
    assert out[0, 0] == 1 and lab.max() == 5  # others kept, input unchanged
    from scipy import ndimage as ndi

    assert ndi.label(out == 5)[1] == 1 and ndi.label(out == 6)[1] == 1


def test_split_object_gives_new_pieces_ids_from_next_id():
    """A plane of a stack: its new pieces must take ids above the whole stack's, which the
    plane alone does not know (its own maximum + 1 may be an id of another plane)."""
    lab = np.zeros((9, 20), np.int32)
    lab[2:7, 2:18] = 5
    out = split_object(lab, [(0, 9.2), (8, 10.6)], next_id=12)
    assert set(np.unique(out)) == {0, 5, 12}
    with pytest.raises(ValueError, match="next_id must be above the largest id 5"):
        split_object(lab, [(0, 9.2), (8, 10.6)], next_id=5)


def test_split_object_refuses_a_line_that_does_not_cut():
    lab = np.zeros((9, 20), np.int32)
    lab[2:7, 2:18] = 5
    with pytest.raises(ValueError, match="does not cut object 5"):
        split_object(lab, [(0, 9), (4, 9)])  # stops in the middle
    with pytest.raises(ValueError, match="crosses no object"):
        split_object(lab, [(8, 0), (8, 19)])
    with pytest.raises(ValueError, match="points"):
        split_object(lab, [(1, 1)])


@pytest.mark.parametrize("big", [2**40, 2**64 - 3])
def test_split_object_of_a_huge_id(big):
    """The crossed objects were counted with ``np.bincount`` over the ids: an id of 2**40
    asked for 8 TiB, one past 2**63 was refused as negative."""
    lab = np.zeros((9, 20), np.uint64)
    lab[2:7, 2:18] = big
    out = split_object(lab, [(0, 9), (8, 9)])
    assert out.dtype == np.uint64
    assert set(np.unique(out[2:7, 2:18])) == {big, big + 1}


def test_split_object_cuts_the_object_it_cuts_not_the_one_it_crosses_most():
    """A line that starts over a big neighbour and runs across a merge: the neighbour, crossed
    most but not cut, was chosen and the line refused."""
    lab = np.zeros((30, 20), np.int32)
    lab[0:20, 2:18] = 1  # the neighbour the line starts in
    lab[23:29, 2:18] = 2  # the merge below it
    out = split_object(lab, [(5, 9), (29, 9)])
    assert set(np.unique(out)) == {0, 1, 2, 3}
    assert set(np.unique(out[23:29, 2:18])) == {2, 3} and (out[0:20, 2:18] == 1).all()
