"""Uncertainty from test-time transforms: higher on ambiguous objects, ranked boxes, confidence."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.synthetic import synthetic_nuclei
from napari_unet.engine.uncertainty import (
    annotation_boxes,
    expected_errors,
    object_scores,
    tta_uncertainty,
)


def _disc(image, r0, c0, radius, value):
    rr, cc = np.ogrid[: image.shape[0], : image.shape[1]]
    image[(rr - r0) ** 2 + (cc - c0) ** 2 <= radius**2] = value


def test_uncertainty_is_higher_on_ambiguous_objects_than_on_clean_ones():
    """Bundled model, 27 px nuclei: clean bright discs on the left, on the right faint,
    asymmetric smudges (a disc fading into a comet tail) that are neither clearly cell nor
    background."""
    rng = np.random.default_rng(0)
    image = np.full((128, 192), 10.0, np.float32)
    clean = [(32, 32), (96, 32), (32, 80), (96, 80)]
    for r, c in clean:
        _disc(image, r, c, 13, 200.0)
    ambiguous = [(32, 150), (96, 150)]
    for r, c in ambiguous:
        for k in range(10):  # a faint comet: overlapping dim discs
            _disc(image, r + k, c - 2 * k, 9, 10.0 + 6.0 * (10 - k))
    image += rng.normal(0, 2.0, image.shape).astype(np.float32)
    u = tta_uncertainty(image, "default", diameter=27.0, device="cpu")
    assert u.uncertainty.shape == image.shape and u.transforms == 4
    assert 0.0 <= u.uncertainty.min() and u.uncertainty.max() <= 1.0

    def around(r, c):
        return float(u.uncertainty[r - 16 : r + 16, c - 24 : c + 16].mean())

    clean_u = max(around(r, c) for r, c in clean)
    ambiguous_u = min(around(r, c) for r, c in ambiguous)
    print(f"\nmean uncertainty: clean <= {clean_u:.4f}, ambiguous >= {ambiguous_u:.4f}")
    # measured: clean 0.021-0.026, ambiguous 0.047-0.051
    assert ambiguous_u > 1.5 * clean_u


def test_tta_uncertainty_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        tta_uncertainty(np.zeros((2, 32, 32)), "default", diameter=20)
    with pytest.raises(ValueError, match="4 or 8"):
        tta_uncertainty(np.zeros((32, 32)), "default", diameter=20, transforms=6)


def test_eight_transforms_of_a_non_square_image():
    """8 transforms were refused for a non-square image ('quarter turns change the shape'); a
    quarter-turned pass segments the image with its sides swapped and is turned back. Over the
    eight symmetries the result of the transposed image is the transposed result, as for a square
    crop of it."""
    from napari_unet.engine.synthetic import synthetic_nuclei

    image = synthetic_nuclei((48, 80), n_cells=5, diameter=12.0, rng=3)[0].astype(np.float32)
    runs = {}
    for name, x in (("image", image), ("transposed", image.T), ("square", image[:, :48])):
        runs[name] = tta_uncertainty(np.ascontiguousarray(x), "default", diameter=12.0,
                                     transforms=8, device="cpu")  # fmt: skip
    u = runs["image"]
    assert u.transforms == 8 and u.labels.shape == u.uncertainty.shape == image.shape
    assert u.probabilities.shape == (3, *image.shape)
    np.testing.assert_allclose(u.probabilities.sum(0), 1.0, atol=1e-5)
    t = runs["transposed"]
    np.testing.assert_allclose(t.probabilities, u.probabilities.transpose(0, 2, 1), atol=1e-4)
    np.testing.assert_allclose(t.uncertainty, u.uncertainty.T, atol=1e-4)
    s = runs["square"]  # a square crop: the same kind of result, the same scale of values
    assert s.uncertainty.shape == (48, 48) and s.transforms == 8
    assert abs(float(s.uncertainty.mean()) - float(u.uncertainty[:, :48].mean())) < 0.05


def test_boxes_rank_the_uncertain_places_first_and_do_not_overlap():
    u = np.zeros((100, 120))
    u[10:20, 10:20] = 0.2  # second
    u[60:70, 80:90] = 0.9  # first
    u[85:95, 5:15] = 0.05  # third
    boxes = annotation_boxes(u, box=20, n=5)
    assert len(boxes) == 3  # nowhere else holds any uncertainty
    (b1, s1), (b2, s2), (b3, s3) = boxes
    assert b1[0] <= 60 and b1[2] >= 70 and b1[1] <= 80 and b1[3] >= 90
    assert b2[0] <= 10 and b2[2] >= 20 and s1 > s2 > s3
    assert b3[0] <= 85 and b3[3] >= 15
    mask = np.ones(u.shape, bool)
    mask[55:75, 75:95] = False
    assert annotation_boxes(u, box=20, n=1, mask=mask)[0][0][:2] != b1[:2]


def test_object_scores_is_agreement_inside_each_object():
    labels = np.zeros((10, 10), np.int32)
    labels[0:4, 0:4] = 3
    labels[6:10, 6:10] = 8
    u = np.zeros((10, 10))
    u[6:10, 6:10] = 0.4
    prob = np.stack([np.full((10, 10), 0.2), np.full((10, 10), 0.8)])
    conf = object_scores(labels, u, prob)
    assert conf["id"].tolist() == [3, 8]
    assert np.allclose(conf["agreement"], [1.0, 0.6])
    assert np.allclose(conf["max_probability"], [0.8, 0.8])
    assert np.allclose(conf["interior_probability"], [0.8, 0.8])


def test_expected_errors_count_each_object_once_and_doubt_per_cell_area():
    from napari_unet.engine.uncertainty import annotation_boxes, expected_errors

    labels = np.zeros((60, 120), np.int32)
    labels[5:15, 5:15] = 1  # sure: the passes agree, interior probability 1
    labels[5:15, 25:35] = 2  # unsure inside
    labels[5:15, 45:55] = 3  # sure, but a long doubtful edge around it
    u = np.zeros(labels.shape)
    u[5:15, 25:35] = 0.5
    u[3:17, 43:57] = 1.0
    u[labels == 3] = 0.0
    u[40:50, 90:100] = 0.6  # a cell-sized patch of doubt, far from every object
    prob = np.zeros((3, *labels.shape))
    prob[1] = labels > 0
    prob[0] = labels == 0
    m = expected_errors(labels, u, prob, edge_band=2)
    assert m[labels == 1].sum() == pytest.approx(0.0)
    assert m[labels == 2].sum() == pytest.approx(0.5)  # 1 - agreement (0.5) x interior (1)
    assert m[labels == 3].sum() == pytest.approx(0.0)
    assert m[40:50, 90:100].sum() == pytest.approx(0.6)  # 100 px at u = 0.6 / median area 100
    assert m[3:17, 43:57].sum() == pytest.approx(0.0)  # the edge band does not count
    # the summed pixel uncertainty prefers the doubtful edge; expected errors the missed cell
    (r0, c0, r1, c1), _ = annotation_boxes(u, box=20, n=1)[0]
    assert c0 < 57 and c1 > 43  # on the doubtful edge
    (r0, c0, r1, c1), _ = annotation_boxes(m, box=20, n=1)[0]
    assert r0 <= 40 and r1 >= 50 and c0 <= 90 and c1 >= 100  # over the missed cell


def test_the_uncertainty_passes_can_be_stopped_between_tiles(monkeypatch):
    """iter_tta_uncertainty yields each pass's events, so closing it stops the work (the
    Uncertainty job is stopped this way when its image is removed)."""
    import napari_unet.engine.segment as segment
    from napari_unet.engine.uncertainty import iter_tta_uncertainty

    passes = []
    real = segment.iter_segment

    def counted(*args, **kwargs):
        passes.append(1)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(segment, "iter_segment", counted)
    gen = iter_tta_uncertainty(np.zeros((64, 64), np.float32), "default", diameter=20,
                               device="cpu")
    next(gen)
    gen.close()
    assert passes == [1]


def test_progress_runs_once_over_all_the_passes():
    """The tile counts of the passes used to restart at 0 for each of the four passes, so the
    panel's bar ran four times from 0 to 100 %; now they count over all the passes."""
    from napari_unet.engine.events import TileDone, drive
    from napari_unet.engine.uncertainty import iter_tta_uncertainty

    image, _ = synthetic_nuclei((96, 96), n_cells=6, diameter=16, rng=2)
    events = []
    drive(iter_tta_uncertainty(image, "default", diameter=16.0, device="cpu"), events.append)
    ticks = [(e.done, e.total) for e in events if isinstance(e, TileDone)]
    totals = {total for _, total in ticks}
    assert len(totals) == 1 and len(ticks) >= 4
    total = totals.pop()
    done = [d for d, _ in ticks]
    assert (np.diff(done) > 0).all(), done  # never back to the start
    assert done[-1] == total and done[0] <= total // 4


