"""How long torch's OpenMP threads spin while they wait, on an idle and on a busy machine.

Each configuration runs in its own Python process (libgomp reads its settings when torch loads
it), the configurations alternating, ``--rounds`` times:

* **libgomp's default**: ``GOMP_SPINCOUNT=300000`` set by hand, torch with all cores;
* **napari-unet** (the default now): ``import napari_unet`` before torch, which sets
  ``GOMP_SPINCOUNT`` to :data:`napari_unet.engine.openmp_wait.SPIN_COUNT`, all cores;
* **one thread**: libgomp's default, ``torch.set_num_threads(1)`` (nothing to wait for).

Each process segments ``--planes`` synthetic planes of 128 x 160 px with the bundled model
(the diameter given: the rescaling and the network, no estimate) and trains it for ``--steps``
fine-tuning steps on one painted plane, three times each after a warm-up; reported: the median
seconds of the three. Idle, then with ``--burners`` processes burning CPU beside it (default 2:
every core of a 2-core laptop busy with other work).

Usage::

    python benchmarks/bench_openmp_wait.py [--rounds 2] [--burners 2]

writes docs/benchmarks/openmp_wait.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONFIGS = {
    "libgomp's default (spin 300,000)": ({"GOMP_SPINCOUNT": "300000"}, 0),
    "napari-unet (spin 10,000)": ({}, 0),
    "one thread": ({"GOMP_SPINCOUNT": "300000"}, 1),
}


def measure(planes: int, steps: int, threads: int) -> dict:
    """In this process: the median seconds of three segmentations of ``planes`` planes and of
    three runs of ``steps`` training steps."""
    import napari_unet  # noqa: F401  (first: what the product does before torch loads)

    # isort: split
    import time

    import numpy as np
    import torch

    from napari_unet.engine.api import load_model, segment
    from napari_unet.engine.synthetic import synthetic_nuclei
    from napari_unet.engine.train_config import TrainConfig
    from napari_unet.engine.training import train

    if threads:
        torch.set_num_threads(threads)
    images = [synthetic_nuclei((128, 160), n_cells=12, diameter=20.0, rng=i) for i in range(planes)]
    stack = np.stack([image for image, _ in images])
    model = load_model("default")  # (UNet, Checkpoint): the training diameter with it
    config = TrainConfig(steps=steps, tile_size=96, seed=0)

    def timed(job) -> float:
        started = time.perf_counter()
        job()
        return time.perf_counter() - started

    def segmenting():
        segment(stack, model=model, diameter=24.0, stack=True)

    def training():
        train(load_model("default")[0], images[0][0], images[0][1], config=config, device="cpu")

    seconds = {}
    for name, job in (("segment", segmenting), ("train", training)):
        job()  # warm-up
        seconds[name] = statistics.median(timed(job) for _ in range(3))
    seconds["threads"] = torch.get_num_threads()
    seconds["spin"] = os.environ.get("GOMP_SPINCOUNT")
    return seconds


def run(name: str, args) -> dict:
    env, threads = CONFIGS[name]
    environment = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | env
    command = [sys.executable, __file__, "--one", str(threads),
               "--planes", str(args.planes), "--steps", str(args.steps)]  # fmt: skip
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    line = [row for row in output.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--planes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "openmp_wait.md",
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print("RESULT " + json.dumps(measure(args.planes, args.steps, args.one)), flush=True)
        return 0

    from benchmarks.bench_accuracy import _machine, _versions

    results: dict[tuple[int, str], list[dict]] = {}
    for load in (0, args.burners):
        burners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)
        ]
        try:
            for round_ in range(args.rounds):
                for name in CONFIGS:
                    row = run(name, args)
                    results.setdefault((load, name), []).append(row)
                    print(f"load {load} round {round_} {name}: {row}", flush=True)
        finally:
            for burner in burners:
                burner.kill()

    import datetime

    lines = [
        "# OpenMP threads that wait: spin or sleep",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by "
        f"`benchmarks/bench_openmp_wait.py --rounds {args.rounds} --burners {args.burners} "
        f"--planes {args.planes} --steps {args.steps}`; machine: {_machine()}; {_versions()}.",
        "",
        f"Seconds to segment {args.planes} planes of 128 x 160 px (bundled model, diameter given) "
        f"and to train it for {args.steps} steps on 96 px tiles; each the median of three after a "
        "warm-up, in a fresh process per configuration, the configurations alternating; one "
        f"value per round (rounds: {args.rounds}). *Load*: processes burning CPU beside it. "
        "*Ratio*: the configuration's median over the rounds / libgomp's default's, same load. "
        "A shared machine: compare within this table.",
        "",
        "| load | configuration | threads | segment (s) | ratio | train (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    default = next(iter(CONFIGS))
    for (load, name), rows in results.items():
        base = results[(load, default)]
        cells = []
        for key in ("segment", "train"):
            values = [row[key] for row in rows]
            ratio = statistics.median(values) / statistics.median(r[key] for r in base)
            cells += [" / ".join(f"{v:.2f}" for v in values), f"{ratio:.2f}"]
        lines.append(f"| {load} | {name} | {rows[0]['threads']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
