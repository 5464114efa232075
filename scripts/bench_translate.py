#!/usr/bin/env python
"""Translation speed of a trained run: compiled greedy and beam search against a per-step Python loop.

Figures (one JSON line each): sentences/s and target tokens/s for greedy and beam search over
``--src`` (model load excluded and included), and the baseline: the same model decoded one
sentence at a time by a Python loop that calls the Keras layers once per step (the seed
example's approach, without even its ``model.predict`` overhead), run on the first
``--baseline-sentences`` lines; its outputs are checked against the compiled greedy decoder.

    python scripts/bench_translate.py --model runs/multi30k_en_de --src ../shared/data/multi30k/test2016.en
    python scripts/bench_translate.py --quick      # trains a tiny model on the bundled sample first (< 1 minute)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

ROOT = Path(__file__).resolve().parent.parent


def quick_run(work: Path) -> tuple[Path, list[str]]:
    """Prepare the bundled sample and train a tiny model for a few steps."""
    from nmt.config import config_from_dict
    from nmt.prepare import prepare
    from nmt.training import train

    cfg = config_from_dict({
        "data": {"prepared_dir": str(work / "prepared_quick_translate"),
                 "train_tsv": str(ROOT / "data" / "fra-eng-sample.tsv.gz"), "dev_size": 100, "test_size": 100,
                 "sentencepiece": {"vocab_size": 500}},
        "model": {"embedding_dim": 32, "encoder_units": 32, "decoder_units": 64, "attention_units": 32,
                  "attentional_units": 64},
        "training": {"run_dir": str(work / "run_quick_translate"), "max_steps": 40, "validate_every": 10**6,
                     "validate_max_sentences": 10, "log_every": 100},
        "decoding": {"max_length_cap": 40}})
    prepare(cfg, overwrite=True, log=lambda s: None)
    train(cfg, overwrite=True, log=lambda s: None)
    return Path(cfg.training.run_dir), (Path(cfg.data.prepared_dir) / "test" / "src.txt").read_text().splitlines()


def python_loop_greedy(translator, sentence: str) -> list[int]:
    """The baseline: one sentence, one eager call of the decoder layers per step, argmax in Python."""
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
        y = int(np.argmax(model.logits(hidden).numpy()[0])) if t + 1 < limit else EOS_ID
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
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    args = parser.parse_args()
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
    greedy_rate = None
    for beam in args.beams:
        translator.translate(lines[:64], beam=beam)  # trace once (a compiled function per beam size)
        times, tokens = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = translator.translate(lines, beam=beam)
            times.append(time.perf_counter() - start)
            tokens = sum(t.tokens + 1 for t in result)  # + EOS
        secs = statistics.median(times)
        rate = len(lines) / secs
        if beam == 1:
            greedy_rate = rate
        print(json.dumps({**common, "method": f"nmt {'greedy' if beam == 1 else f'beam {beam}'}",
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


if __name__ == "__main__":
    main()
