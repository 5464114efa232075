#!/usr/bin/env python
"""Translation speed of a trained run: compiled greedy and beam search against a per-step Python loop.

Figures (one JSON line each): sentences/s and target tokens/s for greedy and beam search over
``--src`` (model load excluded and included), and the baseline: the same model decoded one
sentence at a time by a Python loop that calls the Keras layers once per step (the seed
example's approach, without even its ``model.predict`` overhead), run on the first
``--baseline-sentences`` lines; its outputs are checked against the compiled greedy decoder.
With tensorflow-text installed, the run is also exported (``nmt export``) for each beam size
and the SavedModel's serving signature is timed on the same lines, sent in batches of
``decoding.batch_size`` in file order and in the batches ``nmt translate`` makes (sorted by
source pieces); its outputs are compared with ``nmt translate``'s.

    python scripts/bench_translate.py --model runs/multi30k_en_de --src ../shared/data/multi30k/test2016.en
    python scripts/bench_translate.py --quick      # trains a tiny model on the bundled sample first (< 1 minute)

Then the input table's rows: the same decoding with and without the decoder's input projections made
once at load (``Decoder(frozen_weights=True)``), alternated in one process; the "ended gathered out" rows
decode as ``nmt translate`` does, gathering the sentences that have ended out of the batch, against a decoder
that keeps every batch whole to its end (``compact_fraction`` 2), alternated (``--compact-fractions F ...``:
a row for each fraction, all alternated together). The shortlist rows decode
over the run's lexical shortlist (``decoding.shortlist``), alternated with the whole vocabulary in
the same process; the "without scores" rows decode greedily without the scores' softmax normaliser
(``translate(with_scores=False)``, what ``nmt translate`` does for text output) against with it, the
same decoder alternated in one process; the bfloat16 rows decode with ``decoding.precision: bfloat16`` (the whole
vocabulary, then the shortlist), alternated with float32. ``--ref`` adds BLEU of both sides.

The "transposed few-row kernels" rows decode with the loaded model's step kernels that multiply a
sentence batch's rows also copied transposed (``nmt.model.decoder.step_weights`` where
``nmt.model.ops.weights_first_faster``, AVX2 CPUs without AVX-512), against without those copies,
alternated in one process, whatever this CPU's choice.

``--batch-sizes N ...`` adds rows at other decoding batch sizes, each alternated with the run's
``decoding.batch_size`` in one process (greedy without scores, as ``nmt translate`` prints text).

``--profile N`` then decodes the first N lines greedily once more under TensorFlow's profiler, as
``nmt translate`` does for text output, over the whole vocabulary in float32 and (unless
``--no-shortlist``) over the shortlist in bfloat16: the trace's op time by op type, and the shares of
the matmuls and of the attention's other ops (``tanh(q + keys)``, softmax: the ops named
``additive_attention``), of the threads' time from the first op to the last. ``bound_if_matmuls_were_free``
is that time (idle included) over the same less the matmuls' time: how much faster decoding could get if every
matmul took no time and nothing else changed.

    python scripts/bench_translate.py --model RUN --src test.en --beams 1 --repeats 1 --profile 640
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import quick_trained_run, trace_op_events  # noqa: E402

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up

ROOT = Path(__file__).resolve().parent.parent


def quick_run(work: Path) -> tuple[Path, list[str]]:
    """Train a tiny model for a few steps on the bundled sample (prepared once in ``work``)."""
    run, prep = quick_trained_run(work, "run_quick_translate", 40, {"max_length_cap": 40})
    return run, (prep / "test" / "src.txt").read_text().splitlines()


def python_loop_greedy(translator, sentence: str) -> list[int]:
    """The baseline: one sentence, one eager call of the decoder layers per step, argmax in Python.

    It follows the run's ``decoding.min_length`` (no EOS before it) and output length limit, as
    ``nmt translate`` does, so the two give the same outputs up to float rounding."""
    import numpy as np
    import tensorflow as tf

    from nmt.decoding import max_output_lengths
    from nmt.vocab import BOS_ID, EOS_ID

    ids = translator.src_vocab.encode([sentence])[0][:translator.decoding.max_source_pieces]
    src = tf.constant([ids + [EOS_ID]], tf.int32)
    limit = int(max_output_lengths(tf.constant([len(ids)]), translator.decoding)[0])
    model = translator.model
    memory, keys, mask, state = model.encode(src)
    y, out = BOS_ID, []
    for t in range(limit):
        hidden, state, _ = model.decoder.step(tf.constant([y]), state, memory, keys, mask)
        logits = model.logits(hidden).numpy()[0]
        if t < translator.decoding.min_length:
            logits[EOS_ID] = -np.inf
        y = int(np.argmax(logits)) if t + 1 < limit else EOS_ID
        if y == EOS_ID:
            break
        out.append(y)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run directory")
    parser.add_argument("--src", help="source file, one sentence a line")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-sentences", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ref", help="reference translations of --src: BLEU with and without the shortlist")
    parser.add_argument("--no-shortlist", action="store_true", help="skip the shortlist rows")
    parser.add_argument("--shortlist-per-source", type=int, help="shortlist setting (default: the run's config)")
    parser.add_argument("--shortlist-frequent", type=int, help="shortlist setting (default: the run's config)")
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[], metavar="N",
                        help="also decode at these batch sizes, alternated with the run's decoding.batch_size")
    parser.add_argument("--compact-fractions", type=float, nargs="+", metavar="F",
                        help="the ended-gathered-out rows at these decoding compact fractions (default: nmt's)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile greedy decoding of the first N lines (0: no)")
    args = parser.parse_args()
    if args.profile < 0:
        parser.error("--profile must be 0 or more")
    if any(size < 1 for size in args.batch_sizes):
        parser.error("--batch-sizes must be at least 1")
    if any(not 0 < f <= 1 for f in args.compact_fractions or []):
        parser.error("--compact-fractions must be above 0 and at most 1")
    from nmt.decoding import COMPACT_FRACTION

    args.compact_fractions = args.compact_fractions or [COMPACT_FRACTION]
    from nmt.sysinfo import machine
    from nmt.translate import Translator

    if args.quick:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        run_dir, lines = quick_run(work)
        args.repeats, args.baseline_sentences = 1, 5
    else:
        if not (args.model and args.src):
            parser.error("--model and --src are required (or --quick)")
        run_dir, lines = Path(args.model), Path(args.src).read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    translator = Translator(run_dir)
    load = time.perf_counter() - start
    common = {"bench": "translate", "run": str(run_dir), "sentences": len(lines), "quick": args.quick,
              **machine(), "load_seconds": round(load, 2)}
    greedy_rate, reference = None, {}
    for beam in args.beams:
        translator.translate(lines[:64], beam=beam)  # trace once (a compiled function per beam size)
        times, tokens = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = translator.translate(lines, beam=beam)
            times.append(time.perf_counter() - start)
            tokens = sum(t.tokens + 1 for t in result)  # + EOS
        secs = statistics.median(times)
        reference[beam] = (secs, [t.text for t in result])
        rate = len(lines) / secs
        if beam == 1:
            greedy_rate = rate
        print(json.dumps({**common, "method": decoding_name(beam),
                          "sentences_per_second": round(rate, 1), "target_tokens_per_second": round(tokens / secs),
                          "sentences_per_second_with_load": round(len(lines) / (secs + load), 1),
                          "seconds_all": [round(t, 2) for t in times]}), flush=True)
    subset = [s for s in lines if s.strip()][:args.baseline_sentences]
    python_loop_greedy(translator, subset[0])  # warm up eager kernels
    start = time.perf_counter()
    outs = [python_loop_greedy(translator, s) for s in subset]
    secs = time.perf_counter() - start
    ours = [t.text for t in translator.translate(subset, beam=1)]
    same = sum(a == b for a, b in zip(translator.tgt_vocab.decode(outs), ours))
    rate = len(subset) / secs
    print(json.dumps({**common, "method": "python loop, one eager call per step (baseline)",
                      "sentences": len(subset), "sentences_per_second": round(rate, 2),
                      "outputs_equal_to_compiled_greedy": f"{same}/{len(subset)}",
                      "speedup_of_nmt_greedy": round(greedy_rate / rate, 1) if greedy_rate else None}), flush=True)
    bench_export(translator, lines, reference, args.repeats, Path(args.work), common)
    bench_input_table(translator, lines, args, common)
    bench_whole_batches(translator, lines, args, common)
    bench_transposed(translator, lines, args, common)
    listed = None
    if not args.no_shortlist:
        listed = Translator(run_dir, shortlist=True, shortlist_per_source=args.shortlist_per_source,
                            shortlist_frequent=args.shortlist_frequent)
        bench_shortlist(translator, listed, lines, args, common)
    bench_scores(translator, listed, lines, args, common)
    bench_precision(translator, listed, lines, args, common)
    if args.batch_sizes:
        bench_batch_sizes(translator, lines, args, common)
    if args.profile:
        bench_profile(translator, listed, lines[:args.profile], Path(args.work), common)


def with_decoding(translator, **decoding):
    """A copy of ``translator`` (the same model, vocabularies and decoder) whose ``decoding`` settings
    ``decoding`` changes: for the settings each ``translate`` call reads (``batch_size``)."""
    import copy
    import dataclasses

    other = copy.copy(translator)
    other.decoding = dataclasses.replace(translator.decoding, **decoding)
    return other


def variant(translator, frozen_weights: bool = True, compact_fraction: float | None = None, **decoding):
    """A copy of ``translator`` (the same model and vocabularies) with a decoder of its own:
    ``decoding`` changes its settings, ``frozen_weights`` and ``compact_fraction`` (None: the default) as
    in :class:`nmt.decoding.Decoder`."""
    from nmt.decoding import COMPACT_FRACTION, Decoder

    other = with_decoding(translator, **decoding)
    other.decoder = Decoder(translator.model, other.decoding, translator.decoder.shortlist, frozen_weights,
                            COMPACT_FRACTION if compact_fraction is None else compact_fraction)
    return other


def bleu_of(outputs: dict, args) -> dict:
    """``{"<name>_bleu": BLEU}`` of each output list against ``--ref`` (nothing without it)."""
    import sacrebleu

    if not args.ref:
        return {}
    refs = Path(args.ref).read_text(encoding="utf-8").splitlines()
    return {f"{name}_bleu": round(sacrebleu.corpus_bleu(out, [refs]).score, 2) for name, out in outputs.items()}


def alternated(translators: dict, lines: list[str], beam: int, repeats: int,
               options: dict | None = None) -> tuple[dict, dict]:
    """Translate ``lines`` with each translator in turn, ``repeats`` times over (traced first):
    ``({name: median seconds}, {name: output texts})``. ``options`` ``{name: keyword arguments}``
    are passed to that name's ``translate`` calls."""
    options = options or {}
    times: dict = {name: [] for name in translators}
    outputs: dict = {}
    for name, tr in translators.items():
        tr.translate(lines[:64], beam=beam, **options.get(name, {}))
    for _ in range(repeats):
        for name, tr in translators.items():
            start = time.perf_counter()
            outputs[name] = [t.text for t in tr.translate(lines, beam=beam, **options.get(name, {}))]
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def compared(common: dict, method: str, lines: list[str], secs: dict, outs: dict, ours, base, label: str,
             **extra) -> None:
    """Print one row comparing the ``ours`` side of :func:`alternated`'s ``secs`` and ``outs`` with its
    ``base`` side: sentences/s of both (``<label>_sentences_per_second``), ``speedup_vs_<label>`` and
    ``outputs_equal_to_<label>``; ``extra`` is added to the row."""
    same = sum(a == b for a, b in zip(outs[ours], outs[base]))
    print(json.dumps({**common, "method": method, "sentences_per_second": round(len(lines) / secs[ours], 1),
                      f"{label}_sentences_per_second": round(len(lines) / secs[base], 1),
                      f"speedup_vs_{label}": round(secs[base] / secs[ours], 3),
                      f"outputs_equal_to_{label}": f"{same}/{len(lines)}", **extra}), flush=True)


