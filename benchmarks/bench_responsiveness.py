"""Responsiveness of the panels: gaps in the Qt event loop while they work, idle and under load.

A 10 ms ``QTimer`` ticks on the main thread of a real napari viewer while each panel works; a gap
between two ticks is time the user's clicks, slider drags and repaints wait. Three scenarios:

* **Segment**: the Segment panel on a stack of synthetic nuclei (``--planes`` planes of
  ``--size`` px a side, 256 by default,
  bundled model, diameter given);
* **Fine-tune + previews**: the Fine-tune panel on one painted 256 x 256 plane, ``--steps`` steps,
  a preview segmentation every 5 steps, the weight-map and augmentation layers added hidden (the
  panel's default); **Fine-tune + previews + teaching layers**: the same with them shown
  ("show weight map and augmented tiles" ticked);
* **Inspect slider drag**: 30 values of the w0 slider, one every 30 ms (a drag), with the weight
  map shown, on 512 x 512 labels;
* **napari alone** (the floor, no plugin code): a 256 x 256 Labels layer's data replaced every
  250 ms for 5 s over an image, the cheapest thing a live preview does; and the same with three
  and six visible layers, as many as Fine-tune shows (image, painted cells, preview; with the
  teaching layers also the weight map, the augmented tile and its labels). Their gaps are what napari's own layer update and repaint cost on
  this machine (under Xvfb: software OpenGL, where a repaint costs more the more layers are
  visible), which no plugin can go below; the *vs floor* column divides each scenario's
  largest gap by the floor with its number of visible layers, same load.

Each runs idle and with ``--burners`` processes burning CPU (default 2: both cores of a small
laptop busy). Reported per run: the job's duration, the ticks, the largest and the 99th
percentile gap, and the main thread's time in the panel's own handlers (events, results: layer
updates), which is the part the plugin controls; the rest of a gap is the worker thread holding
the GIL, napari's repaint, or the burners. The ratio compares under load with idle.

Usage (needs a display; on a server run it under Xvfb)::

    xvfb-run -a python benchmarks/bench_responsiveness.py [--planes 6] [--steps 20]

writes docs/benchmarks/responsiveness.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "responsiveness.md"
#: the scenario without plugin code that the others are compared with
FLOOR = "napari alone (floor)"
FLOOR3 = "napari alone, 3 layers (floor)"
FLOOR6 = "napari alone, 6 layers (floor)"
FINETUNE, FINETUNE_SHOWN = "Fine-tune + previews", "Fine-tune + previews + teaching layers"


class Ticks:
    """A 10 ms QTimer's tick times (``time.perf_counter``) on the main thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def gaps(self, start: float, end: float) -> np.ndarray:
        """The gaps (s) between ticks from ``start`` to ``end`` (both ends count as ticks)."""
        t = np.asarray(self.times)
        inside = t[(t >= start) & (t <= end)]
        return np.diff(np.concatenate([[start], inside, [end]]))


class HandlerClock:
    """Main-thread seconds spent in the plugin's job handlers (events and results) and in its
    loss plot's painting."""

    def __init__(self) -> None:
        from napari_unet._qt import _worker

        self.seconds: dict[str, float] = defaultdict(float)
        self.longest: dict[str, float] = defaultdict(float)
        self.spans: list[tuple[float, float]] = []
        self._originals = (_worker.Job._yielded, _worker.Job._returned)
        clock = self

        def timed(name, original):
            def handler(job, value):
                t0 = time.perf_counter()
                try:
                    return original(job, value)
                finally:
                    dt = time.perf_counter() - t0
                    clock.spans.append((t0, t0 + dt))
                    key = f"{name} {type(value).__name__}"
                    clock.seconds[key] += dt
                    clock.longest[key] = max(clock.longest[key], dt)

            return handler

        _worker.Job._yielded = timed("event", self._originals[0])
        _worker.Job._returned = timed("result", self._originals[1])
        from napari_unet._qt._loss_plot import LossPlot

        paint = timed("paint", LossPlot.paintEvent)  # the panel's own drawing: the loss plot
        LossPlot.paintEvent = lambda plot, event: paint(plot, plot)

    def reset(self) -> None:
        self.seconds.clear()
        self.longest.clear()
        self.spans.clear()

    def worst(self) -> str:
        if not self.longest:
            return "-"
        key = max(self.longest, key=self.longest.get)
        return f"{key}: {1000 * self.longest[key]:.0f} ms"


