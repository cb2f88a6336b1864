"""Screenshots of the napari-unet dock widgets for the user guide.

Opens a real napari viewer with the bundled sample (*File > Open Sample > Nuclei (synthetic
fluorescence) (U-Net)*), docks each widget, runs it for real and saves a PNG of the whole window
into ``docs/images/``:

* ``segment.png``  -- Segment on the sample image (the bundled model, or ``--model``);
* ``inspect.png``  -- Inspect: the weight map of the sample's labels and a deformation sample;
* ``finetune.png`` -- Fine-tune for a few seconds on a handful of painted cells;
* ``correct.png``  -- Segment's *Correct this result* and *Show uncertainty*: the uncertainty
  layer and the ranked "annotate here next" boxes over the editable copy of the result;
* ``errors.png``   -- Inspect's error layers: the Segment result against the sample's labels.

Needs a display; on a machine without one run it under Xvfb::

    xvfb-run -a python docs/make_screenshots.py            # the bundled model
    xvfb-run -a python docs/make_screenshots.py --model my_model.pt --only segment

A widget that cannot run (no model, a widget that is not there yet) is skipped with a message
and its PNG is left as it was; the exit status is 1 when anything was skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = ("segment", "inspect", "finetune", "correct", "errors")
DOCK_WIDTH = 430
#: rows and columns of the crop the Inspect screenshot zooms into
CROP = 160


class Skipped(Exception):
    """A screenshot that cannot be taken; the message says why."""


def pump(seconds: float = 0.0) -> None:
    """Let Qt process events (worker results, repaints) for about ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while True:
        QApplication.processEvents()
        if time.perf_counter() >= end:
            return
        time.sleep(0.02)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Process events until ``predicate()`` holds; raise :class:`Skipped` after ``timeout`` s."""
    end = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > end:
            raise Skipped(f"{what} did not finish within {timeout:.0f} s")
        pump(0.05)


def close_toasts(viewer: Any) -> None:
    """Close notification pop-ups (e.g. napari's Qt-backend deprecation warning) so that they do
    not cover the canvas; the notifications stay in napari's list."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def save(viewer: Any, path: Path) -> None:
    """Save the whole window (canvas, layer list and docked widgets) as a PNG."""
    close_toasts(viewer)
    pump(0.5)  # let the canvas and the dock widgets repaint
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    try:
        from PIL import Image
    except ImportError:  # napari's own writer: a larger file
        viewer.screenshot(str(path), canvas_only=False, flash=False)
    else:
        # 256 colours, no dithering: a quarter of the size, no visible change for a screenshot
        image = Image.fromarray(pixels[..., :3])
        image = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        image.save(path, optimize=True)
    height, width = pixels.shape[:2]
    print(f"wrote {path} ({width} x {height}, {path.stat().st_size // 1024} KiB)")


def first_layer(viewer: Any, kind: str) -> Any:
    import napari

    layer_type = {"image": napari.layers.Image, "labels": napari.layers.Labels}[kind]
    for layer in viewer.layers:
        if isinstance(layer, layer_type) and "napari_unet" not in layer.metadata:
            return layer
    raise Skipped(f"the sample has no {kind} layer")


#: the panels docked so far (menu name -> (dock widget, widget)); with ``--all-docked`` all
#: three stay docked, one above the other, as on a laptop screen with every panel open
DOCKED: dict[str, tuple[Any, Any]] = {}
ALL_DOCKED = {"on": True}


def dock(viewer: Any, name: str, width: int = DOCK_WIDTH) -> tuple[Any, Any]:
    """Dock the plugin widget ``name`` (its menu name) as a user would, ``width`` px wide
    (the one docked already, when it is)."""
    from qtpy.QtCore import Qt

    if name in DOCKED:
        focus(viewer, name)
        return DOCKED[name]
    dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    pump(0.2)
    viewer.window._qt_window.resizeDocks([dock_widget], [width], Qt.Orientation.Horizontal)
    pump(0.1)
    DOCKED[name] = (dock_widget, widget)
    return dock_widget, widget


def focus(viewer: Any, name: str) -> None:
    """Give the docked panel ``name`` most of the dock's height (the others stay docked,
    smaller; every panel scrolls)."""
    from qtpy.QtCore import Qt

    docks = [docked for docked, _ in DOCKED.values()]
    height = viewer.window._qt_window.height()
    sizes = [int(0.6 * height) if DOCKED[name][0] is d else int(0.2 * height) for d in docks]
    viewer.window._qt_window.resizeDocks(docks, sizes, Qt.Orientation.Vertical)
    pump(0.2)


def scroll_to_end(widget: Any) -> None:
    """Scroll a panel to its bottom."""
    from qtpy.QtWidgets import QScrollArea

    for area in widget.findChildren(QScrollArea):
        area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    pump(0.2)


def undock(viewer: Any, dock_widget: Any) -> None:
    if ALL_DOCKED["on"]:
        return
    for name, (docked, _) in list(DOCKED.items()):
        if docked is dock_widget:
            del DOCKED[name]
    viewer.window.remove_dock_widget(dock_widget)
    pump(0.1)


def show_only(viewer: Any, *layers: Any) -> None:
    """Make exactly ``layers`` visible and fit them into the canvas."""
    shown = [layer for layer in layers if layer is not None]
    for layer in viewer.layers:
        layer.visible = layer in shown  # not "is": plugin widgets hold proxies of layers
    viewer.reset_view(layers=shown)


def use_model(viewer: Any, model: Path | None) -> None:
    """Make ``model`` (a file) the session's current model, as picking it in Segment does."""
    from napari_unet._qt._session import ModelEntry, session_for

    session = session_for(viewer)
    if model is None or (session.current.kind == "file" and session.current.source == str(model)):
        return
    session.set_current(ModelEntry(model.name, str(model), kind="file"))


# -- the three widgets -------------------------------------------------------------------------
def shoot_segment(viewer: Any, out: Path, model: Path | None) -> None:
    from napari_unet.engine.api import bundled_model_path

    if model is None and bundled_model_path() is None:
        raise Skipped(
            "the bundled model (src/napari_unet/models/default.pt) is not there yet; "
            "pass --model PATH"
        )
    image = first_layer(viewer, "image")
    dock_widget, widget = dock(viewer, "Segment")
    use_model(viewer, model)
    widget.image.value = image
    job = widget.segment()
    if job is None:
        raise Skipped("Segment did not start (see the notification)")
    wait_until(lambda: job.done, 600, "Segmentation")
    if job.error is not None or job.cancelled:
        raise Skipped(f"Segmentation failed: {job.error}")
    show_only(viewer, image, widget.labels_layer)
    viewer.layers.selection.active = widget.labels_layer
    print(f"segment: {widget.status.value}")
    save(viewer, out / "segment.png")
    undock(viewer, dock_widget)


def busiest_window(labels: np.ndarray, size: int, margin: int = 0) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window (on a grid of size/4 steps, at least ``margin`` pixels
    from the image edges) with the most pixels where cells touch: where the border term of the
    weight map has something to show."""
    from napari_unet.engine.weights import separation_borders

    contacts = separation_borders(labels)
    step = max(size // 4, 1)
    best, best_count = (margin, margin), -1
    for r in range(margin, max(labels.shape[0] - size - margin, margin) + 1, step):
        for c in range(margin, max(labels.shape[1] - size - margin, margin) + 1, step):
            count = int(contacts[r : r + size, c : c + size].sum())
            if count > best_count:
                best, best_count = (r, c), count
    return slice(best[0], best[0] + size), slice(best[1], best[1] + size)


def shoot_inspect(viewer: Any, out: Path) -> None:
    sample_image = first_layer(viewer, "image")
    sample_labels = first_layer(viewer, "labels")
    # zoom in: a crop of the sample where many nuclei touch, as new layers (the weight map of the
    # whole 512 x 512 sample is too fine to see in a small screenshot)
    window = busiest_window(np.asarray(sample_labels.data), CROP)
    image = viewer.add_image(
        np.asarray(sample_image.data)[window], name="nuclei crop", colormap="gray"
    )
    labels = viewer.add_labels(np.asarray(sample_labels.data)[window], name="cells crop")
    dock_widget, widget = dock(viewer, "Inspect")
    widget.labels.value = labels
    widget.image.value = image
    widget.update_weights()
    wait_until(lambda: not widget.weights_runner.busy, 120, "The weight map")
    widget.w0.value = 12.0  # through the slider, as a user would
    wait_until(lambda: not widget.weights_runner.busy, 120, "The weight map")
    widget.new_sample()
    wait_until(lambda: not widget.deform_runner.busy, 120, "The deformation preview")
    if not widget.weight_layers or widget.deformed_labels is None:
        raise Skipped("Inspect showed no layers (see the notifications)")
    total = widget.weight_layers[0]
    # left: the weight map alone (bright ridges between touching nuclei); right: the deformed
    # image with the deformed labels over it
    show_only(viewer, total, widget.deformed_image, widget.deformed_labels)
    total.blending = "translucent"
    widget.deformed_labels.opacity = 0.4
    viewer.layers.selection.active = total
    print(f"inspect: {widget.status.value}")
    save(viewer, out / "inspect.png")
    undock(viewer, dock_widget)


def paint_a_few_cells(viewer: Any, truth: Any, size: int = 96) -> tuple[Any, Any]:
    """A user's sparse annotation: a ``size`` x ``size`` square with touching cells declared
    fully annotated (a Shapes rectangle), with every cell that reaches into it painted (the
    ground truth's cells, whole)."""
    data = np.asarray(truth.data)
    window = busiest_window(data, size, margin=size // 2)
    r0, c0 = window[0].start, window[1].start
    ids = np.unique(data[window])
    ids = ids[ids != 0]
    painted = np.where(np.isin(data, ids), data, 0).astype(np.int32)
    layer = viewer.add_labels(painted, name="painted cells")
    regions = viewer.add_shapes(
        [np.array([[r0, c0], [r0 + size, c0 + size]], float)],
        shape_type="rectangle",
        name="annotated region",
        edge_color="yellow",
        face_color="transparent",
        edge_width=2,
    )
    print(f"finetune: {len(ids)} painted cells in a {size} x {size} region")
    return layer, regions


def shoot_finetune(viewer: Any, out: Path, model: Path | None, steps: int, seconds: float) -> None:
    from napari_unet._qt import finetune_widget
    from napari_unet.engine.api import bundled_model_path

    if not callable(getattr(finetune_widget.FineTuneWidget, "start", None)):
        raise Skipped("the Fine-tune widget is still a placeholder (no Start)")
    if model is None and bundled_model_path() is None:
        raise Skipped("no model to start from: the bundled model is not there yet; pass --model")
    use_model(viewer, model)
    image = first_layer(viewer, "image")
    truth = first_layer(viewer, "labels")
    painted, regions = paint_a_few_cells(viewer, truth)
    dock_widget, widget = dock(viewer, "Fine-tune")
    widget.image.value = image
    widget.labels.value = painted
    widget.regions.value = regions
    widget.steps.value = steps
    job = widget.start()
    if job is None:
        raise Skipped("Fine-tune did not start (see the notification)")
    end = time.perf_counter() + seconds
    wait_until(lambda: job.done or time.perf_counter() > end, seconds + 60, "Fine-tuning")
    if not job.done:  # the time is up: Stop, as a user would
        widget.stop()
    wait_until(lambda: job.done, 300, "Stopping fine-tuning")
    if job.error is not None:
        raise Skipped(f"Fine-tuning failed: {job.error}")
    widget.refresh_preview()  # a segmentation of the image with the fine-tuned model
    wait_until(lambda: not widget.preview.runner.busy, 300, "The preview")
    ours = [layer for layer in viewer.layers if layer.metadata.get("napari_unet") == "finetune"]
    preview = [layer for layer in ours if "preview" in layer.name]
    augmented = [layer for layer in ours if "augmented" in layer.name]
    for layer in preview:  # the preview as outlines, the painted cells filled
        if hasattr(layer, "contour"):
            layer.contour = 2
    show_only(viewer, image, *preview, painted, regions, *augmented)
    viewer.reset_view(layers=[regions])  # zoom to the annotation, with some context around
    viewer.camera.zoom *= 0.6
    viewer.layers.selection.active = painted
    print(f"finetune: {widget.status.value}")
    scroll_to_end(widget)  # the buttons, the progress, the loss plot and the status
    save(viewer, out / "finetune.png")
    undock(viewer, dock_widget)


def _segment_result(viewer: Any, model: Path | None) -> tuple[Any, Any, Any]:
    """Dock Segment, segment the sample; returns (dock, widget, result layer)."""
    use_model(viewer, model)
    image = first_layer(viewer, "image")
    dock_widget, widget = dock(viewer, "Segment")
    widget.image.value = image
    job = widget.segment()
    if job is None:
        raise Skipped("Segment did not start (see the notification)")
    wait_until(lambda: job.done, 600, "Segmentation")
    if widget.labels_layer is None:
        raise Skipped("Segment gave no result (see the notification)")
    return dock_widget, widget, widget.labels_layer


def shoot_correct(viewer: Any, out: Path, model: Path | None) -> None:
    image = first_layer(viewer, "image")
    dock_widget, widget, _ = _segment_result(viewer, model)
    tools = widget.corrections
    corrections = tools.correct()
    job = tools.show_uncertainty()
    if job is None:
        raise Skipped("Show uncertainty did not start (see the notification)")
    wait_until(lambda: job.done, 900, "The uncertainty")
    if tools.uncertainty_layer is None:
        raise Skipped("the uncertainty gave no layers (see the notification)")
    corrections.contour = 1
    show_only(viewer, image, corrections, tools.uncertainty_layer, tools.boxes_layer)
    viewer.layers.selection.active = corrections
    print(f"correct: {tools.status.text()}")
    save(viewer, out / "correct.png")
    undock(viewer, dock_widget)


def shoot_errors(viewer: Any, out: Path, model: Path | None) -> None:
    image = first_layer(viewer, "image")
    truth = first_layer(viewer, "labels")
    segment_dock, _, result = _segment_result(viewer, model)
    undock(viewer, segment_dock)
    dock_widget, widget = dock(viewer, "Inspect")
    tools = widget.errors
    tools.prediction.value = result
    tools.reference.value = truth
    job = tools.show_errors()
    if job is None:
        raise Skipped("Show errors did not start (see the notification)")
    wait_until(lambda: job.done, 300, "The error map")
    if tools.errors_layer is None:
        raise Skipped("the error map gave no layer (see the notification)")
    show_only(viewer, image, tools.errors_layer)
    viewer.layers.selection.active = tools.errors_layer
    print(f"errors: {tools.status.text()}")
    save(viewer, out / "errors.png")
    undock(viewer, dock_widget)


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        help="model file for Segment and Fine-tune (default: the bundled model)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "images", help="folder for the PNGs")
    parser.add_argument(
        "--size", default="1366x768", help="window size WIDTHxHEIGHT (default 1366x768, a laptop)"
    )
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="dock only the panel being shown (default: all three docked, one above the other)",
    )
    parser.add_argument(
        "--only", choices=STEPS, action="append", help="take only this screenshot (repeatable)"
    )
    parser.add_argument(
        "--finetune-steps", type=int, default=40, help="fine-tuning steps (default 40)"
    )
    parser.add_argument(
        "--finetune-seconds",
        type=float,
        default=60.0,
        help="click Stop after this many seconds if the steps are not done (default 60)",
    )
    args = parser.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        parser.error(f"model file not found: {args.model}")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 1366x768, not {args.size!r}")
    args.width, args.height = width, height
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import napari

    viewer = napari.Viewer(title="napari-unet")
    viewer.window.resize(args.width, args.height)
    viewer.open_sample("napari-unet", "nuclei")
    pump(0.5)
    ALL_DOCKED["on"] = not args.one_at_a_time
    if ALL_DOCKED["on"]:
        for name in ("Segment", "Inspect", "Fine-tune"):
            dock(viewer, name)
    skipped = []
    steps = args.only or list(STEPS)
    for step in steps:
        try:
            if step == "segment":
                shoot_segment(viewer, args.out, args.model)
            elif step == "inspect":
                shoot_inspect(viewer, args.out)
            elif step == "correct":
                shoot_correct(viewer, args.out, args.model)
            elif step == "errors":
                shoot_errors(viewer, args.out, args.model)
            else:
                shoot_finetune(
                    viewer, args.out, args.model, args.finetune_steps, args.finetune_seconds
                )
        except Skipped as reason:
            skipped.append(step)
            print(f"skipped {step}.png: {reason}", file=sys.stderr)
    viewer.close()
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
