#!/usr/bin/env python
"""Training speed: target tokens/s of nmt's own training loop (data pipeline included) for the
reference model, against a plain TensorFlow/Keras step of the same shape, side by side.

Reference model: bidirectional GRU 256 encoder, GRU 512 decoder, Bahdanau attention, embeddings 256,
batch 64 sentences, Multi30k en-de. Each configuration trains ``--warmup + --steps`` steps; the figure
is the median of the per-10-step tokens/s after the warm-up. nmt's rows also give its start-up:
``build_seconds`` (the ``Trainer``: data, model, optimizer, compiled steps) and ``first_step_seconds``
(step 1, its trace and first run); under ``--parts`` each run is a fresh process, as a user's ``nmt
train`` is. One JSON line per figure. With the baseline, nmt also runs each placement with Keras' own
CPU GRU loop instead of its fused one, and (feed) with the decoder loop differentiated by TensorFlow
instead of nmt.model.feed's backward pass (toolkit ``nmt-keras-gru-loop``).

    python scripts/bench_train.py                       # V=8k and V=32k, full and sampled, post and feed
    python scripts/bench_train.py --vocab 8000 --steps 100
    python scripts/bench_train.py --quick               # tiny model on the bundled sample, < 1 minute
    python scripts/bench_train.py --vocab 8000 --placements post --parts 1 0 --repeats 3
    python scripts/bench_train.py --vocab 8000 --placements post --parts 0 --precisions float32 bfloat16
    python scripts/bench_train.py --vocab 8000 --placements post --parts 0 --optimizers adam lazy_adam
    python scripts/bench_train.py --vocab 8000 --placements post --parts 2 1 --losses sampled

Thread pools are per process, so the rows of one process share them (TensorFlow's defaults), and
nmt runs there with ``training.parallel_parts: 1``, one batch over all threads, like the baseline.
``--parts`` instead runs nmt alone in a fresh process per loss, ``training.parallel_parts`` value (0:
nmt's default, see ``nmt.training.training_thread_plan``), ``training.precision`` (``--precisions``) and
``training.optimizer`` (``--optimizers``), each setting its own threads, alternated ``--repeats`` times; a
last row per configuration gives the medians and their ratio to the first parts value, precision and
optimizer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import REFERENCE_MODEL, TINY_MODEL, prepared_dir  # noqa: E402

from nmt.config import config_from_dict  # noqa: E402
from nmt.model import gru  # noqa: E402
from nmt.sysinfo import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = {**TINY_MODEL, "dropout": 0.1}


def bench_nmt(prep: Path, work: Path, placement: str, num_sampled: int, steps: int, warmup: int,
              model: dict, keras_gru: bool = False, parts: int = 1, precision: str = "float32",
              optimizer: str = "adam") -> dict:
    """nmt's training loop; ``keras_gru`` runs the GRUs through keras.layers.GRU's own CPU loop
    instead of nmt.model.gru's fused one (the same weights and maths), and the feed decoder through
    its plain step loop differentiated by TensorFlow instead of nmt.model.feed's (the GPU paths),
    to show what the hand-written backward passes gain; ``precision`` and ``optimizer`` are
    ``training.precision`` and ``training.optimizer``."""
    fused_switch = gru.cudnn_available
    if keras_gru:  # the layers' "cuDNN path" is the Keras layer itself, which on a CPU runs Keras' loop
        gru.cudnn_available = lambda: True
    try:
        return _bench_nmt(prep, work, placement, num_sampled, steps, warmup, model, parts, precision, optimizer)
    finally:
        gru.cudnn_available = fused_switch


def _bench_nmt(prep: Path, work: Path, placement: str, num_sampled: int, steps: int, warmup: int,
               model: dict, parts: int, precision: str, optimizer: str) -> dict:
    from nmt.training import Trainer, read_metrics

    run = work / f"run_{placement}_{num_sampled}"
    cfg = config_from_dict({
        "data": {"prepared_dir": str(prep)},
        "model": {**model, "attention_placement": placement},
        "training": {"run_dir": str(run), "batch_size": 64, "num_sampled": num_sampled, "max_steps": warmup + steps,
                     "log_every": 10, "validate_every": 10**8, "validate_max_sentences": 1,
                     "checkpoint_every": 10**8, "parallel_parts": parts, "precision": precision,
                     "optimizer": optimizer}})
    start = time.perf_counter()
    trainer = Trainer(cfg, overwrite=True, log=lambda s: None)
    built = time.perf_counter() - start
    trainer.train()
    rows = read_metrics(run, "train")
    tps = [r["tokens_per_second"] for r in rows if r["step"] > warmup]
    # start-up: the Trainer (data, model, optimizer, compiled steps) and step 1 (its trace and first run)
    first = next(r["window_seconds"] for r in rows if r["step"] == 1)
    return {"tokens_per_second": round(statistics.median(tps)), "vocab": trainer.data.tgt_vocab_size,
            "build_seconds": round(built, 2), "first_step_seconds": round(first, 2)}


def bench_plain_keras(prep: Path, num_sampled: int, steps: int, warmup: int, model: dict) -> dict:
    """A plain TensorFlow step: Keras layers, tf.nn.sampled_softmax_loss with its default sampler.

    The same shape as nmt's post placement, written the way a tutorial would: keras.layers.GRU,
    keras.layers.AdditiveAttention, Dense, one tf.function step, pre-made batches.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from nmt.dataset import BatchPlanner, PreparedData

    data = PreparedData(prep)
    vocab_src, vocab_tgt = data.src_vocab_size, data.tgt_vocab_size
    e, u, d = model["embedding_dim"], model["encoder_units"], model["decoder_units"]
    src_in = keras.Input((None,), dtype="int32")
    tgt_in = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab_src, e, mask_zero=True)(src_in)
    memory, fw, bw = keras.layers.Bidirectional(keras.layers.GRU(u, return_sequences=True, return_state=True))(x)
    state = keras.layers.Dense(d, activation="tanh")(keras.layers.Concatenate()([fw, bw]))
    y = keras.layers.Embedding(vocab_tgt, e, mask_zero=True)(tgt_in)
    dec = keras.layers.GRU(d, return_sequences=True)(y, initial_state=state)
    query = keras.layers.Dense(2 * u)(dec)
    context = keras.layers.AdditiveAttention()([query, memory])
    hidden = keras.layers.Dense(model["attentional_units"], activation="tanh")(
        keras.layers.Concatenate()([dec, context]))
    net = keras.Model([src_in, tgt_in], hidden)
    proj_w = tf.Variable(tf.random.normal([vocab_tgt, model["attentional_units"]], stddev=0.02))
    proj_b = tf.Variable(tf.zeros([vocab_tgt]))
    opt = keras.optimizers.Adam(1e-3, global_clipnorm=1.0)
    variables = net.trainable_variables + [proj_w, proj_b]

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 3)  # no retracing per shape
    def step(src, ti, to):
        with tf.GradientTape() as tape:
            h = tf.reshape(net([src, ti], training=True), [-1, proj_w.shape[1]])
            labels = tf.reshape(to, [-1, 1])
            mask = tf.cast(tf.reshape(to, [-1]) > 0, tf.float32)
            if num_sampled:
                losses = tf.nn.sampled_softmax_loss(proj_w, proj_b, tf.cast(labels, tf.int64), h, num_sampled,
                                                    vocab_tgt)
            else:
                logits = tf.matmul(h, proj_w, transpose_b=True) + proj_b
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 0], logits)
            loss = tf.reduce_sum(losses * mask) / tf.reduce_sum(mask)
        opt.apply(tape.gradient(loss, variables), variables)
        return tf.reduce_sum(mask)

    planner = BatchPlanner(data.split("train"), 64, "sentences", 1, 0)
    batches = [planner.make_batch(rows) for rows in planner.plan(0)[:warmup + steps]]
    rates = []
    for i in range(0, len(batches), 10):
        start, tokens = time.perf_counter(), 0.0
        for b in batches[i:i + 10]:
            tokens += float(step(*[tf.constant(np.asarray(a)) for a in b]))
        if i >= warmup:
            rates.append(tokens / (time.perf_counter() - start))
    return {"tokens_per_second": round(statistics.median(rates)), "vocab": vocab_tgt}


