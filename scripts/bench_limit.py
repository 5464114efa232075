#!/usr/bin/env python
"""The machine's limit and how close training gets to it.

1. Dense float32 matmul GFLOP/s through TensorFlow (oneDNN) for a large square shape and for
   the shapes the reference model's steps use (the GRU step, the training projection and the
   decoder's [64, 512] x [512, 8000] projection, one chain per thread): the machine's practical peak.
2. nmt's training step in GFLOP/s: FLOPs are counted from the model's shape (every matmul,
   2 FLOPs per multiply-add, forward; backward = 2x forward, so a step is 3x forward) over the
   batch's padded positions, divided by the measured step time. The sampled softmax' product is
   counted at its columns: the expected number of distinct candidates (``sampled_columns``; nmt
   merges repeated draws). ``ceiling_tokens_per_second`` is
   the speed the same FLOPs would give at the matmul peak: no float32 implementation of this
   model and loss can train faster on this machine.
3. Greedy decoding of the test split in GFLOP/s, every sentence held to ``--decode-steps``
   decoder steps (as ``bench_peers.py`` holds every toolkit), batches of ``--decode-batch``:
   the same FLOP count for the encoder and one teacher-forced position per step, with the
   full-vocabulary projection; ``ceiling_sentences_per_second`` is the float32 limit.
4. With ``--profile N``: where the step's time goes. N more steps run under TensorFlow's
   profiler; its trace (the ``.xplane.pb`` it writes) is summed per op type and per top-level
   name scope, in CPU-thread milliseconds per step (both threads counted), printed as JSON lines.
   A summary line (``step_profile_summary``) times the same batches unprofiled as well and gives
   the matmuls' share of the threads' time and their GFLOP/s per thread against one thread's share
   of the peak: the step's fraction of the peak is about the product of the two.

With ``--precision bfloat16`` the step runs with ``training.precision: bfloat16`` and the matmul peaks
are measured in bfloat16 too: the step's GFLOP/s (the same FLOP count) is then given as a share of
the bfloat16 peak (``fraction_of_peak``) and of the float32 one (``fraction_of_float32_peak``).

With ``--rounds R`` (3 by default) the peaks and the step are measured R times in turn, the step over the
same batches each round, and each round's step is set against the peaks measured just before it: one
``train_step_flops`` line per round, then ``train_step_flops_median`` with the medians over the rounds
(the figure to quote). On a shared machine whose speed drifts within minutes, a peak and a step measured
minutes apart can differ by the drift. An untimed pass over the measured batches comes first: a first pass
over batches runs slower than later ones (3-30% in session 45's runs), so every round times the steady state.

Every figure runs in the training step's thread layout (``--parallel-parts``, 0: nmt's default,
:func:`nmt.training.training_thread_plan`; 2 parts of one intra-op thread each on 2 cores): the
matmuls run one chain per part side by side, and decoding one batch per part.

    python scripts/bench_limit.py                  # Multi30k en-de, reference model, full softmax V=8k
    python scripts/bench_limit.py --profile 10     # the same, then the op-time breakdown
    python scripts/bench_limit.py --quick          # tiny model on the bundled sample, < 1 minute
    python scripts/bench_limit.py --steps 30 --rounds 5 --decode-steps 0   # the full-softmax step, 5 rounds
    python scripts/bench_limit.py --precision bfloat16 --decode-steps 0   # the step with bfloat16 matmuls
    python scripts/bench_limit.py --num-sampled 1024 --decode-steps 0 --profile 10 --optimizer lazy_adam
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import TINY_MODEL, prepared_dir, trace_op_events  # noqa: E402

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up

ROOT = Path(__file__).resolve().parent.parent


def matmul_gflops(m: int, k: int, n: int, seconds: float = 2.0, chains: int = 1, dtype: str = "float32") -> float:
    """Median GFLOP/s of ``[m, k] @ [k, n]`` products in ``dtype``, 20 per call in a dependent chain.

    Each product feeds the next (``x @ B`` then ``@ C`` back to ``[m, k]``), so no two are
    the same expression and none can be merged or skipped by the graph optimiser. ``chains``
    independent chains run side by side in each call (on the inter-op threads: the layout of
    training with ``parallel_parts``, one chain per part).
    """
    import tensorflow as tf

    x0 = [tf.cast(tf.random.normal([m, k]) * 0.01, dtype) for _ in range(chains)]
    b = tf.cast(tf.random.normal([k, n]) * (1.0 / k) ** 0.5, dtype)
    c = tf.cast(tf.random.normal([n, k]) * (1.0 / n) ** 0.5, dtype)

    @tf.function
    def run(xs):
        out = []
        for x in xs:
            for _ in range(10):
                x = tf.matmul(tf.matmul(x, b), c)
            out.append(x)
        return out

    run(x0)[0].numpy()
    rates, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t = time.perf_counter()
        [x.numpy() for x in run(x0)]
        rates.append(chains * 20 * 2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def forward_flops(cfg, src_w: int, tgt_w: int, batch: int, vocab: int, sampled: float) -> float:
    """Matmul FLOPs of one forward pass over padded widths ``src_w``, ``tgt_w``; ``sampled``: the columns
    of the sampled-softmax product besides the true piece's (0: the full softmax).

    The same count serves greedy decoding of ``tgt_w`` steps (``sampled`` 0): a decoding step runs
    the matmuls of one teacher-forced position, with the full-vocabulary projection.
    """
    m = cfg.model
    e, u, d, au, a = m.embedding_dim, m.encoder_units, m.decoder_units, m.attention_units, m.attentional_units
    enc = src_w * 2 * (2 * 3 * u * (e + u))              # both directions: input + recurrent matmuls
    enc += 2 * (2 * u) * d                                # bridge
    keys = src_w * 2 * (2 * u) * au
    dec_in = e + (2 * u if m.attention_placement == "feed" else 0)
    dec = tgt_w * 2 * 3 * d * (dec_in + d)
    query = tgt_w * 2 * d * au
    scores = tgt_w * src_w * (2 * au + 2 * 2 * u)         # v^T tanh(.) and the context
    attentional = tgt_w * 2 * (d + 2 * u) * a
    out = tgt_w * 2 * a * (sampled + 1 if sampled else vocab)
    return float(batch * (enc + keys + dec + query + scores + attentional + out))


def step_flops(cfg, src_w: int, tgt_w: int, batch: int, vocab: int, sampled: float) -> float:
    """FLOPs of one training step for padded widths ``src_w``, ``tgt_w``: backward = 2x forward."""
    return 3.0 * forward_flops(cfg, src_w, tgt_w, batch, vocab, sampled)


def greedy_decode_rate(cfg, model, split, vocab: int, batch: int, steps: int, repeats: int,
                       parallel: int = 1) -> dict:
    """Greedy decoding of a held-out split at exactly ``steps`` decoder steps per sentence, as
    bench_peers.py holds every toolkit to: median sentences/s of ``repeats`` passes and the
    matmul FLOPs done per pass (encoder, keys and ``steps`` decoder steps of every batch)."""
    from nmt.config import DecodingConfig
    from nmt.decoding import Decoder, length_sorted_batches, translate_ids

    # ``parallel`` batches at a time (the training step's parts) over the process' threads, set
    # for training. Session 6's figures were one batch over both threads; nmt translate's own
    # layout (4 batches at once for 2 threads) is measured by bench_peers.py and bench_translate.py.
    decoder = Decoder(model, DecodingConfig(max_length_a=0.0, max_length_b=steps, min_length=steps - 1,
                                            batch_size=batch, parallel_batches=parallel))
    offsets = split.src_offsets
    sentences = [split.src_ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    # no scores, as nmt translate's text output; the first call traces the decoder
    translate_ids(decoder, sentences[:batch], batch, with_scores=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = translate_ids(decoder, sentences, batch, with_scores=False)
        times.append(time.perf_counter() - start)
    if any(len(r[0][0]) != steps - 1 for r in results):  # steps - 1 pieces, then EOS
        raise SystemExit("bench_limit: greedy decoding did not run exactly the forced number of steps")
    flops = sum(forward_flops(cfg, max(len(sentences[i]) for i in rows) + 1, steps, len(rows), vocab, 0)
                for rows in length_sorted_batches([len(s) for s in sentences], batch))
    seconds = statistics.median(times)
    return {"sentences": len(sentences), "seconds": seconds, "flops": flops}


def time_steps(step, batches) -> float:
    """Seconds for ``step`` over ``batches``, waiting for the last step's result."""
    start = time.perf_counter()
    for batch in batches:
        _, n = step(*batch)
    float(n)
    return time.perf_counter() - start


