#!/usr/bin/env python
"""The full-softmax loss: nmt's ``full_softmax_loss`` against the forms it replaced, forward and backward.

The baseline is session 15's hand-written gradient: it recomputes the softmax from the logits and
subtracts a one-hot [N, V] target. Sessions 16-44 kept ``exp(logits - max)`` and its sum from the
forward pass, in separate passes over the logits, and subtracted at the label only. nmt's form takes
the softmax from TensorFlow's fused op and its log-normaliser from the row's largest logit and
probability. All run in the training step's layout (two parts of ``--rows`` x ``--vocab`` logits
side by side, one intra-op thread each on 2 cores), alternated, and the script prints the minimum and
median milliseconds of each as JSON lines, with the largest difference of their losses and gradients
from the baseline's.

    python scripts/bench_loss.py                 # 2 x [512, 8000], 25 alternated runs
    python scripts/bench_loss.py --quick         # small, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up


def one_hot_loss(logits, labels, label_smoothing: float = 0.0):
    """The baseline: the same loss, its gradient ``(exp(logits - lse) - one_hot target) x upstream``."""
    import tensorflow as tf

    e = float(label_smoothing)

    @tf.custom_gradient
    def cross_entropy(logits):
        vocab = tf.shape(logits)[-1]
        lse = tf.reduce_logsumexp(logits, -1)
        loss = lse - (1.0 - e) * tf.gather(logits, labels, batch_dims=labels.shape.rank)
        if e:
            loss -= e * tf.reduce_mean(logits, -1)

        def grad(upstream):
            smooth = e / tf.cast(vocab, tf.float32)
            target = tf.one_hot(labels, vocab, on_value=1.0 - e + smooth, off_value=smooth)
            return (tf.exp(logits - lse[..., None]) - target) * upstream[..., None]

        return loss, grad

    return cross_entropy(logits)


def exp_kept_loss(logits, labels, label_smoothing: float = 0.0):
    """Sessions 16-44: ``exp(logits - max)`` and its sum kept from the forward pass, in separate passes."""
    import tensorflow as tf

    e = float(label_smoothing)

    @tf.custom_gradient
    def cross_entropy(logits):
        vocab = tf.shape(logits)[-1]
        peak = tf.reduce_max(logits, -1, keepdims=True)
        exp = tf.exp(logits - peak)
        total = tf.reduce_sum(exp, -1)
        loss = tf.math.log(total) + peak[..., 0] - (1.0 - e) * tf.gather(logits, labels, batch_dims=labels.shape.rank)
        if e:
            loss -= e * tf.reduce_mean(logits, -1)

        def grad(upstream):
            g = exp * (upstream / total)[..., None]
            if e:
                g -= (e / tf.cast(vocab, tf.float32)) * upstream[..., None]
            at = tf.stack([tf.range(tf.shape(g)[0]), labels], 1)
            return tf.tensor_scatter_nd_sub(g, at, (1.0 - e) * upstream)

        return loss, grad

    return cross_entropy(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    args = parser.parse_args()
    import tensorflow as tf

    from nmt.losses import full_softmax_loss
    from nmt.sysinfo import machine, set_cpu_threads

    set_cpu_threads(1, 2)
    rows, vocab, repeats = (64, 500, 5) if args.quick else (args.rows, args.vocab, args.repeats)
    logits = [tf.Variable(tf.random.normal([rows, vocab], seed=i) * 2.0) for i in range(2)]
    labels = [tf.random.uniform([rows], 1, vocab, dtype=tf.int32, seed=10 + i) for i in range(2)]

    def make(loss_fn):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                losses = [loss_fn(x, y, args.label_smoothing) for x, y in zip(logits, labels)]
                total = tf.add_n([tf.reduce_sum(v * tf.range(1.0, rows + 1.0)) for v in losses])
            return tf.concat(losses, 0), tape.gradient(total, logits)
        return run

    forms = {"one-hot gradient (baseline)": make(one_hot_loss), "exp kept (sessions 16-44)": make(exp_kept_loss),
             "nmt full_softmax_loss": make(full_softmax_loss)}
    results = {name: fn() for name, fn in forms.items()}  # traced, and their outputs for the comparison
    times: dict[str, list[float]] = {name: [] for name in forms}
    for r in range(repeats):
        for name in (list(forms) if r % 2 == 0 else list(reversed(forms))):
            start = time.perf_counter()
            loss, grads = forms[name]()
            float(grads[0][0, 0])
            times[name].append(1e3 * (time.perf_counter() - start))
    base_loss, base_grads = results["one-hot gradient (baseline)"]
    base = min(times["one-hot gradient (baseline)"])
    for name, ms in times.items():
        loss, grads = results[name]
        print(json.dumps({"bench": "full_softmax_loss", "form": name, "parts": 2, "rows": rows, "vocab": vocab,
                          "label_smoothing": args.label_smoothing, "repeats": repeats,
                          "min_ms": round(min(ms), 2), "median_ms": round(statistics.median(ms), 2),
                          "speedup_vs_baseline_min": round(base / min(ms), 3),
                          "max_loss_difference": float(tf.reduce_max(tf.abs(loss - base_loss))),
                          "max_gradient_difference": max(float(tf.reduce_max(tf.abs(a - b)))
                                                         for a, b in zip(grads, base_grads)),
                          "quick": args.quick, **machine()}), flush=True)


if __name__ == "__main__":
    main()