def test_an_image_without_objects_counts_missed_cells_of_the_given_area():
    """Without objects the background term divided by one pixel: every uncertain pixel of an
    empty field was a missed cell (about a hundred expected errors per box)."""
    labels = np.zeros((100, 100), np.int32)
    u = np.full((100, 100), 0.01)
    prob = np.zeros((3, 100, 100), np.float32)
    prob[0] = 1.0
    assert expected_errors(labels, u, prob).sum() == pytest.approx(100.0)
    assert expected_errors(labels, u, prob, cell_area=400.0).sum() == pytest.approx(0.25)
    # with objects the cells' own median area counts, not the one given
    labels[10:30, 10:30] = 1
    with_objects = expected_errors(labels, u, prob, cell_area=1e6, edge_band=0)
    assert with_objects[50, 50] == pytest.approx(0.01 / 400.0)


def test_boxes_under_the_least_score_are_not_offered():
    u = np.zeros((60, 60))
    u[5:15, 5:15] = 0.1  # a box of 10 x 10 holds 10
    u[40:50, 40:50] = 0.001  # 0.1
    assert len(annotation_boxes(u, box=10, n=5)) == 2
    boxes = annotation_boxes(u, box=10, n=5, min_score=0.5)
    assert [b for b, _ in boxes] == [(5, 5, 15, 15)]
    assert annotation_boxes(u, box=10, n=5, min_score=20.0) == []