def decoding_name(beam: int) -> str:
    """``nmt greedy`` or ``nmt beam K``: the start of each row's method."""
    return f"nmt {'greedy' if beam == 1 else f'beam {beam}'}"


def bench_shortlist(full, listed, lines: list[str], args, common: dict) -> None:
    """Decoding over the run's lexical shortlist against the whole vocabulary, alternated in one
    process: speed-up, outputs equal to the full vocabulary's and, with ``--ref``, BLEU of both."""
    import numpy as np

    size = [len(listed.decoder.shortlist.targets(np.array(ids)[None])) for ids in listed.src_vocab.encode(lines[:200])]
    for beam in args.beams:
        secs, outs = alternated({"full": full, "listed": listed}, lines, beam, args.repeats)
        compared(common, f"{decoding_name(beam)}, shortlist {listed.decoding.shortlist_per_source}/"
                 f"{listed.decoding.shortlist_frequent}", lines, secs, outs, "listed", "full", "full_vocabulary",
                 median_shortlist_size_one_sentence=int(np.median(size)), vocab=len(listed.tgt_vocab),
                 **bleu_of({"shortlist": outs["listed"], "full_vocabulary": outs["full"]}, args))


def bench_input_table(translator, lines: list[str], args, common: dict) -> None:
    """The loaded model's input table (``Decoder(frozen_weights=True)``, what ``nmt translate`` uses)
    against the decoder that multiplies the embeddings at every step, alternated in one process."""
    plain = variant(translator, frozen_weights=False)
    for beam in args.beams:
        secs, outs = alternated({"plain": plain, "table": translator}, lines, beam, args.repeats)
        compared(common, f"{decoding_name(beam)}, input table", lines, secs, outs, "table", "plain", "without_table")