def sampled_losses(vocab: int, quick: bool, losses: list[str]) -> list[int]:
    """The losses measured per vocabulary, of ``losses``: full softmax (0) and the sampled candidates used for it."""
    sampled = 128 if quick else 1024 if vocab > 8000 else 512
    return [n for name, n in (("full", 0), ("sampled", sampled)) if name in losses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model on the bundled sample (< 1 minute)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 32000])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--placements", nargs="+", default=["post", "feed"])
    parser.add_argument("--losses", nargs="+", default=["full", "sampled"], choices=["full", "sampled"],
                        help="full and/or sampled softmax (512 candidates at V=8k, 1,024 above, 128 with --quick)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    parser.add_argument("--parts", type=int, nargs="+", metavar="P",
                        help="nmt alone, a fresh process per training.parallel_parts value (0: nmt's default)")
    parser.add_argument("--repeats", type=int, default=3, help="with --parts: alternated runs of each value")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="with --parts: training.precision values, alternated")
    parser.add_argument("--optimizers", nargs="+", default=["adam"], choices=["adam", "lazy_adam"],
                        help="with --parts: training.optimizer values, alternated")
    parser.add_argument("--child", type=int, metavar="P", help=argparse.SUPPRESS)  # one --parts run
    parser.add_argument("--child-sampled", type=int, help=argparse.SUPPRESS)  # of one loss
    parser.add_argument("--child-precision", default="float32", help=argparse.SUPPRESS)  # in one precision
    parser.add_argument("--child-optimizer", default="adam", help=argparse.SUPPRESS)  # with one optimizer
    args = parser.parse_args()
    if args.parts and (min(args.parts) < 0 or args.repeats < 1):
        parser.error("--parts values must be at least 0 and --repeats at least 1")
    if args.parts:
        return compare_parts(args)
    import tensorflow  # noqa: F401  (machine() reports its version)

    model = TINY if args.quick else REFERENCE_MODEL
    vocabs = [500] if args.quick else args.vocab
    steps, warmup = (20, 10) if args.quick else (args.steps, args.warmup)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for vocab in vocabs:
            prep = prepared_dir(work, vocab, args.quick)
            for num_sampled in sampled_losses(vocab, args.quick, args.losses):
                if args.child is not None and args.child_sampled not in (None, num_sampled):
                    continue
                common = {"bench": "train", "requested_vocab": vocab, "loss": "sampled" if num_sampled else "full",
                          "num_sampled": num_sampled, "batch": 64, "quick": args.quick, **machine()}
                if args.child is not None:
                    r = bench_nmt(prep, Path(tmp), args.placements[0], num_sampled, steps, warmup, model,
                                  parts=args.child, precision=args.child_precision, optimizer=args.child_optimizer)
                    print(json.dumps({**common, "toolkit": "nmt", "placement": args.placements[0],
                                      "parallel_parts": args.child, "precision": args.child_precision,
                                      "optimizer": args.child_optimizer, **r}),
                          flush=True)
                    continue
                if not args.no_baseline:
                    r = bench_plain_keras(prep, num_sampled, steps, warmup, model)
                    print(json.dumps({**common, "toolkit": "plain-keras-step", "placement": "post", **r}), flush=True)
                for placement in args.placements:
                    r = bench_nmt(prep, Path(tmp), placement, num_sampled, steps, warmup, model)
                    print(json.dumps({**common, "toolkit": "nmt", "placement": placement, "parallel_parts": 1, **r}),
                          flush=True)
                for placement in [] if args.no_baseline else args.placements:
                    r = bench_nmt(prep, Path(tmp), placement, num_sampled, steps, warmup, model, keras_gru=True)
                    print(json.dumps({**common, "toolkit": "nmt-keras-gru-loop", "placement": placement, **r}),
                          flush=True)