def profile_steps(step, batches, logdir: Path, top: int = 12) -> tuple[list[dict], dict]:
    """Run ``step`` on ``batches`` under the profiler; CPU-thread ms per step by op type and by name scope.

    Also returns the trace's totals per step: the wall time under the profiler, the executor
    threads, their summed op time and the part of it in matmuls (``_Mkl*MatMul*``).
    """
    import collections
    import shutil

    import tensorflow as tf

    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(str(logdir))
    wall = time_steps(step, batches)
    tf.profiler.experimental.stop()
    events, threads, _ = trace_op_events(logdir)
    by_type: collections.Counter = collections.Counter()
    by_scope: collections.Counter = collections.Counter()
    for node, op_type, ms in events:
        parts = node.split("/")
        scope = "/".join(parts[:3]) if parts[0] == "gradient_tape" else "/".join(parts[:2])
        scope = re.sub(r"_\d+$", "", scope)  # one entry for ResourceApplyAdam_1, _2, ...
        by_type[op_type] += ms / len(batches)
        by_scope[scope] += ms / len(batches)
    total = sum(by_type.values())
    rows = [{"bench": "step_profile", "group": "total", "cpu_ms_per_step": round(total, 2), "share": 1.0}]
    for group, counter in (("op_type", by_type), ("scope", by_scope)):
        rows += [{"bench": "step_profile", "group": group, "name": name, "cpu_ms_per_step": round(ms, 2),
                  "share": round(ms / total, 3)} for name, ms in counter.most_common(top)]
    matmul = sum(ms for name, ms in by_type.items() if "MatMul" in name)
    totals = {"profiled_ms_per_step": 1e3 * wall / len(batches), "threads": threads, "op_ms_per_step": total,
              "matmul_ms_per_step": matmul}
    return rows, totals