def bench_whole_batches(translator, lines: list[str], args, common: dict) -> None:
    """Decoding that gathers the sentences that have ended out of its batch, at each of
    ``--compact-fractions`` (default ``nmt translate``'s), against a decoder that keeps every batch whole
    to its end (``compact_fraction`` above 1), alternated in one process (greedy without scores, as
    ``nmt translate`` prints text; beam search with them)."""
    def gathering(fraction: float):
        same = fraction == translator.decoder.compact_fraction
        return translator if same else variant(translator, compact_fraction=fraction)

    decoders = {"whole": gathering(2.0), **{f: gathering(f) for f in args.compact_fractions}}
    for beam in args.beams:
        options = {name: {"with_scores": beam > 1} for name in decoders}
        secs, outs = alternated(decoders, lines, beam, args.repeats, options)
        for fraction in args.compact_fractions:
            compared(common, f"{decoding_name(beam)}, ended gathered out", lines, secs, outs, fraction, "whole",
                     "whole_batches", compact_fraction=fraction)


def bench_transposed(translator, lines: list[str], args, common: dict) -> None:
    """A loaded model's few-row step kernels copied transposed as well (``decoder.step_weights``; a step uses them
    at ``decoder.TRANSPOSED_ROWS`` rows) against not, alternated in one process (greedy without scores,
    as ``nmt translate`` prints text; beam search with them). The row says which this CPU uses."""
    from unittest import mock

    from nmt.model import decoder as decoder_module

    decoders = {}
    for name, transposed in (("plain", False), ("transposed", True)):  # read when the copies are made
        with mock.patch.object(decoder_module, "weights_first_faster", lambda transposed=transposed: transposed):
            decoders[name] = variant(translator)
    for beam in args.beams:
        options = {name: {"with_scores": beam > 1} for name in decoders}
        secs, outs = alternated(decoders, lines, beam, args.repeats, options)
        compared(common, f"{decoding_name(beam)}, transposed few-row kernels", lines, secs, outs, "transposed",
                 "plain", "plain_kernels", this_cpu_uses_transposed=decoder_module.weights_first_faster())


