#!/usr/bin/env python
"""Plot dev BLEU against wall-clock minutes of training for one or more run directories.

    python scripts/plot_runs.py runs/m30k_post runs/m30k_feed --out docs/m30k_placements.png
Prints one JSON line per run (its validations) and writes the PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nmt.plotting import plot_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="dev BLEU over training time")
    args = parser.parse_args()
    series = {}
    for run in args.runs:
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        start = min(r["time"] for r in rows) if rows else 0.0
        first_train = next((r for r in rows if r["kind"] == "train"), None)
        if first_train is not None:  # the first log line is written after step 1: count from there
            start = first_train["time"]
        valid = [r for r in rows if r["kind"] == "valid"]
        minutes = [round((r["time"] - start) / 60, 2) for r in valid]
        bleu = [round(r["dev_bleu"], 2) for r in valid]
        series[Path(run).name] = (minutes, bleu)
        print(json.dumps({"run": run, "minutes": minutes, "dev_bleu": bleu, "steps": [r["step"] for r in valid]}))
    plot_curves(series, "minutes of training", "dev BLEU (greedy)", args.title, args.out)


if __name__ == "__main__":
    main()