class GcClock:
    """The durations (s) of Python's garbage collections, by generation, while it listens."""

    def __init__(self) -> None:
        self.longest = [0.0, 0.0, 0.0]
        self.spans: list[tuple[float, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation, now = info["generation"], time.perf_counter()
            self.longest[generation] = max(self.longest[generation], now - self._started)
            self.spans.append((self._started, now))

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)


class DrawClock:
    """The spans (perf_counter s) of vispy's scene draws on the main thread (napari's canvas
    repaint, without Qt's composition of the window around it)."""

    def __init__(self) -> None:
        from vispy.scene.canvas import SceneCanvas

        self.spans: list[tuple[float, float]] = []
        original = SceneCanvas.on_draw
        spans = self.spans

        def on_draw(canvas, event):
            t0 = time.perf_counter()
            try:
                return original(canvas, event)
            finally:
                spans.append((t0, time.perf_counter()))

        SceneCanvas.on_draw = on_draw


def full_collection_seconds() -> tuple[float, float]:
    """Seconds a full garbage collection takes in this process now: over the whole heap (what
    one costs when no job runs), and with the heap of now frozen (what one costs while a job
    runs: ``napari_unet._qt._gc_pause``)."""
    t0 = time.perf_counter()
    gc.collect()
    whole = time.perf_counter() - t0
    gc.freeze()
    try:
        t0 = time.perf_counter()
        gc.collect()
        frozen = time.perf_counter() - t0
    finally:
        gc.unfreeze()
    return whole, frozen


def inside_long_gaps(times: np.ndarray, spans: list[tuple[float, float]]) -> float:
    """Seconds of ``spans`` that fall inside the gaps over 100 ms between the tick ``times``."""
    total = 0.0
    for a, b in itertools.pairwise(times):
        if b - a > 0.1:
            total += sum(max(0.0, min(b, s1) - max(a, s0)) for s0, s1 in spans)
    return total


def run_until(app, done, timeout: float = 600.0) -> None:
    """Run the Qt event loop until ``done()`` (checked every 5 ms by a timer)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    check = QTimer()
    check.setInterval(5)
    deadline = time.perf_counter() + timeout
    check.timeout.connect(lambda: (done() or time.perf_counter() > deadline) and loop.quit())
    check.start()
    loop.exec_()
    check.stop()


def wait_ms(app, ms: int) -> None:
    end = time.perf_counter() + ms / 1000
    run_until(app, lambda: time.perf_counter() >= end)


def segment_scenario(viewer, app, args):
    from napari_unet._qt.segment_widget import SegmentWidget
    from napari_unet.engine.synthetic import synthetic_nuclei

    planes = [
        synthetic_nuclei((args.size, args.size), n_cells=40 * (args.size // 256) ** 2,
                         diameter=20.0, rng=i)[0]
        for i in range(args.planes)
    ]
    layer = viewer.add_image(np.stack(planes), name="stack")
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    widget.diameter.value = 20.0
    widget.device.value = "cpu"

    def start():
        return widget.segment()

    def wait(job):
        run_until(app, lambda: job.done)

    return widget, start, wait


def finetune_scenario(viewer, app, args, teaching_layers: bool = False):
    from napari_unet._qt.finetune_widget import FineTuneWidget
    from napari_unet.engine.synthetic import synthetic_nuclei

    image, labels = synthetic_nuclei((256, 256), n_cells=40, diameter=20.0, rng=11)
    layer = viewer.add_image(image, name="cells")
    painted = np.where(np.isin(labels, np.unique(labels[:128])[1:]), labels, 0)
    painted_layer = viewer.add_labels(painted.astype(np.int32), name="painted")
    widget = FineTuneWidget(viewer)
    widget.image.value = layer
    widget.labels.value = painted_layer
    widget.device.value = "cpu"
    widget.preview_every.value = 5
    widget.minutes.value = 0
    widget.live_layers.value = teaching_layers
    runs = []

    def start():
        widget.steps.value = args.steps if runs else 5  # a short warm-up run
        runs.append(1)
        return widget.start()

    def wait(job):
        run_until(app, lambda: job.done and not widget.preview.runner.busy)

    return widget, start, wait


def inspect_scenario(viewer, app, args):
    from napari_unet._qt.inspect_widget import InspectWidget
    from napari_unet.engine.synthetic import synthetic_nuclei

    _, labels = synthetic_nuclei((512, 512), n_cells=150, diameter=20.0, rng=5)
    layer = viewer.add_labels(labels.astype(np.int32), name="labels")
    widget = InspectWidget(viewer)
    widget.labels.value = layer
    widget.update_weights()
    run_until(app, lambda: not widget.weights_runner.busy)

    class Drag:
        done = False

    def start():
        drag = Drag()
        values = iter(np.linspace(2.0, 30.0, 30))
        from qtpy.QtCore import QTimer

        timer = QTimer()
        timer.setInterval(30)

        def step():
            try:
                widget.w0.value = float(next(values))
            except StopIteration:
                timer.stop()
                drag.done = True

        timer.timeout.connect(step)
        timer.start()
        drag.timer = timer
        return drag

    def wait(drag):
        run_until(app, lambda: drag.done and not widget.weights_runner.busy)

    return widget, start, wait


def floor_scenario(viewer, app, args, visible: int = 2):
    """No plugin: ``visible`` layers shown (an image, labels, then more images), the labels
    layer's 256 x 256 data replaced every 250 ms, 20 times."""
    from qtpy.QtCore import QTimer

    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((256, 256), dtype=np.float32), name="image")
    layer = viewer.add_labels(np.zeros((256, 256), np.int32), name="labels")
    for i in range(visible - 2):
        viewer.add_image(
            rng.random((256, 256), dtype=np.float32), name=f"image {i}", blending="additive"
        )

    class Updates:
        done = False

    def start():
        updates = Updates()
        left = iter(range(20))

        def step():
            if next(left, None) is None:
                timer.stop()
                updates.done = True
                return
            layer.data = (rng.random((256, 256)) > 0.5).astype(np.int32)

        timer = QTimer()
        timer.setInterval(250)
        timer.timeout.connect(step)
        timer.start()
        updates.timer = timer
        return updates

    def wait(updates):
        run_until(app, lambda: updates.done)

    return None, start, wait


