#!/usr/bin/env python
"""Bar chart of the medians printed by bench_peers.py: training tokens/s and greedy sentences/s per toolkit.

    python scripts/bench_peers.py > bench_out/peers.jsonl
    python scripts/plot_peers.py bench_out/peers.jsonl --out docs/peers_speed.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nmt.plotting import save_png  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", help="bench_peers.py output")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.startswith("{")]
    medians = [r for r in rows if "median_of" in r]
    if not medians:
        raise SystemExit(f"{args.jsonl}: no median lines (did bench_peers.py finish?)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), width_ratios=[1, 2])
    panels = {}
    for ax, key, title in ((axes[0], "train_tokens_per_second", "training, target tokens/s"),
                           (axes[1], "greedy_sentences_per_second", "greedy test2016, sentences/s (30 steps)")):
        # a row decoded differently from the same training run has no training bar of its own
        shown = [r for r in medians if key != "train_tokens_per_second" or "training_of" not in r]
        names = [r["toolkit"] for r in shown]
        values = [r[key] for r in shown]
        panels[key] = names
        bars = ax.bar(names, values, color=["#1f77b4" if n.startswith("nmt") else "#999999" for n in names])
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        ax.grid(axis="y", alpha=0.3)
    machine = next((r["machine"] for r in rows if "machine" in r), {})
    where = f"{machine.get('cores', '?')} CPU cores"
    if machine.get("cpu_family_model"):  # family/model/stepping: the same name covers CPUs of 2x different speed
        family, model = machine["cpu_family_model"].split("/")[:2]
        where += f", {machine.get('cpu', 'CPU')} family {family} model {model}"
    where += f", {machine['date']}" if machine.get("date") else ""
    title = f"same model, data and threads; {where} (median of {medians[0]['median_of']})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, args.out)  # atomic: a half-written PNG never replaces the last one
    print(json.dumps({"written": args.out, "title": title, "bars": panels}))


if __name__ == "__main__":
    main()
