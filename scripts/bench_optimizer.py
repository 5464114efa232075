#!/usr/bin/env python
"""The training step with each ``training.optimizer`` (Adam, lazy Adam) in one process, on the same batches.

Fresh-process runs (``bench_train.py --parts 0 --optimizers adam lazy_adam``) move by 10-40% with
this machine's load, more than the update's share of the step. Here one Trainer per optimizer is
built in one process (the same seed, so the same initial weights and the same sampled candidates),
both warm up on the first batches, and then passes over the same ``--steps`` batches alternate
between them (A B, B A, ...). The script prints each pass' ms per step as JSON lines, then per
optimizer the median, and the median of the per-pair ratios against the first optimizer.

    python scripts/bench_optimizer.py                         # sampled 1,024, 40 batches, 8 passes
    python scripts/bench_optimizer.py --num-sampled 0         # full softmax (dense projection gradient)
    python scripts/bench_optimizer.py --quick                 # tiny model on the bundled sample, < 1 minute
    python scripts/bench_optimizer.py --optimizers adam --unmerged   # Adam with and without merged candidates

``--unmerged`` adds, for each optimizer, a Trainer that keeps repeated sampled candidates as separate
columns (``nmt.losses.merge_duplicate_candidates`` left out: the same loss from more columns), named
"<optimizer> unmerged", so the merge's gain is measured the same way. ``--gru-layouts`` does the same
for the layout of the GRU loops' states (``nmt.model.gru.unit_major_recurrence``, read when a step is
traced): ``auto`` is nmt's choice, ``batch`` every loop [B, U], ``unit`` every loop [U, B]; a Trainer per
layout, named "<optimizer> <layout>-major GRU loops" for the forced ones. ``--attention-kernels`` likewise
for the attention's scores: ``fused`` is nmt's fused CPU kernel (``nmt.model.fused``, where it applies),
``tensorflow`` TensorFlow's ops (the step traced in ``nmt.model.fused.tensorflow_ops_only``), named
"<optimizer> tensorflow-op attention".

    python scripts/bench_optimizer.py --optimizers adam --gru-layouts auto batch   # nmt's layouts against [B, U]
    python scripts/bench_optimizer.py --optimizers adam --attention-kernels fused tensorflow
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_limit import time_steps  # noqa: E402
from benchdata import TINY_MODEL, prepared_dir  # noqa: E402

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="+", default=["adam", "lazy_adam"], choices=["adam", "lazy_adam"])
    parser.add_argument("--num-sampled", type=int, default=1024, help="sampled-softmax candidates (0: full softmax)")
    parser.add_argument("--steps", type=int, default=40, help="batches per pass")
    parser.add_argument("--passes", type=int, default=8, help="alternated passes per optimizer")
    parser.add_argument("--unmerged", action="store_true",
                        help="also each optimizer with repeated sampled candidates left unmerged")
    parser.add_argument("--sampler-distortion", type=float, default=None,
                        help="training.sampler_distortion (default: nmt's)")
    parser.add_argument("--gru-layouts", nargs="+", default=["auto"], choices=["auto", "batch", "unit"],
                        help="the GRU loops' state layouts to compare (auto: nmt's; batch: [B, U]; unit: [U, B])")
    parser.add_argument("--attention-kernels", nargs="+", default=["fused"], choices=["fused", "tensorflow"],
                        help="the attention scores' kernels to compare (fused: nmt's CPU kernel; tensorflow: its ops)")
    parser.add_argument("--dropout", type=float, default=0.0, help="model.dropout (bench_peers.py uses 0.2)")
    parser.add_argument("--quick", action="store_true", help="tiny model on the bundled sample (< 1 minute)")
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    args = parser.parse_args()
    if args.steps < 1 or args.passes < 1 or args.num_sampled < 0:
        parser.error("--steps and --passes must be at least 1, --num-sampled at least 0")
    if args.unmerged and args.num_sampled == 0:
        parser.error("--unmerged needs sampled softmax (--num-sampled > 0)")
    if args.sampler_distortion is not None and not 0 <= args.sampler_distortion <= 1:
        parser.error("--sampler-distortion must be between 0 and 1 (training.sampler_distortion)")
    if not 0 <= args.dropout <= 0.9:
        parser.error("--dropout must be between 0 and 0.9 (model.dropout)")
    import tensorflow as tf

    from nmt.config import TrainingConfig, config_from_dict
    from nmt.model import gru
    from nmt.model.fused import tensorflow_ops_only
    from nmt.sysinfo import available_cores, machine, set_cpu_threads
    from nmt.training import Trainer, training_thread_plan

    parts, intra, inter = training_thread_plan(TrainingConfig(), available_cores(), on_gpu=False)
    if intra:
        set_cpu_threads(intra, inter)
    steps, passes = (5, 2) if args.quick else (args.steps, args.passes)
    num_sampled = min(args.num_sampled, 128) if args.quick else args.num_sampled  # the sample's vocabulary: 500
    work = Path(args.work)
    prep = prepared_dir(work, 500 if args.quick else 8000, args.quick)
    sampler = {} if args.sampler_distortion is None else {"sampler_distortion": args.sampler_distortion}
    merges = (True, False) if args.unmerged else (True,)
    variants = [(name, merged, layout, kernel) for name in args.optimizers for merged in merges
                for layout in args.gru_layouts for kernel in args.attention_kernels]
    trainers, layouts, kernels = {}, {}, {}
    for name, merged, layout, kernel in variants:
        label = (name if merged else f"{name} unmerged") + ("" if layout == "auto" else f" {layout}-major GRU loops") \
            + ("" if kernel == "fused" else " tensorflow-op attention")
        layouts[label], kernels[label] = layout, kernel
        cfg = config_from_dict({"data": {"prepared_dir": str(prep)}, "model": {**(TINY_MODEL if args.quick else {}),
                                                                               "dropout": args.dropout},
                                "training": {"run_dir": str(work / f"run_optimizer_{label.replace(' ', '_')}"),
                                             "max_steps": 1, "num_sampled": num_sampled, "parallel_parts": parts,
                                             "optimizer": name, **sampler}})
        trainers[label] = Trainer(cfg, overwrite=True, log=lambda s: None)
        trainers[label].merge_candidates = merged  # read when the step is traced, at its first call below
    names = list(trainers)
    first = trainers[names[0]]
    batches = [[tf.constant(x) for x in first.planner.make_batch(rows)] for rows in first.planner.plan(0)[:steps + 5]]
    for label, trainer in trainers.items():
        forced = layouts[label]  # read when the step is traced, at its first call, as the kernel's scope is
        with contextlib.nullcontext() if forced == "auto" else mock.patch.object(
                gru, "unit_major_recurrence", lambda units, forced=forced: forced == "unit"), \
                contextlib.nullcontext() if kernels[label] == "fused" else tensorflow_ops_only():
            for batch in batches[:5]:
                trainer._train_step(*batch)
    info = {**machine(), "num_sampled": num_sampled, "sampler_distortion": first.cfg.training.sampler_distortion,
            "dropout": args.dropout,
            "steps": steps, "parallel_parts": parts, "quick": args.quick}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for p in range(passes):
        for name in names if p % 2 == 0 else names[::-1]:
            times[name].append(1e3 * time_steps(trainers[name]._train_step, batches[5:]) / steps)
            print(json.dumps({"bench": "optimizer_pass", "optimizer": name, "pass": p,
                              "ms_per_step": round(times[name][-1], 2), **info}), flush=True)
    base = names[0]
    for name, ms in times.items():
        ratios = [b / m for b, m in zip(times[base], ms)]
        print(json.dumps({"bench": "optimizer_step", "optimizer": name, "passes": passes,
                          "median_ms_per_step": round(statistics.median(ms), 2),
                          f"median_speedup_vs_{base}": round(statistics.median(ratios), 3),
                          "pair_speedups": [round(r, 3) for r in ratios], **info}), flush=True)


if __name__ == "__main__":
    main()
