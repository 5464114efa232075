#!/usr/bin/env python
"""What the sampled softmax's candidate distribution does to learning: dev loss and BLEU per distortion.

``training.sampler_distortion`` D draws each step's ``training.num_sampled`` candidates by
(unigram count + 1) ** D. With D = 1.0 the draws repeat the frequent pieces, so rare pieces are
seldom negatives and their logits stay high in the full softmax that validation and decoding use.
For each D, one after another in this process, the script trains the same config (same seed, same
batches) for ``--steps`` steps, validating every ``--validate-every``, and prints one JSON line per
validation and one per D (with ``--seeds``, once per seed, and the medians over the seeds: the first
few thousand steps of a small model move with chance as much as with D): the expected number of
distinct pieces among the draws (sum over pieces of 1 - (1 - p)^num_sampled) and the expected share
of target tokens whose piece is among them (the same sum weighted by the pieces' counts), the last
dev loss and BLEU (greedy) and the best BLEU.
A Markdown table of the same figures follows on stderr, after the runs' own log lines. The time limit
of the config is lifted (``training.max_minutes: null``), so every D trains the same number of steps.

    python scripts/bench_sampler.py                        # the quickstart, D = 1.0 0.75 0.5 0.0, 2,000 steps
    python scripts/bench_sampler.py --distortions 1.0 0.5 --seeds 1 2 3    # medians of three seeds each
    python scripts/bench_sampler.py --config configs/multi30k_en_de.yaml --distortions 1.0 0.5 \\
        --steps 1500 --validate-every 500
    python scripts/bench_sampler.py --quick                # tiny model on the bundled sample (< 1 minute)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import TINY_MODEL, prepared_dir  # noqa: E402

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart_en_fr.yaml"),
                        help="the run to train (its data must be prepared, or preparable, by its data section)")
    parser.add_argument("--distortions", nargs="+", type=float, default=[1.0, 0.75, 0.5, 0.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[],
                        help="train each distortion once per seed (training.seed) and report medians; "
                             "default: the config's seed only")
    parser.add_argument("--steps", type=int, default=2000, help="training steps for each distortion and seed")
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides, as nmt train --set takes them")
    parser.add_argument("--quick", action="store_true", help="tiny model on the bundled sample (< 1 minute)")
    parser.add_argument("--work", default=str(ROOT / "bench_out"), help="run directories go to <work>/sampler_*")
    args = parser.parse_args()
    if args.steps < 1 or args.validate_every < 1:
        parser.error("--steps and --validate-every must be at least 1")
    if any(d < 0 for d in args.distortions) or any(seed < 0 for seed in args.seeds):
        parser.error("--distortions and --seeds must be 0 or more")
    import tensorflow as tf  # noqa: F401  (imported here, after the environment is set; machine() reports it)

    from nmt.config import config_from_dict, load_config
    from nmt.dataset import PreparedData
    from nmt.errors import NmtError
    from nmt.prepare import prepare
    from nmt.sysinfo import machine
    from nmt.training import Trainer, read_metrics

    work = Path(args.work)
    steps, every = (30, 30) if args.quick else (args.steps, args.validate_every)
    base = ["training.max_minutes=null", f"training.max_steps={steps}", f"training.validate_every={every}",
            "training.patience=0", *args.overrides]
    info = {**machine(), "steps": steps, "quick": args.quick}

    def train_one(distortion: float, seed: int | None) -> tuple[Trainer, list[dict]]:
        """Train the config at ``distortion`` (and ``seed``, else the config's); its validation rows."""
        name = f"sampler_{distortion:g}" + (f"_seed{seed}" if seed is not None else "")
        overrides = [*base, f"training.sampler_distortion={distortion}", f"training.run_dir={work / name}",
                     *([f"training.seed={seed}"] if seed is not None else [])]
        try:
            if args.quick:
                prep = prepared_dir(work, 500, quick=True)
                cfg = config_from_dict({"data": {"prepared_dir": str(prep)}, "model": TINY_MODEL,
                                        "training": {"num_sampled": 64, "validate_max_sentences": 50}},
                                       overrides=overrides)
            else:
                cfg = load_config(args.config, overrides)
                if not (Path(cfg.data.prepared_dir) / "manifest.json").is_file():
                    prepare(cfg, log=lambda s: print(s, file=sys.stderr))
            vocab = PreparedData(cfg.data.prepared_dir, verify=False).tgt_vocab_size
            if not cfg.training.uses_sampled_softmax(vocab):  # checked before the run directory is written
                sys.exit(f"error: training.num_sampled is {cfg.training.num_sampled}: the full softmax for a "
                         f"target vocabulary of {vocab}, no candidates to draw")
            progress = (lambda s: None) if args.quick else (lambda s: print(s, file=sys.stderr, flush=True))
            trainer = Trainer(cfg, overwrite=True, log=progress)
        except NmtError as exc:
            sys.exit(f"error: {exc}")
        trainer.train()
        return trainer, read_metrics(work / name, "valid")

    summary = []
    for distortion in args.distortions:
        runs = []
        for seed in args.seeds or [None]:
            trainer, valid = train_one(distortion, seed)
            seed = trainer.cfg.training.seed
            for row in valid:
                print(json.dumps({"bench": "sampler_validation", "distortion": distortion, "seed": seed,
                                  "step": row["step"], "dev_loss": round(row["dev_loss"], 3),
                                  "dev_bleu": round(row["dev_bleu"], 2), **info}), flush=True)
            runs.append({"seed": seed, "dev_loss": round(valid[-1]["dev_loss"], 3),
                         "dev_bleu": round(valid[-1]["dev_bleu"], 2),
                         "best_dev_bleu": round(max(r["dev_bleu"] for r in valid), 2),
                         "run_dir": str(trainer.run_dir)})
        counts, sampler = trainer.data.unigram_counts[1:], trainer.sampler  # id 0: padding
        token_share = (counts * sampler.inclusion_probabilities()[1:]).sum() / max(counts.sum(), 1)
        row = {"bench": "sampler", "distortion": distortion, "num_sampled": sampler.num_sampled,
               "vocab": trainer.data.tgt_vocab_size,
               "expected_distinct_candidates": round(sampler.expected_distinct(), 1),
               "target_tokens_drawn": round(float(token_share), 3), "seeds": len(runs),
               **{key: round(statistics.median(r[key] for r in runs), 3)
                  for key in ("dev_loss", "dev_bleu", "best_dev_bleu")},
               "runs": runs, **info}
        summary.append(row)
        print(json.dumps(row), flush=True)
    seeds = f", median of {len(args.seeds)} seeds" if len(args.seeds) > 1 else ""
    print(f"\n{steps:,} steps each, validation every {every:,}{seeds}\n", file=sys.stderr)
    print("| distortion | distinct pieces in the draws (expected) | target tokens whose piece is drawn | dev loss "
          "| dev BLEU | best dev BLEU |", file=sys.stderr)
    print("|---:|---:|---:|---:|---:|---:|", file=sys.stderr)
    for r in summary:
        print(f"| {r['distortion']:g} | {r['expected_distinct_candidates']:,.0f} of {r['num_sampled']:,} | "
              f"{r['target_tokens_drawn']:.0%} | {r['dev_loss']:.3f} | {r['dev_bleu']:.2f} | "
              f"{r['best_dev_bleu']:.2f} |", file=sys.stderr)


if __name__ == "__main__":
    main()