def compare_parts(args: argparse.Namespace) -> None:
    """``--parts``: nmt alone in a fresh process per parts value, precision, optimizer and configuration,
    alternated."""
    runs: dict[tuple, list[int]] = {}
    configs = [(v, p, n) for v in ([500] if args.quick else args.vocab) for p in args.placements
               for n in sampled_losses(v, args.quick, args.losses)]
    for _ in range(args.repeats):
        for vocab, placement, num_sampled in configs:
            for parts, precision, optimizer in itertools.product(args.parts, args.precisions, args.optimizers):
                cmd = [sys.executable, __file__, "--child", str(parts), "--child-sampled", str(num_sampled),
                       "--child-precision", precision, "--child-optimizer", optimizer, "--vocab", str(vocab),
                       "--placements", placement, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--work", args.work]
                out = subprocess.run(cmd + (["--quick"] if args.quick else []), check=True, capture_output=True,
                                     text=True).stdout
                for line in out.splitlines():
                    row = json.loads(line)
                    print(line, flush=True)
                    key = (vocab, placement, row["num_sampled"], parts, precision, optimizer)
                    runs.setdefault(key, []).append(row["tokens_per_second"])
    base = f"parts_{args.parts[0]}_{args.precisions[0]}"
    base += "" if len(args.optimizers) == 1 else f"_{args.optimizers[0]}"
    for (vocab, placement, num_sampled, parts, precision, optimizer), rates in runs.items():
        first = statistics.median(runs[(vocab, placement, num_sampled, args.parts[0], args.precisions[0],
                                        args.optimizers[0])])
        print(json.dumps({"bench": "train_parts", "requested_vocab": vocab, "placement": placement,
                          "num_sampled": num_sampled, "parallel_parts": parts, "precision": precision,
                          "optimizer": optimizer,
                          "repeats": len(rates), "median_tokens_per_second": round(statistics.median(rates)),
                          f"speedup_vs_{base}": round(statistics.median(rates) / first, 3),
                          "quick": args.quick, **machine()}), flush=True)


if __name__ == "__main__":
    main()
