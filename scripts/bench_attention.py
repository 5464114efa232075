#!/usr/bin/env python
"""The attention's scores alone: nmt's fused CPU kernel against TensorFlow's ops, forward and backward.

``v^T tanh(q + k)`` for ``--rows`` sentences, target x source positions and ``--units`` units, as a
training part ([32, T, S, 512]) or a decoding step (T = 1) computes it, on ``--threads`` intra-op
threads; each shape's calls alternate between the two forms (``nmt.model.fused.additive_scores``, and
TensorFlow's ops as ``nmt.model.attention`` runs them without the kernel), medians of ``--rounds`` rounds
of ``--calls`` calls. One JSON line per shape, with the largest relative difference of the scores and
gradients. The kernel in the training step: ``bench_optimizer.py --attention-kernels fused tensorflow``.

    python scripts/bench_attention.py                  # 1x20, 13x13, 20x20, 28x28; one thread
    python scripts/bench_attention.py --quick          # two small shapes, a few seconds
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1x20", "13x13", "20x20", "28x28"],
                        help="target x source positions")
    parser.add_argument("--rows", type=int, default=32, help="sentences (a training part: 32)")
    parser.add_argument("--units", type=int, default=512, help="attention units")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="calls per round")
    parser.add_argument("--quick", action="store_true", help="two small shapes, 3 rounds of 3 calls")
    args = parser.parse_args()
    matches = [re.fullmatch(r"(\d+)x(\d+)", shape) for shape in args.shapes]
    if None in matches:
        parser.error("--shapes takes TARGETxSOURCE, e.g. 20x20")
    shapes = [(int(m[1]), int(m[2])) for m in matches]
    if min(n for shape in shapes for n in shape) < 1 or min(args.rows, args.units, args.threads, args.rounds,
                                                             args.calls) < 1:
        parser.error("--shapes, --rows, --units, --threads, --rounds and --calls must be at least 1")
    import tensorflow as tf

    from nmt.model import fused
    from nmt.model.ops import matmul_last
    from nmt.sysinfo import machine, set_cpu_threads

    set_cpu_threads(args.threads, 1)  # (kept as they are where the runtime has started: the tests)
    if fused.kernel() is None:
        sys.exit("error: the fused attention kernel is unavailable here (see the warning above)")
    rounds, calls = (3, 3) if args.quick else (args.rounds, args.calls)
    shapes = [(1, 6), (5, 7)] if args.quick else shapes

    def tensorflow_ops(q, k, v):  # nmt.model.attention's scores without the kernel
        return matmul_last(tf.tanh(q[:, :, None, :] + k[:, None, :, :]), v, scoped=False)[..., 0]

    def forward_backward(scores):
        @tf.function(autograph=False)
        def run(q, k, v, d_scores):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                s = scores(q, k, v)
                loss = tf.reduce_sum(s * d_scores)
            return [s, *tape.gradient(loss, [q, k, v])]
        return run

    forms = {"fused_fwd_bwd": forward_backward(fused.additive_scores),
             "tf_fwd_bwd": forward_backward(tensorflow_ops),
             "fused_fwd": tf.function(lambda q, k, v, d: fused.additive_scores(q, k, v), autograph=False),
             "tf_fwd": tf.function(lambda q, k, v, d: tensorflow_ops(q, k, v), autograph=False)}
    info = {**machine(), "threads": args.threads, "rounds": rounds, "calls": calls, "quick": args.quick}
    for target, source in shapes:
        q = tf.random.normal([args.rows, target, args.units]) * 0.5
        k = tf.random.normal([args.rows, source, args.units]) * 0.5
        v = tf.random.normal([args.units, 1]) * 0.05
        d_scores = tf.random.normal([args.rows, target, source])
        with_kernel, with_ops = forms["fused_fwd_bwd"](q, k, v, d_scores), forms["tf_fwd_bwd"](q, k, v, d_scores)
        difference = max(float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b)))
                         for a, b in zip(with_kernel, with_ops))
        ms: dict[str, list[float]] = {name: [] for name in forms}
        for r in range(rounds):
            for name, form in (forms.items() if r % 2 == 0 else reversed(forms.items())):
                start = time.perf_counter()
                for _ in range(calls):
                    out = form(q, k, v, d_scores)
                tf.nest.flatten(out)[0].numpy()
                ms[name].append((time.perf_counter() - start) / calls * 1e3)
        median = {name: statistics.median(times) for name, times in ms.items()}
        print(json.dumps({"bench": "attention_scores", "rows": args.rows, "target": target, "source": source,
                          "units": args.units, **{f"{name}_ms": round(m, 3) for name, m in median.items()},
                          "speedup_fwd_bwd": round(median["tf_fwd_bwd"] / median["fused_fwd_bwd"], 2),
                          "speedup_fwd": round(median["tf_fwd"] / median["fused_fwd"], 2),
                          "max_relative_difference": float(f"{difference:.1e}"), **info}), flush=True)


if __name__ == "__main__":
    main()
