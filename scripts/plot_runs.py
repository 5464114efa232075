#!/usr/bin/env python
"""Plot dev BLEU against wall-clock minutes of training (or steps) for one or more run directories.

    python scripts/plot_runs.py runs/m30k_post runs/m30k_feed --out docs/m30k_placements.png
    python scripts/plot_runs.py runs/m30k_post runs/m30k_feed --x steps --out docs/m30k_placements.png
Prints one JSON line per run (its validations) and writes the PNG. A run stopped and resumed
later counts training time only (see :func:`training_minutes`). Plot against steps to compare
runs made with different versions of the code (or on different machines), whose minutes differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nmt.plotting import plot_curves
from nmt.training import read_metrics

RESUME_GAP_SECONDS = 600


def training_minutes(rows: list[dict]) -> list[float]:
    """Minutes of training at each metrics row, counted from the first train row.

    A gap of over ``RESUME_GAP_SECONDS`` between consecutive rows is a stop and a later
    ``--resume``: it is not counted (nor the minute or so before the first row after it).
    """
    out, elapsed, previous = [], 0.0, None
    first_train = next((r["time"] for r in rows if r["kind"] == "train"), None)
    for r in rows:
        if previous is None:
            previous = first_train if first_train is not None else r["time"]
        delta = r["time"] - previous
        if 0 < delta <= RESUME_GAP_SECONDS:
            elapsed += delta
        previous = max(previous, r["time"])
        out.append(elapsed / 60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default=None, help="default: dev BLEU over training time (or steps)")
    parser.add_argument("--x", choices=["minutes", "steps"], default="minutes", help="the horizontal axis")
    args = parser.parse_args()
    series = {}
    for run in args.runs:
        rows = read_metrics(run)
        minutes = [round(m, 2) for m, r in zip(training_minutes(rows), rows) if r["kind"] == "valid"]
        valid = [r for r in rows if r["kind"] == "valid"]
        bleu = [round(r["dev_bleu"], 2) for r in valid]
        steps = [r["step"] for r in valid]
        series[Path(run).name] = (minutes if args.x == "minutes" else steps, bleu)
        print(json.dumps({"run": run, "minutes": minutes, "dev_bleu": bleu, "steps": steps}))
    xlabel = "minutes of training" if args.x == "minutes" else "training steps"
    title = args.title or ("dev BLEU over training time" if args.x == "minutes" else "dev BLEU over training steps")
    plot_curves(series, xlabel, "dev BLEU (greedy)", title, args.out)


if __name__ == "__main__":
    main()
