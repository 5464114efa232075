#!/usr/bin/env python
"""Test BLEU against wall time per toolkit, from the JSON lines bench_quality.py prints.

    python scripts/bench_quality.py --minutes 10 > bench_out/quality.jsonl
    python scripts/plot_quality.py bench_out/quality.jsonl --out docs/quality_zen5.png

With ``--repeats``, one line per run (checkpoint steps are labelled only when there is one run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nmt.plotting import save_png  # noqa: E402

COLORS = {"nmt": "#1f77b4", "opennmt-tf": "#ff7f0e", "joeynmt": "#2ca02c"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", help="bench_quality.py output")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.startswith("{")]
    points = [r for r in rows if r.get("bench") == "quality"]
    if not points:
        raise SystemExit(f"{args.jsonl}: no bench_quality.py result lines")
    setup = next((r for r in rows if r.get("bench") == "quality_setup"), {})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    repeats = len({r.get("repeat", 1) for r in points})
    for toolkit in dict.fromkeys(r["toolkit"] for r in points):
        for k, repeat in enumerate(dict.fromkeys(r.get("repeat", 1) for r in points if r["toolkit"] == toolkit)):
            mine = sorted((r for r in points if r["toolkit"] == toolkit and r.get("repeat", 1) == repeat),
                          key=lambda r: r["minutes"])
            # each point at the time its checkpoint was written, labelled with its step (one repeat: several
            # would bury the lines under numbers)
            xs, ys = [r["checkpoint_seconds"] / 60 for r in mine], [r["bleu"] for r in mine]
            ax.plot(xs, ys, marker="o", label=None if k else toolkit, color=COLORS.get(toolkit),
                    alpha=1.0 if repeats == 1 else 0.7, linewidth=1.5 if repeats == 1 else 1.0)
            for r, x, y in zip(mine, xs, ys):
                if repeats == 1:
                    ax.annotate(f"{r['checkpoint_step']:,}", (x, y), textcoords="offset points", xytext=(3, 4),
                                fontsize=7)
    ax.set_xlim(left=0)
    ax.set_xlabel("minutes from launch (checkpoint written)")
    ax.set_ylabel("test BLEU, greedy")
    runs = f", {repeats} runs each" if repeats > 1 else ""
    ax.set_title(f"the same model and settings, {setup.get('threads', '?')} threads, CPU "
                 f"{setup.get('cpu_family_model', '?')}{runs}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, args.out)  # atomic: a half-written PNG never replaces the last one


if __name__ == "__main__":
    main()