def bench_scores(full, listed, lines: list[str], args, common: dict) -> None:
    """Greedy decoding without the scores (what ``nmt translate`` does for text output, ``nmt eval``
    and validation BLEU) against with them (``--json``, ``--n-best`` and the library's default): the
    same decoder alternated in one process, over the whole vocabulary and the shortlist if ``listed``."""
    for name, tr in (("", full), (", shortlist", listed)):
        if tr is None:
            continue
        secs, outs = alternated({"scores": tr, "no_scores": tr}, lines, 1, args.repeats,
                                {"scores": {"with_scores": True}, "no_scores": {"with_scores": False}})
        compared(common, f"nmt greedy{name}, without scores", lines, secs, outs, "no_scores", "scores", "with_scores")


def bench_precision(full, listed, lines: list[str], args, common: dict) -> None:
    """``decoding.precision: bfloat16`` against float32 (the whole vocabulary, then the shortlist if
    ``listed``), alternated in one process: speed-up, outputs equal and, with ``--ref``, BLEU of both."""
    for name, float32 in (("", full), (", shortlist", listed)):
        if float32 is None:
            continue
        bfloat16 = variant(float32, precision="bfloat16")
        for beam in args.beams:
            secs, outs = alternated({"float32": float32, "bfloat16": bfloat16}, lines, beam, args.repeats)
            compared(common, f"{decoding_name(beam)}{name}, bfloat16", lines, secs, outs, "bfloat16", "float32",
                     "float32", **bleu_of(outs, args))