def profile_summary(totals: dict, unprofiled_ms: float, gflop: float, peak: float) -> dict:
    """Where the step's thread time goes, from a trace's ``totals`` and the same batches timed unprofiled.

    The profiler slows the step's many small ops (``profiler_slowdown``), so shares of the unprofiled
    thread time use the matmuls' traced time, which its per-op cost barely moves, against the
    unprofiled wall time. ``matmul_efficiency`` is the step's FLOPs over its matmul thread time,
    against one thread's share of the peak; the step's fraction of the peak is about
    ``matmul_share_of_thread_time x matmul_efficiency``.
    """
    threads = max(totals["threads"], 1)
    thread_ms = threads * unprofiled_ms
    per_thread = gflop / (totals["matmul_ms_per_step"] / 1e3)
    return {"bench": "step_profile_summary", "gflop_per_step": round(gflop, 2), "threads": threads,
            "unprofiled_ms_per_step": round(unprofiled_ms, 1),
            "profiled_ms_per_step": round(totals["profiled_ms_per_step"], 1),
            "profiler_slowdown": round(totals["profiled_ms_per_step"] / unprofiled_ms, 3),
            "op_share_of_thread_time_profiled": round(
                totals["op_ms_per_step"] / (threads * totals["profiled_ms_per_step"]), 3),
            "matmul_ms_per_step": round(totals["matmul_ms_per_step"], 1),
            "matmul_share_of_thread_time": round(totals["matmul_ms_per_step"] / thread_ms, 3),
            "matmul_gflops_per_thread": round(per_thread, 1), "peak_gflops_per_thread": round(peak / threads, 1),
            "matmul_efficiency": round(per_thread / (peak / threads), 3),
            "fraction_of_peak": round(gflop / (unprofiled_ms / 1e3) / peak, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--num-sampled", type=int, default=0)
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more steps (0: no)")
    parser.add_argument("--decode-steps", type=int, default=30, metavar="T",
                        help="greedy decoding of the test split at exactly T decoder steps per sentence (0: skip)")
    parser.add_argument("--decode-batch", type=int, default=64)
    parser.add_argument("--decode-repeats", type=int, default=3)
    parser.add_argument("--parallel-parts", type=int, default=0, metavar="P",
                        help="training.parallel_parts (0: nmt's default); the matmuls run P chains side by side")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="training.precision of the step; bfloat16 also measures the bfloat16 matmul peak")
    parser.add_argument("--optimizer", choices=["adam", "lazy_adam"], default="adam", help="training.optimizer")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="model.dropout of the step (0: none; the recipes and bench_peers.py train with 0.2-0.4)")
    parser.add_argument("--rounds", type=int, default=3, metavar="R",
                        help="measure the peaks and then the step R times in turn; the medians are the figures")
    args = parser.parse_args()
    if not 0.0 <= args.dropout <= 0.9:  # model.dropout's own range, checked before anything is measured
        parser.error("--dropout must be between 0 and 0.9")
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    import numpy as np
    import tensorflow as tf

    from nmt.config import TrainingConfig, config_from_dict
    from nmt.sysinfo import available_cores, machine, set_cpu_threads
    from nmt.training import Trainer, training_thread_plan

    # The thread pools are the process' own, set once: the training step's layout for every figure.
    parts, intra, inter = training_thread_plan(TrainingConfig(parallel_parts=args.parallel_parts),
                                               available_cores(), on_gpu=False)
    if intra:
        set_cpu_threads(intra, inter)
    info = {**machine(), "parallel_parts": parts, "intra_op_threads": intra or "tensorflow"}
    shapes = [(512, 512, 512)] if args.quick else [(2048, 2048, 2048), (1024, 1024, 1024), (64, 512, 1536),
                                                   (896, 512, 8000), (64, 512, 8000)]

    def measure_peaks(round_: int) -> dict[str, float]:
        """The largest GFLOP/s over ``shapes`` per dtype (float32 and the step's precision), one line per shape."""
        peaks: dict[str, float] = {}
        for dtype in dict.fromkeys(["float32", args.precision]):
            for shape in shapes:
                rate = matmul_gflops(*shape, seconds=0.5 if args.quick else 3.0, chains=parts, dtype=dtype)
                peaks[dtype] = max(peaks.get(dtype, 0.0), rate)
                print(json.dumps({"bench": "matmul", "round": round_, "dtype": dtype,
                                  "shape": "x".join(map(str, shape)), "gflops": round(rate, 1), **info}), flush=True)
        return peaks

    peaks = measure_peaks(1)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prep = prepared_dir(work, 500 if args.quick else 8000, args.quick)
    model = TINY_MODEL if args.quick else {}
    cfg = config_from_dict({"data": {"prepared_dir": str(prep)}, "model": {**model, "dropout": args.dropout},
                            "training": {"run_dir": str(work / "run_limit"), "num_sampled": args.num_sampled,
                                         "max_steps": 1, "parallel_parts": parts, "precision": args.precision,
                                         "optimizer": args.optimizer}})
    trainer = Trainer(cfg, overwrite=True, log=lambda s: None)
    plan = trainer.planner.plan(0)[:args.steps + 10 + args.profile]
    batches = [trainer.planner.make_batch(rows) for rows in plan]
    vocab = trainer.data.tgt_vocab_size
    sampled = args.num_sampled if 0 < args.num_sampled < vocab else 0
    # the sampled product has one column per distinct candidate (repeats merged), on average this many
    columns = trainer.sampler.expected_distinct() if sampled and not trainer.xla else sampled
    measured, profiled = batches[10:10 + args.steps], batches[10 + args.steps:]
    tensors = [[tf.constant(x) for x in b] for b in batches]
    timed = tensors[10:10 + args.steps]  # the measured batches, as tensors
    # Warm-up: 10 batches, then one untimed pass over the measured ones, since a first pass over
    # batches runs slower than the passes after it (docs/benchmarks.md, The machine's limit, session 45).
    for b in tensors[:10] + timed:
        trainer._train_step(*b)
    steps = len(measured)
    flops = sum(step_flops(cfg, s.shape[1], t.shape[1], s.shape[0], vocab, columns) for s, _, t in measured)
    tokens = float(sum(int(np.count_nonzero(t)) for _, _, t in measured))
    padded = sum(int(np.prod(b[2].shape)) for b in measured)
    setting = {"vocab": vocab, "loss": "sampled" if sampled else "full", "num_sampled": sampled,
               "sampled_columns": round(columns, 1), "precision": args.precision, "optimizer": args.optimizer,
               "dropout": args.dropout, "steps": steps, "padding_share": round(1 - tokens / padded, 3),
               "gflop_per_step": round(flops / steps / 1e9, 2)}
    rounds = []
    for r in range(1, args.rounds + 1):
        if r > 1:
            peaks = measure_peaks(r)
        peak = peaks[args.precision]
        seconds = time_steps(trainer._train_step, timed)
        achieved = flops / seconds / 1e9
        rounds.append({"target_tokens_per_second": round(tokens / seconds), "achieved_gflops": round(achieved, 1),
                       "matmul_peak_gflops": round(peak, 1), "fraction_of_peak": round(achieved / peak, 3),
                       "fraction_of_float32_peak": round(achieved / peaks["float32"], 3),
                       "ceiling_tokens_per_second": round(tokens / seconds * peak / achieved)})
        print(json.dumps({"bench": "train_step_flops", "round": r, **setting, **rounds[-1], **info}), flush=True)
    print(json.dumps({"bench": "train_step_flops_median", "rounds": len(rounds), **setting,
                      **{k: statistics.median(row[k] for row in rounds) for k in rounds[0]},
                      "fraction_of_peak_per_round": [row["fraction_of_peak"] for row in rounds], **info}), flush=True)
    if args.decode_steps:
        d = greedy_decode_rate(cfg, trainer.model, trainer.data.split("test"), vocab, args.decode_batch,
                               args.decode_steps, args.decode_repeats, parts)
        rate, peak32 = d["flops"] / d["seconds"] / 1e9, peaks["float32"]  # decoding runs in float32
        print(json.dumps({"bench": "greedy_decode_flops", "vocab": vocab, "sentences": d["sentences"],
                          "batch": args.decode_batch, "decoder_steps": args.decode_steps,
                          "sentences_per_second": round(d["sentences"] / d["seconds"], 1),
                          "gflop_per_sentence": round(d["flops"] / d["sentences"] / 1e9, 3),
                          "achieved_gflops": round(rate, 1), "matmul_peak_gflops": round(peak32, 1),
                          "fraction_of_peak": round(rate / peak32, 3),
                          "ceiling_sentences_per_second": round(d["sentences"] / d["seconds"] * peak32 / rate),
                          **info}), flush=True)
    if profiled:
        # the same batches unprofiled first (median of 3 passes), then under the profiler
        gflop = sum(step_flops(cfg, s.shape[1], t.shape[1], s.shape[0], vocab, columns)
                    for s, _, t in profiled) / len(profiled) / 1e9
        profiled = tensors[10 + args.steps:]
        passes = [1e3 * time_steps(trainer._train_step, profiled) / len(profiled) for _ in range(3)]
        rows, totals = profile_steps(trainer._train_step, profiled, work / "profile_limit")
        for row in [profile_summary(totals, statistics.median(passes), gflop, peak), *rows]:
            print(json.dumps({**row, "loss": setting["loss"], "precision": args.precision, "optimizer": args.optimizer,
                              "dropout": args.dropout, **info}),
                  flush=True)


if __name__ == "__main__":
    main()