_KEEP: list = []

SCENARIOS = {
    "Segment": segment_scenario,
    FINETUNE: finetune_scenario,
    FINETUNE_SHOWN: partial(finetune_scenario, teaching_layers=True),
    "Inspect slider drag": inspect_scenario,
    FLOOR: floor_scenario,
    FLOOR3: partial(floor_scenario, visible=3),
    FLOOR6: partial(floor_scenario, visible=6),
}
#: the floor each scenario is compared with: the one with as many visible layers
FLOOR_OF = {FINETUNE: FLOOR3, FINETUNE_SHOWN: FLOOR6, FLOOR3: FLOOR3, FLOOR6: FLOOR6}


def measure(name, viewer, app, args, clock, load: int, draws: DrawClock):
    """One run of scenario ``name`` (after a warm-up run) with ``load`` burners."""
    widget, start, wait = SCENARIOS[name](viewer, app, args)
    _KEEP.append(widget)  # the panel lives as long as the viewer
    wait(start())  # warm-up: imports, the first model load, the first layers
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        wait_ms(app, 300)
        ticks = Ticks()
        ticks.timer.start()
        wait_ms(app, 50)
        clock.reset()
        draws.spans.clear()
        with GcClock() as gcs:
            t0 = time.perf_counter()
            wait(start())
            t1 = time.perf_counter()
        ticks.timer.stop()
        full_gc = full_collection_seconds()
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    gaps = ticks.gaps(t0, t1)
    handlers = sum(clock.seconds.values())
    times = np.concatenate([[t0], [t for t in ticks.times if t0 <= t <= t1], [t1]])
    long_gaps = float(gaps[gaps > 0.1].sum())
    parts = [inside_long_gaps(times, spans) for spans in (clock.spans, draws.spans, gcs.spans)]
    return {
        "seconds": t1 - t0,
        "ticks": len(gaps) - 1,
        "max": 1000 * float(gaps.max()),
        "p99": 1000 * float(np.percentile(gaps, 99)),
        "over100": int((gaps > 0.1).sum()),
        "handlers": 1000 * handlers,
        "worst": clock.worst(),
        "gc": 1000 * max(gcs.longest),
        "gc_full": 1000 * gcs.longest[2],
        # the long gaps' total (ms) and what filled them: the plugin's handlers, vispy's draws,
        # garbage collections; the rest is Qt's composition of the window and waiting for a CPU
        "long_gaps": 1000 * long_gaps,
        "full_gc": [1000 * t for t in full_gc],
        "in_gaps": [1000 * p for p in parts],
    }