def bench_batch_sizes(translator, lines: list[str], args, common: dict) -> None:
    """Decoding at each of ``--batch-sizes`` against the run's ``decoding.batch_size``, alternated in one
    process (the same decoder; greedy without scores, as ``nmt translate`` prints text): speed-up and outputs
    equal. A batch of many sentences pads more in a small input and leaves the batches decoded at once
    unevenly loaded at the end; a small one multiplies smaller matrices."""
    default = translator.decoding.batch_size
    sized = {size: with_decoding(translator, batch_size=size) for size in dict.fromkeys([default, *args.batch_sizes])}
    for beam in args.beams:
        options = {size: {"with_scores": beam > 1} for size in sized}
        secs, outs = alternated(sized, lines, beam, args.repeats, options)
        for size in args.batch_sizes:
            compared(common, f"{decoding_name(beam)}, batch {size}", lines, secs, outs, size, default, "default",
                     batch_size=size, default_batch_size=default)


def bench_profile(full, listed, lines: list[str], work: Path, common: dict, top: int = 10) -> None:
    """Greedy decoding of ``lines`` without scores (``nmt translate``'s text output) under the profiler:
    float32 over the whole vocabulary, then bfloat16 over the shortlist if ``listed``. Prints the op
    time by op type (``top`` rows) and a summary: matmul share, attention share, and the bound."""
    import collections
    import shutil

    import tensorflow as tf

    setups = [("float32", full)] + ([("shortlist, bfloat16", variant(listed, precision="bfloat16"))] if listed else [])
    for name, tr in setups:
        tr.translate(lines[:64], with_scores=False)  # traced outside the trace
        logdir = work / "profile_translate"
        shutil.rmtree(logdir, ignore_errors=True)
        tf.profiler.experimental.start(str(logdir))
        start = time.perf_counter()
        tr.translate(lines, with_scores=False)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        events, threads, span_ms = trace_op_events(logdir)
        by_type: collections.Counter = collections.Counter()
        matmul = attention = 0.0  # op milliseconds
        for node, op_type, ms in events:
            by_type[op_type] += ms
            if "MatMul" in op_type:
                matmul += ms
            elif "additive_attention/" in node:
                attention += ms
        total = sum(by_type.values())
        # the threads' time from the first op to the last (not the profiler's start nor the text's encoding
        # before the first batch), idle included: idle would stay if the matmuls went
        thread_ms = span_ms * max(threads, 1)
        row = {**common, "bench": "translate_profile", "method": f"nmt greedy, {name}", "sentences": len(lines)}
        print(json.dumps({**row, "group": "summary", "threads": threads, "profiled_seconds": round(wall, 3),
                          "ops_span_seconds": round(span_ms / 1e3, 3),
                          "op_ms_per_sentence": round(total / len(lines), 3),
                          "op_share_of_thread_time": round(total / thread_ms, 3),
                          "matmul_share_of_thread_time": round(matmul / thread_ms, 3),
                          "attention_other_ops_share_of_thread_time": round(attention / thread_ms, 3),
                          "bound_if_matmuls_were_free": round(thread_ms / max(thread_ms - matmul, 1e-3), 2)}),
              flush=True)
        for op_type, ms in by_type.most_common(top):
            print(json.dumps({**row, "group": "op_type", "name": op_type, "share_of_op_time": round(ms / total, 3)}),
                  flush=True)


def bench_export(translator, lines: list[str], reference: dict, repeats: int, work: Path, common: dict) -> None:
    """Time the exported SavedModel against ``nmt translate`` (one row per beam size and batch order)."""
    try:
        import tensorflow_text  # noqa: F401
    except ImportError:
        print(json.dumps({**common, "method": "exported SavedModel", "skipped": "tensorflow-text not installed"}))
        return
    import tensorflow as tf

    from nmt.decoding import length_sorted_batches
    from nmt.export import SIGNATURE, export_model
    from nmt.normalize import normalize

    batch_size = translator.decoding.batch_size

    # nmt translate's batches (sentences sorted by source pieces), made by its own function.
    lengths = [len(ids) for ids in translator.src_vocab.encode([normalize(s, translator.config.data.lowercase)
                                                                for s in lines])]
    file_order = list(range(len(lines)))
    layouts = {"file order": [file_order[i:i + batch_size] for i in range(0, len(lines), batch_size)],
               "nmt translate's order": [rows.tolist() for rows in length_sorted_batches(lengths, batch_size)]}
    for beam, (nmt_secs, nmt_texts) in reference.items():
        out = export_model(translator.run_dir, work / f"export_beam{beam}", beam=beam, overwrite=True)
        serve = tf.saved_model.load(str(out)).signatures[SIGNATURE]
        for order_name, batches in layouts.items():
            serve(text=tf.constant([lines[i] for i in batches[0]]))  # warm-up
            times = []
            for _ in range(repeats):
                texts = [""] * len(lines)
                start = time.perf_counter()
                for rows in batches:
                    got = serve(text=tf.constant([lines[i] for i in rows]))["translations"].numpy()
                    for i, t in zip(rows, got):
                        texts[i] = t.decode("utf-8")
                times.append(time.perf_counter() - start)
            secs = statistics.median(times)
            same = sum(a == b for a, b in zip(texts, nmt_texts))
            print(json.dumps({**common, "method": f"exported SavedModel {'greedy' if beam == 1 else f'beam {beam}'}"
                              f", batches of {batch_size} in {order_name}",
                              "sentences_per_second": round(len(lines) / secs, 1),
                              "ratio_to_nmt_translate": round(nmt_secs / secs, 2),
                              "outputs_equal_to_nmt_translate": f"{same}/{len(lines)}",
                              "seconds_all": [round(t, 2) for t in times]}), flush=True)


if __name__ == "__main__":
    main()