def _full_gc(row: dict) -> str:
    """``whole heap / frozen`` ms of a row's full collection."""
    if "full_gc" not in row:
        return "-"
    whole, frozen = row["full_gc"]
    return f"{whole:.0f} / {frozen:.0f}"


def _gap_parts(row: dict) -> str:
    """``all = handlers + draws + GC + rest`` of a row's long gaps, in ms."""
    if "long_gaps" not in row or not row["long_gaps"]:
        return "-"
    handlers, draws, gcs = row["in_gaps"]
    rest = row["long_gaps"] - handlers - draws - gcs
    return f"{row['long_gaps']:.0f} = {handlers:.0f} + {draws:.0f} + {gcs:.0f} + {rest:.0f}"


def run_one(name: str, args) -> list:
    """Both loads of scenario ``name`` in this process; returns ``[(load, row), ...]``."""
    import napari
    import torch

    if args.threads:  # 0: torch's default, what the panels run with
        torch.set_num_threads(args.threads)
    if args.no_gc_freeze:
        from napari_unet._qt import _gc_pause

        _gc_pause.ENABLED = False
    if args.no_amp:
        from napari_unet.engine import device

        device.cpu_has_native_bf16 = lambda: False
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    app = napari.qt.get_qapp()
    clock, draws = HandlerClock(), DrawClock()
    return [
        (load, measure(name, viewer, app, args, clock, load, draws))
        for load in (0, args.burners)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="Segment's plane size (px a side)")
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="let full garbage collections walk the whole heap during jobs (as before "
        "napari_unet._qt._gc_pause), to measure what the freeze does",
    )
    parser.add_argument(
        "--no-amp",
        action="store_true",
        help="fine-tune in float32 on a CPU with bfloat16 in hardware (as before "
        "TrainConfig.amp covered the CPU), to measure what bfloat16 does to the gaps",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the viewer's process (0: torch's default, as the panels run; "
        "the tables so far were measured with 1)",
    )
    parser.add_argument("--note", default="", help="a line to add under the table")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one scenario, JSON out
    args = parser.parse_args(argv)
    if args.one:
        print("ROWS " + json.dumps(run_one(args.one, args)), flush=True)
        os._exit(0)  # no teardown of the viewer and its threads (it crashed at exit)

    from benchmarks.bench_accuracy import _machine, _versions

    machine = _machine()
    rows = []
    for name in args.scenarios:  # each in its own process: a fresh viewer, no leftovers
        command = [sys.executable, __file__, "--one", name, "--planes", str(args.planes),
                   "--steps", str(args.steps), "--burners", str(args.burners),
                   "--size", str(args.size)]  # fmt: skip
        command += ["--no-gc-freeze"] if args.no_gc_freeze else []
        command += ["--no-amp"] if args.no_amp else []
        command += ["--threads", str(args.threads)]
        output = subprocess.run(command, capture_output=True, text=True).stdout
        found = [line for line in output.splitlines() if line.startswith("ROWS ")]
        if not found:
            print(f"{name}: no result\n{output[-2000:]}", flush=True)
            continue
        for load, row in json.loads(found[0][5:]):
            rows.append((name, load, row))
            print(
                f"{name:<22} load {load}: {row['seconds']:.1f} s, max gap {row['max']:.0f} ms, "
                f"p99 {row['p99']:.0f} ms, {row['over100']} gaps > 100 ms, handlers "
                f"{row['handlers']:.0f} ms (longest {row['worst']}), longest garbage collection "
                f"{row.get('gc', 0):.0f} ms, full GC {_full_gc(row)} ms, long gaps "
                f"{_gap_parts(row)}",
                flush=True,
            )

    idle = {name: row for name, load, row in rows if load == 0}
    floor = {
        (name, load): row["max"] for name, load, row in rows if name in (FLOOR, FLOOR3, FLOOR6)
    }
    lines = [
        "# Responsiveness: event-loop gaps while the panels work",
        "",
        f"Measured {datetime.date.today()} by `benchmarks/bench_responsiveness.py` "
        f"(`xvfb-run -a python benchmarks/bench_responsiveness.py --planes {args.planes} "
        f"--size {args.size} "
        f"--steps {args.steps} --burners {args.burners}"
        f"{' --no-gc-freeze' if args.no_gc_freeze else ''}{' --no-amp' if args.no_amp else ''}"
        f" --threads {args.threads}`), one run each, torch with "
        f"{args.threads or 'its default number of'} thread(s).",
        f"Machine: {machine}. {_versions()}.",
        "",
        "A 10 ms QTimer ticks on the GUI thread; a gap is time a click or a repaint waits. "
        f"*Load*: {args.burners} processes burning CPU beside the viewer. *Handlers*: the main "
        "thread's time in the panel's own event and result handlers (layer updates). *Ratio*: "
        "max gap under load / idle. *vs floor*: max gap / the max gap of the floor scenario with "
        "as many visible layers (3 for Fine-tune, 6 with its teaching layers, 2 for the others), "
        "same load. *GC*: the "
        "longest pause of Python's garbage collector during the run (it stops every thread). "
        "*Full GC*: one full collection timed right after the run, same load: over the whole "
        "heap / with the heap frozen, as while a job runs (`napari_unet._qt._gc_pause`). "
        "*In the long gaps*: the gaps over 100 ms added up, and "
        "how much of them the panel's handlers, vispy's draws of the canvas and garbage "
        "collections filled (ms); the rest is Qt composing the window around the canvas "
        "(through OpenGL, in software under Xvfb) and the GUI thread waiting for a CPU.",
        "",
        "| scenario | load | job (s) | ticks | max gap (ms) | p99 gap (ms) | gaps > 100 ms "
        "| handlers (ms) | longest handler | GC (ms) | full GC (ms) | in the long gaps: all = handlers + draws "
        "+ GC + rest (ms) | ratio | vs floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, load, row in rows:
        ratio = row["max"] / idle[name]["max"] if load and idle[name]["max"] else 1.0
        reference = floor.get((FLOOR_OF.get(name, FLOOR), load))
        vs_floor = f"{row['max'] / reference:.2f}" if reference else ""
        lines.append(
            f"| {name} | {load} | {row['seconds']:.1f} | {row['ticks']} | {row['max']:.0f} | "
            f"{row['p99']:.0f} | {row['over100']} | {row['handlers']:.0f} | {row['worst']} | "
            f"{row.get('gc', 0):.0f} | {_full_gc(row)} | {_gap_parts(row)} | {ratio:.2f} | "
            f"{vs_floor} |"
        )
    if args.note:
        lines += ["", args.note]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if args.out.exists() and args.note:
        text = args.out.read_text() + "\n" + "\n".join(lines[2:]) + "\n"
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
