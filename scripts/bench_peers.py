#!/usr/bin/env python
"""nmt side by side with JoeyNMT 2.3.0 and OpenNMT-tf 2.32.0: training tokens/s and greedy decoding speed.

Every toolkit gets the same data, the same model and the same threads:
- data: Multi30k en-de train, segmented once with nmt's 8k joint SentencePiece model and written as
  space-separated pieces, so all three see the same tokens and the same vocabulary;
- model: bidirectional GRU encoder 256 (per direction), GRU decoder 512, Bahdanau attention,
  embeddings 256, dropout 0.2, batch 64 sentences, Adam 1e-3, sentences up to 80 pieces;
- threads: OMP_NUM_THREADS / MKL_NUM_THREADS = --threads for all; TensorFlow intra- and inter-op
  threads = --threads (nmt by its config, OpenNMT-tf by TF_NUM_INTRAOP_THREADS/TF_NUM_INTEROP_THREADS);
  PyTorch takes its intra-op threads from OMP_NUM_THREADS. nmt trains with its default layout of
  those threads (training.threads = --threads, parallel_parts = auto: 2 parts of each batch side by
  side x 1 intra-op thread for --threads 2, the same update as the whole batch), and translates with
  its default layout of those threads, several batches at once (decoding.cpu_threads = --threads,
  parallel_batches = auto: 4 batches x 1 intra-op thread for --threads 2), and once more one batch at
  a time over all of them (--parallel-batches 1: the peers' layout), reported as "nmt (one batch at a
  time)". The ``nmt-bf16`` row trains the same model with ``training.precision: bfloat16`` (the step's
  matmuls in bfloat16 on CPUs with AVX-512 BF16 or AMX, everything else float32; opt-in, not nmt's
  default) and decodes as the ``nmt`` row does; the ``nmt-lazy`` row trains it with
  ``training.optimizer: lazy_adam`` (Adam that updates only the embedding and output rows a batch's
  sparse gradients touch, as OpenNMT-tf's LazyAdam; opt-in, not nmt's default); the ``nmt-tfops`` row
  trains and decodes with ``NMT_FUSED_KERNELS=0`` (the attention on TensorFlow's ops instead of nmt's
  fused CPU kernel, nmt/model/fused.py: what nmt does without a C++ compiler). The peers' TensorFlow
  keeps its own default for oneDNN (on with AVX-512 and the like, off on AVX2-only CPUs; nmt always turns
  it on); the ``opennmt-tf-onednn`` row runs OpenNMT-tf with ``TF_ENABLE_ONEDNN_OPTS=1`` as well, for
  CPUs where that default is off.

Each repeat trains every toolkit in turn (alternated, so machine noise falls on all of them) for
``--warmup + --steps`` steps and reads the toolkit's own tokens/s log lines after the warm-up
(JoeyNMT "Tokens per Sec", OpenNMT-tf "tokens/s (... target)", nmt metrics.jsonl), all counting target
tokens with EOS. After training, each toolkit greedy-decodes test2016 (1,000 sentences, --decode-copies
times over in one input, 2 by default, batches of
64) with the checkpoint it just wrote, made to run exactly 30 decoder steps per sentence (minimum
= maximum output length: JoeyNMT min/max_output_length 30, OpenNMT-tf minimum/maximum_decoding_length
30, nmt decoding.min_length 29 + EOS), so that young models that stop early or never stop do the
same work. JoeyNMT 2.3.0 does not pass its min_output_length on to its search, so the script runs
its translate command through a small driver that does (JOEY_TRANSLATE below) and counts its decoder
steps: the run stops with an error unless JoeyNMT ran exactly 30 per batch. Decoding time with
model load excluded is (median wall time for test2016) - (median wall time for a one-line input),
the two alternated --decode-repeats times, the same rule for all; output lengths are printed as a
check. As a cross-check the median lines also give each toolkit's own figure where it has one
(``own_greedy_sentences_per_second``): JoeyNMT's "Generation took", and nmt's ``translate
--report-time`` for test2016 less for the one line (its own clock starts after the model is loaded,
so process start-up noise is left out; the difference also leaves out the decoder's tracing on the
first batch, about 1.5 s per process). nmt's row is decoded a second time over a lexical shortlist
(``nmt translate --shortlist``, same checkpoint, same forced 30 steps) and reported as "nmt (shortlist
decoding)", and with bfloat16 matmuls (``--precision bfloat16``, with and without the shortlist); the peers
always decode over the whole vocabulary (neither has a shortlist; OpenNMT's vocabulary map
belongs to its CTranslate2 engine, not to OpenNMT-tf). ``--nmt-variants`` chooses which of these
other decodings run (all by default; each costs 2 x --decode-repeats processes a repeat).

The peers are installed from PyPI into their own virtual environments under --venvs
(created on first use, several GB for PyTorch and TensorFlow 2.13):
    JoeyNMT:    pip install torch==2.13.0 && pip install joeynmt==2.3.0 importlib_metadata
    OpenNMT-tf: pip install tensorflow==2.13.1 opennmt-tf==2.32.0

    python scripts/bench_peers.py                          # 3 repeats, 100 warm-up + 200 measured steps
    python scripts/bench_peers.py --repeats 5 --toolkits nmt joeynmt
    python scripts/bench_peers.py --toolkits nmt nmt-bf16 opennmt-tf   # nmt-bf16: training.precision bfloat16
    python scripts/bench_peers.py --toolkits nmt nmt-lazy opennmt-tf   # nmt-lazy: training.optimizer lazy_adam
    python scripts/bench_peers.py --toolkits nmt opennmt-tf opennmt-tf-onednn  # OpenNMT-tf with oneDNN forced on
    python scripts/bench_peers.py --nmt-variants shortlist     # nmt decoded 2 ways, not 5: a shorter repeat
    python scripts/bench_peers.py --combine bench_out/peers_a.jsonl bench_out/peers_b.jsonl  # medians over both
Prints one JSON line per measurement, then medians as JSON lines and a Markdown table. ``--combine`` runs
nothing: it pools the per-repeat lines of saved outputs (runs cut short or made in parts, on the same
machine with the same threads and data) and prints the medians over all their repeats the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import REFERENCE_MODEL, prepared_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_LEN = 80      # training sentences up to this many pieces
DECODE_STEPS = 30  # every toolkit runs exactly this many greedy decoder steps per sentence
BATCH = 64

ONMT_MODEL = '''"""The reference model for OpenNMT-tf (written by nmt's scripts/bench_peers.py)."""
import opennmt
import tensorflow as tf
import tensorflow_addons as tfa


class ReferenceGRU(opennmt.models.SequenceToSequence):
    def __init__(self):
        super().__init__(
            source_inputter=opennmt.inputters.WordEmbedder(embedding_size=256),
            target_inputter=opennmt.inputters.WordEmbedder(embedding_size=256),
            encoder=opennmt.encoders.RNNEncoder(
                num_layers=1, num_units=256, bidirectional=True, dropout=0.2,
                reducer=opennmt.layers.ConcatReducer(), cell_class=tf.keras.layers.GRUCell),
            decoder=opennmt.decoders.AttentionalRNNDecoder(
                num_layers=1, num_units=512, bridge_class=opennmt.layers.DenseBridge,
                attention_mechanism_class=tfa.seq2seq.BahdanauAttention,
                cell_class=tf.keras.layers.GRUCell, dropout=0.2))


model = ReferenceGRU
'''


# JoeyNMT 2.3.0 reads testing.min_output_length and logs it, but predict() never passes it on to
# search(), so its greedy loop stops as soon as every sentence of a batch has produced EOS. This
# driver runs `joeynmt translate CONFIG` with the configured value forwarded, and counts the decoder
# steps (calls of the model with return_type="decode") so the script can check the work done.
JOEY_TRANSLATE = '''"""`joeynmt translate CONFIG`, min_output_length forwarded (written by nmt's bench_peers.py)."""
import json
import sys

import yaml

import joeynmt.model
import joeynmt.prediction

config = sys.argv[1]
with open(config) as f:
    min_output_length = yaml.safe_load(f)["testing"]["min_output_length"]
count = {"batches": 0, "decoder_steps": 0}
search, forward = joeynmt.prediction.search, joeynmt.model.Model.forward


def search_with_min_length(**kwargs):
    count["batches"] += 1
    return search(**kwargs, min_output_length=min_output_length)


def counting_forward(self, *args, return_type=None, **kwargs):
    count["decoder_steps"] += return_type == "decode"
    return forward(self, *args, return_type=return_type, **kwargs)


joeynmt.prediction.search, joeynmt.model.Model.forward = search_with_min_length, counting_forward
from joeynmt.__main__ import main  # noqa: E402

sys.argv = ["joeynmt", "translate", config]
main()
print("bench_peers decoder steps " + json.dumps(count), file=sys.stderr)
'''

def run(cmd: list[str], env: dict, log: Path, stdin: Path | None = None, stdout: Path | None = None) -> float:
    """Run a command, its output appended to ``log`` (stdout to ``stdout`` if given); returns wall
    seconds. Fails loudly."""
    start = time.perf_counter()
    with open(log, "a") as err, open(stdout or os.devnull, "w") as out, open(stdin or os.devnull) as inp:
        proc = subprocess.run(cmd, env=env, stdout=out if stdout else err, stderr=err, stdin=inp)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench_peers: {' '.join(cmd[:3])}... failed (exit {proc.returncode}); see {log}")
    return seconds


def decode_time(full: Callable[[], float], one: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Decoding time with model load excluded: ``(median wall time for test2016 - median wall time for a
    one-line input, the latter)``, the two runs alternated ``repeats`` times (one pair alone is at
    the mercy of this machine's noise: the difference of two ~10 s process times)."""
    fulls, ones = [], []
    for _ in range(repeats):
        fulls.append(full())
        ones.append(one())
    return statistics.median(fulls) - statistics.median(ones), statistics.median(ones)


def own_decode_seconds(log: str, lines: int, repeats: int) -> float | None:
    """nmt's own decoding time for ``lines`` lines from the ``nmt translate --report-time`` reports in ``log``:
    the median of the last ``repeats`` reports for ``lines`` lines less the median of the last ``repeats``
    for one line (None if either is missing)."""
    own: dict[int, list[float]] = {lines: [], 1: []}
    for n, sec in re.findall(r"translated ([\d,]+) lines? \(.*?\) in ([\d.]+) s", log):
        own.get(int(n.replace(",", "")), []).append(float(sec))
    full, one = own[lines][-repeats:], own[1][-repeats:]
    return statistics.median(full) - statistics.median(one) if full and one else None


def thread_env(threads: int) -> dict:
    """The environment every toolkit runs in: the same threads for all, and TensorFlow's own choice of
    oneDNN (``TF_ENABLE_ONEDNN_OPTS`` unset: on for CPUs with AVX-512 and the like, off on AVX2-only
    ones; nmt sets it on for itself, the ``opennmt-tf-onednn`` row does for OpenNMT-tf)."""
    env = dict(os.environ)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
                "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    return env


def ensure_venv(path: Path, packages: list[list[str]]) -> Path:
    """Create a virtual environment with the given pip install steps; returns its python."""
    python = path / "bin" / "python"
    if (path / ".complete").is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    for step in packages:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True)
    (path / ".complete").write_text("ok\n")
    return python


def write_piece_data(prep: Path, out: Path, copies: int = 1) -> dict:
    """Train, dev (first 100 of val) and test2016 as space-separated pieces; one shared vocab file;
    the decoding input ``decode.en`` (pieces) and ``decode_raw.en`` (text): test2016 ``copies`` times."""
    from nmt.dataset import PreparedData

    data = PreparedData(prep)
    src_vocab, tgt_vocab = data.vocabs()
    out.mkdir(parents=True, exist_ok=True)
    train = data.split("train")

    def dump(ids, offsets, vocab, path: Path, limit: int | None = None) -> None:
        n = len(offsets) - 1 if limit is None else min(limit, len(offsets) - 1)
        with open(path, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(" ".join(vocab.pieces(ids[offsets[i]:offsets[i + 1]])) + "\n")

    dump(train.src_ids, train.src_offsets, src_vocab, out / "train.en")
    dump(train.tgt_ids, train.tgt_offsets, tgt_vocab, out / "train.de")
    for name, split, limit in (("dev", "dev", 100), ("test", "test", None)):
        s = data.split(split)
        dump(s.src_ids, s.src_offsets, src_vocab, out / f"{name}.en", limit)
        dump(s.tgt_ids, s.tgt_offsets, tgt_vocab, out / f"{name}.de", limit)
    (out / "one.en").write_text((out / "test.en").read_text(encoding="utf-8").splitlines()[0] + "\n")
    pieces = [tgt_vocab.sp.id_to_piece(i) for i in range(4, len(tgt_vocab))]
    (out / "vocab.joey.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    (out / "vocab.onmt.txt").write_text("\n".join(["<blank>", "<s>", "</s>", *pieces]) + "\n", encoding="utf-8")
    (out / "decode.en").write_text((out / "test.en").read_text(encoding="utf-8") * copies, encoding="utf-8")
    (out / "decode_raw.en").write_text("".join(line + "\n" for line in data.text("test", "src")) * copies,
                                       encoding="utf-8")
    (out / "one_raw.en").write_text(data.text("test", "src")[0] + "\n", encoding="utf-8")
    return {"vocab": len(tgt_vocab), "train_sentences": len(train),
            "decode_sentences": len(data.split("test")) * copies}


def median_after(values: list[tuple[int, float]], warmup: int) -> float:
    kept = [v for step, v in values if step > warmup]
    if not kept:
        raise SystemExit("bench_peers: no tokens/s lines after the warm-up; raise --steps")
    return statistics.median(kept)


def count_pieces(path: Path) -> float:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(len(line.split()) for line in lines) / max(1, len(lines))


# --- nmt -------------------------------------------------------------------------------------

#: the ways the ``nmt`` row's checkpoint is decoded again (``--nmt-variants``): the row's label and the
#: ``nmt translate`` options. The shortlist (``--shortlist``) is built from the training data; one batch at a
#: time over all --threads is the peers' thread layout (``--parallel-batches 1``); bfloat16 multiplies in
#: bfloat16 (fast only with AVX-512 BF16 or AMX; emulated, and slower, elsewhere).
NMT_DECODING_VARIANTS = {
    "shortlist": ("shortlist decoding", ["--shortlist"]),
    "one-batch": ("one batch at a time", ["--parallel-batches=1"]),
    "bf16": ("bfloat16 decoding", ["--precision=bfloat16"]),
    "shortlist-bf16": ("shortlist, bfloat16", ["--shortlist", "--precision=bfloat16"]),
}


def nmt_bench(prep: Path, work: Path, placement: str, num_sampled: int, steps: int, warmup: int,
              threads: int, env: dict, decode_repeats: int, variants: tuple[str, ...] = (),
              precision: str = "float32", optimizer: str = "adam", tag: str = "") -> dict:
    """Train nmt for ``warmup + steps`` steps (``precision``, ``optimizer``: ``training.precision`` and
    ``training.optimizer``) and greedy-decode test2016 with the last checkpoint, then once per name in
    ``variants`` (keys of ``NMT_DECODING_VARIANTS``) another way: ``result["variants"]``. ``tag`` names
    the run directory apart (for a run that differs by ``env`` only)."""
    import yaml

    name = (f"nmt_{placement}_{num_sampled}" + ("" if precision == "float32" else f"_{precision}")
            + ("" if optimizer == "adam" else f"_{optimizer}") + (f"_{tag}" if tag else ""))
    run_dir = work / name
    cfg = {"data": {"prepared_dir": str(prep)},
           "model": {**REFERENCE_MODEL, "attention_placement": placement},
           "training": {"run_dir": str(run_dir), "batch_size": BATCH, "num_sampled": num_sampled,
                        "learning_rate": 0.001, "max_steps": warmup + steps, "log_every": 10,
                        "validate_every": 10**8, "validate_max_sentences": 1, "checkpoint_every": 10**8,
                        "threads": threads, "precision": precision, "optimizer": optimizer},
           "decoding": {"beam_size": 1, "max_length_a": 0.0, "max_length_b": DECODE_STEPS,
                        "min_length": DECODE_STEPS - 1, "batch_size": BATCH, "cpu_threads": threads}}
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = work / f"{name}.log"
    nmt = [sys.executable, "-c", "from nmt.cli import main; main()"]
    run([*nmt, "train", "--config", str(cfg_path), "--overwrite"], env, log)
    from nmt.training import read_metrics

    tps = median_after([(r["step"], r["tokens_per_second"]) for r in read_metrics(run_dir, "train")], warmup)
    result = {"train_tokens_per_second": tps}
    pieces = work / "pieces"
    translate = [*nmt, "translate", "--model", str(run_dir), "--checkpoint", "last", "--beam", "1", "--pieces",
                 "--report-time"]
    test_lines = len((pieces / "decode_raw.en").read_text(encoding="utf-8").splitlines())

    def one_line(cmd: list[str]) -> float:
        return run([*cmd, "--input", str(pieces / "one_raw.en"), "--output", str(work / "one.hyp")], env, log)

    def timed(cmd: list[str], hyp: Path) -> tuple[float, float, float, float | None]:
        """``(decoding seconds, load seconds, mean output pieces, nmt's own decoding seconds)`` of ``cmd``
        on test2016. The last is a cross-check of the subtraction (as JoeyNMT's "Generation took"):
        ``nmt translate --report-time``'s own time after loading, for test2016 less for the one line
        (medians of the same runs), so that neither process start-up nor the decoder's tracing on
        the first batch (about 1.5 s, in both runs) counts."""
        seconds, load = decode_time(lambda: run([*cmd, "--input", str(pieces / "decode_raw.en"), "--output", str(hyp)],
                                                env, log), lambda: one_line(cmd), decode_repeats)
        return seconds, load, count_pieces(hyp), own_decode_seconds(log.read_text(), test_lines, decode_repeats)

    seconds, load, out_pieces, own = timed(translate, work / f"{name}.hyp")
    result.update(decode_seconds=seconds, load_seconds=load, hyp_pieces=out_pieces, own_decode_seconds=own)
    if variants:
        if any("--shortlist" in NMT_DECODING_VARIANTS[v][1] for v in variants):
            one_line([*translate, "--shortlist"])  # builds the run's shortlist table (about 1 s), untimed
        result["variants"] = {}
        for variant in variants:
            label, flags = NMT_DECODING_VARIANTS[variant]
            suffix = variant.replace("-", "_")
            seconds, _, out_pieces, own = timed([*translate, *flags], work / f"nmt_{placement}_{suffix}.hyp")
            result["variants"][label] = {"decode_seconds": round(seconds, 3), "hyp_pieces": out_pieces,
                                         "own_decode_seconds": own}
    return result


# --- JoeyNMT ---------------------------------------------------------------------------------

def joey_config(work: Path, steps: int, threads: int) -> dict:
    pieces = work / "pieces"
    side = {"level": "word", "lowercase": False, "normalize": False, "max_length": MAX_LEN, "min_length": 1,
            "voc_file": str(pieces / "vocab.joey.txt"), "tokenizer_cfg": {"pretokenizer": "none"}}
    return {
        "name": "bench", "joeynmt_version": "2.3.0", "model_dir": str(work / "joey_run"), "use_cuda": False,
        "fp16": False, "num_workers": 0,
        "data": {"train": str(pieces / "train"), "dev": str(pieces / "dev"), "test": str(pieces / "test"),
                 "dataset_type": "plain", "src": {"lang": "en", **side}, "trg": {"lang": "de", **side}},
        "testing": {"beam_size": 1, "batch_size": BATCH, "batch_type": "sentence", "eval_metrics": ["bleu"],
                    "max_output_length": DECODE_STEPS, "min_output_length": DECODE_STEPS},
        "training": {"random_seed": 42, "optimizer": "adam", "learning_rate": 0.001, "clip_grad_norm": 1.0,
                     "batch_size": BATCH, "batch_type": "sentence", "normalization": "tokens",
                     "epochs": 1000, "updates": steps, "validation_freq": steps, "logging_freq": 10,
                     "early_stopping_metric": "loss", "overwrite": True,
                     # constant rate (2.3.0's "plateau" passes an argument torch 2.13 no longer takes)
                     "scheduling": "exponential", "decrease_factor": 1.0, "shuffle": True, "keep_best_ckpts": 1,
                     "print_valid_sents": []},
        "model": {"initializer": "xavier_uniform", "bias_initializer": "zeros", "embed_initializer": "normal",
                  "embed_init_weight": 0.1, "tied_embeddings": False, "tied_softmax": False,
                  "encoder": {"type": "recurrent", "rnn_type": "gru", "hidden_size": 256, "bidirectional": True,
                              "num_layers": 1, "dropout": 0.2, "embeddings": {"embedding_dim": 256}},
                  "decoder": {"type": "recurrent", "rnn_type": "gru", "hidden_size": 512, "num_layers": 1,
                              "dropout": 0.2, "hidden_dropout": 0.2, "attention": "bahdanau",
                              "input_feeding": True, "init_hidden": "bridge",
                              "embeddings": {"embedding_dim": 256}}},
    }


def joey_bench(python: Path, work: Path, steps: int, warmup: int, threads: int, env: dict,
               decode_repeats: int) -> dict:
    import yaml

    cfg = joey_config(work, warmup + steps, threads)
    cfg_path = work / "joey.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = work / "joey.log"
    shutil.rmtree(work / "joey_run", ignore_errors=True)
    run([str(python), "-m", "joeynmt", "train", str(cfg_path), "--skip-test"], env, log)
    text = (work / "joey_run" / "train.log").read_text()
    found = [(int(s), float(t)) for s, t in re.findall(r"Step:\s+(\d+),.*Tokens per Sec:\s+([\d.]+)", text)]
    result = {"train_tokens_per_second": median_after(found, warmup)}
    ckpts = sorted((work / "joey_run").glob("*.ckpt"))
    if not ckpts:
        raise SystemExit(f"bench_peers: JoeyNMT wrote no checkpoint; see {log}")
    cfg["testing"]["load_model"] = str(ckpts[-1])
    cfg_path.write_text(yaml.safe_dump(cfg))
    hyp = work / "joey.hyp"
    driver = work / "joey_translate.py"
    driver.write_text(JOEY_TRANSLATE)
    cmd = [str(python), str(driver), str(cfg_path)]
    # translate's -o fails in 2.3.0 ('BaseConfig' object has no attribute 'n_best'): read stdout instead

    def full() -> float:
        seconds = run(cmd, env, log, stdin=work / "pieces" / "decode.en", stdout=hyp)
        count = json.loads(re.findall(r"bench_peers decoder steps (.*)", log.read_text())[-1])
        if count["decoder_steps"] != DECODE_STEPS * count["batches"]:
            sys.exit(f"bench_peers: JoeyNMT ran {count['decoder_steps']} decoder steps in {count['batches']} "
                     f"batches, not {DECODE_STEPS} each; see {log}")
        return seconds

    seconds, load = decode_time(full, lambda: run(cmd, env, log, stdin=work / "pieces" / "one.en",
                                                  stdout=work / "joey_one.hyp"), decode_repeats)
    # JoeyNMT's own "Generation took" of the test2016 runs (every other line, the one-line runs between)
    gen = re.findall(r"Generation took ([\d.]+)\[sec\]", (work / "joey_run" / "translate.log").read_text())
    own = [float(g) for g in gen[-2 * decode_repeats::2]]
    result.update(decode_seconds=seconds, load_seconds=load, hyp_pieces=count_pieces(hyp),
                  own_generation_seconds=statistics.median(own) if own else None)
    return result


# --- OpenNMT-tf ------------------------------------------------------------------------------

def onmt_config(run_dir: Path, pieces: Path, max_step: int, save_every: int, summary_every: int,
                min_length: int, max_length: int, keep: int = 8) -> dict:
    """OpenNMT-tf's run configuration for the reference model on ``pieces`` (Adam 1e-3, batches of ``BATCH``
    sentences, greedy decoding of ``min_length`` to ``max_length`` pieces; ``keep`` checkpoints kept)."""
    params = {"optimizer": "Adam", "learning_rate": 0.001, "beam_width": 1, "maximum_decoding_length": max_length}
    if min_length:
        params["minimum_decoding_length"] = min_length
    return {"model_dir": str(run_dir),
            "data": {"train_features_file": str(pieces / "train.en"), "train_labels_file": str(pieces / "train.de"),
                     "source_vocabulary": str(pieces / "vocab.onmt.txt"),
                     "target_vocabulary": str(pieces / "vocab.onmt.txt")},
            "params": params,
            "train": {"batch_size": BATCH, "batch_type": "examples", "max_step": max_step,
                      "save_checkpoints_steps": save_every, "keep_checkpoint_max": keep,
                      "save_summary_steps": summary_every,
                      "maximum_features_length": MAX_LEN, "maximum_labels_length": MAX_LEN},
            "infer": {"batch_size": BATCH, "batch_type": "examples"}}


def onmt_command(python: Path, work: Path, cfg: dict, log: Path) -> list[str]:
    """Write the model file and ``cfg`` into ``work``, empty ``cfg``'s model directory and ``log``; returns
    the ``onmt-main`` command line up to its run type (``train``, ``infer``)."""
    import yaml

    model_file = work / "onmt_model.py"
    model_file.write_text(ONMT_MODEL)
    shutil.rmtree(cfg["model_dir"], ignore_errors=True)
    cfg_path = work / "onmt.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log.write_text("")
    return [str(python), "-m", "opennmt.bin.main", "--model", str(model_file), "--config", str(cfg_path)]


def onmt_bench(python: Path, work: Path, steps: int, warmup: int, threads: int, env: dict,
               decode_repeats: int) -> dict:
    pieces = work / "pieces"
    run_dir = work / "onmt_run"
    cfg = onmt_config(run_dir, pieces, max_step=warmup + steps, save_every=warmup + steps, summary_every=10,
                      min_length=DECODE_STEPS, max_length=DECODE_STEPS)
    log = work / "onmt.log"
    onmt_main = onmt_command(python, work, cfg, log)
    run([*onmt_main, "train"], env, log)
    found = [(int(s), float(t)) for s, t in
             re.findall(r"Step = (\d+) ;.*?tokens/s = \d+ \(.*?(\d+) target\)", log.read_text())]
    result = {"train_tokens_per_second": median_after(found, warmup)}
    hyp = work / "onmt.hyp"
    cmd = [*onmt_main, "infer"]
    seconds, load = decode_time(
        lambda: run([*cmd, "--features_file", str(pieces / "decode.en"), "--predictions_file", str(hyp)], env, log),
        lambda: run([*cmd, "--features_file", str(pieces / "one.en"), "--predictions_file",
                     str(work / "onmt_one.hyp")], env, log),
        decode_repeats)
    result.update(decode_seconds=seconds, load_seconds=load, hyp_pieces=count_pieces(hyp))
    return result


def markdown_table(table: dict[str, dict]) -> str:
    """The medians as a Markdown table, with nmt's (post, sampled) speed-up over each row when nmt ran.

    A row with ``training_of`` (decoded differently, trained in the row it names) has no training figures.
    """
    base = table.get("nmt")
    lines = ["| toolkit | train target tok/s | greedy test2016 sent/s | load s | mean output pieces |"
             + (" nmt (post, sampled) speed-up train / decode |" if base else ""),
             "|---|---|---|---|---|" + ("---|" if base else "")]
    for name, row in table.items():
        derived = "training_of" in row
        train = f"(as {row['training_of']})" if derived else f"{row['train_tokens_per_second']:,}"
        ratio = ""
        if base:
            train_ratio = "-" if derived else f"{base['train_tokens_per_second'] / row['train_tokens_per_second']:.2f}x"
            decode_ratio = base["greedy_sentences_per_second"] / row["greedy_sentences_per_second"]
            ratio = f" {train_ratio} / {decode_ratio:.2f}x |"
        lines.append(f"| {name} | {train} | {row['greedy_sentences_per_second']:,} | "
                     f"{row['load_seconds']} | {row['hyp_pieces']} |{ratio}")
    return "\n".join(lines)


def print_medians(results: dict[str, list[dict]], test_sentences: int) -> None:
    """Print each toolkit's medians over its repeats (JSON lines; a line per decoding variant) and the table."""
    def own_rate(rows: list[dict], key: str) -> dict:
        """The toolkit's own decoding speed (nmt's --report-time, JoeyNMT's "Generation took"), a cross-check."""
        own = [r.get(key) for r in rows]
        if None in own:
            return {}
        return {"own_greedy_sentences_per_second": round(test_sentences / statistics.median(own))}

    table = {}
    for name, rows in results.items():
        tps = statistics.median(r["train_tokens_per_second"] for r in rows)
        dec = statistics.median(r["decode_seconds"] for r in rows)
        table[name] = {"train_tokens_per_second": round(tps),
                       "greedy_sentences_per_second": round(test_sentences / dec),
                       "load_seconds": round(statistics.median(r["load_seconds"] for r in rows), 1),
                       "hyp_pieces": round(statistics.median(r["hyp_pieces"] for r in rows), 1)}
        own = own_rate(rows, "own_decode_seconds") or own_rate(rows, "own_generation_seconds")
        print(json.dumps({"toolkit": name, "median_of": len(rows), **table[name], **own}), flush=True)
        labels = dict.fromkeys(label for r in rows for label in r.get("variants", {}))  # in order, once each
        for label in labels:  # the same runs, decoded another way (--combine: by the runs that did)
            decoded = [r["variants"][label] for r in rows if label in r.get("variants", {})]
            dec = statistics.median(v["decode_seconds"] for v in decoded)
            table[f"{name} ({label})"] = {
                **table[name], "greedy_sentences_per_second": round(test_sentences / dec),
                "hyp_pieces": round(statistics.median(v["hyp_pieces"] for v in decoded), 1),
                "training_of": name}
            own = own_rate(decoded, "own_decode_seconds")
            print(json.dumps({"toolkit": f"{name} ({label})", "median_of": len(decoded),
                              **table[f"{name} ({label})"], **own}), flush=True)
    print("\n" + markdown_table(table))


def run_identity(header: dict) -> dict:
    """What must agree between the runs --combine pools: the same machine, threads, data and decoding work."""
    return {**{f"machine {key}": header["machine"].get(key) for key in ("cpu_family_model", "cores")},
            **{key: header.get(key) for key in ("threads", "vocab", "train_sentences", "decode_sentences")}}


def combine_runs(paths: list[Path]) -> tuple[dict, dict[str, list[dict]]]:
    """The header and the per-repeat lines of several saved outputs of this script, pooled by toolkit.

    Raises ``ValueError`` (naming the file, and the line where it applies) for a file that is not such an
    output, or one whose machine, threads or data differ from the first file's.
    """
    header: dict | None = None
    results: dict[str, list[dict]] = {}
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
        rows = []
        for number, line in enumerate(lines, 1):
            if line.startswith("{"):
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
        first = next((row for _, row in rows if isinstance(row.get("machine"), dict)), None)
        if first is None:
            raise ValueError(f"{path}: no machine line (not an output of bench_peers.py)")
        if header is None:
            header = first
        expected, found = run_identity(header), run_identity(first)
        for key, value in found.items():
            if value != expected[key]:
                raise ValueError(f"{path}: {key} {value!r} differs from {expected[key]!r} in {paths[0]}")
        repeats = [(number, row) for number, row in rows if "repeat" in row and "toolkit" in row]
        if not repeats:
            raise ValueError(f"{path}: no per-repeat lines (did bench_peers.py finish a repeat?)")
        for number, row in repeats:
            missing = [k for k in ("train_tokens_per_second", "decode_seconds", "load_seconds", "hyp_pieces")
                       if not isinstance(row.get(k), (int, float))]
            if missing:
                raise ValueError(f"{path}, line {number}: {row['toolkit']} has no number for {missing[0]}")
            results.setdefault(row["toolkit"], []).append(row)
    return header, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="measured steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-repeats", type=int, default=3,
                        help="alternated (test2016, one line) decoding pairs per toolkit and repeat; medians")
    parser.add_argument("--decode-copies", type=int, default=2,
                        help="decode test2016 this many times over in one run (longer runs: steadier times; "
                             "with 1, nmt's 1-3 s of decoding is within the noise of two process start-ups)")
    parser.add_argument("--toolkits", nargs="+", default=["nmt", "nmt-bf16", "nmt-feed", "nmt-full", "joeynmt",
                                                                 "opennmt-tf"],
                        choices=["nmt", "nmt-bf16", "nmt-lazy", "nmt-tfops", "nmt-feed", "nmt-full", "joeynmt",
                                 "opennmt-tf", "opennmt-tf-onednn"])
    parser.add_argument("--nmt-variants", nargs="*", default=list(NMT_DECODING_VARIANTS),
                        choices=list(NMT_DECODING_VARIANTS), metavar="VARIANT",
                        help="the other ways the nmt row's checkpoint is decoded, each its own row: "
                             f"{', '.join(NMT_DECODING_VARIANTS)} (default: all; none after the option: "
                             "none, which shortens a repeat most)")
    parser.add_argument("--venvs", default=str(ROOT / "bench_out" / "venvs"))
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "peers"))
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSONL",
                        help="run nothing: pool the per-repeat lines of these saved outputs (same machine, "
                             "threads and data) and print the medians over all their repeats and the table")
    args = parser.parse_args()
    if args.combine:
        try:
            header, results = combine_runs(args.combine)
        except ValueError as err:
            parser.exit(2, f"bench_peers.py: error: {err}\n")
        print(json.dumps({**header, "combined": [str(p) for p in args.combine]}), flush=True)
        print_medians(results, header["decode_sentences"])
        return
    for name in ("repeats", "steps", "decode_repeats", "decode_copies"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    from nmt.sysinfo import machine

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    venvs = Path(args.venvs)
    prep = prepared_dir(Path(args.work).parent, 8000, quick=False)
    info = write_piece_data(prep, work / "pieces", args.decode_copies)
    env = thread_env(args.threads)
    pythons = {}
    if "joeynmt" in args.toolkits:
        pythons["joeynmt"] = ensure_venv(venvs / "joeynmt",
                                         [["torch==2.13.0"], ["joeynmt==2.3.0", "importlib_metadata"]])
    if {"opennmt-tf", "opennmt-tf-onednn"} & set(args.toolkits):
        pythons["opennmt-tf"] = ensure_venv(venvs / "opennmt-tf", [["tensorflow==2.13.1", "opennmt-tf==2.32.0"]])
    print(json.dumps({"machine": machine(), "threads": args.threads, **info}), flush=True)

    common = (args.steps, args.warmup, args.threads, env, args.decode_repeats)
    runners = {
        "nmt": lambda: nmt_bench(prep, work, "post", 1024, *common, variants=tuple(args.nmt_variants)),
        "nmt-feed": lambda: nmt_bench(prep, work, "feed", 1024, *common),
        "nmt-full": lambda: nmt_bench(prep, work, "post", 0, *common),
        "nmt-bf16": lambda: nmt_bench(prep, work, "post", 1024, *common, precision="bfloat16"),
        "nmt-lazy": lambda: nmt_bench(prep, work, "post", 1024, *common, optimizer="lazy_adam"),
        "nmt-tfops": lambda: nmt_bench(prep, work, "post", 1024, args.steps, args.warmup, args.threads,
                                       {**env, "NMT_FUSED_KERNELS": "0"}, args.decode_repeats, tag="tfops"),
        "joeynmt": lambda: joey_bench(pythons["joeynmt"], work, *common),
        "opennmt-tf": lambda: onmt_bench(pythons["opennmt-tf"], work, *common),
        "opennmt-tf-onednn": lambda: onmt_bench(pythons["opennmt-tf"], work, args.steps, args.warmup, args.threads,
                                                {**env, "TF_ENABLE_ONEDNN_OPTS": "1"}, args.decode_repeats),
    }
    results: dict[str, list[dict]] = {name: [] for name in args.toolkits}
    for repeat in range(args.repeats):
        for name in args.toolkits:
            r = runners[name]()
            r = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
            results[name].append(r)
            print(json.dumps({"toolkit": name, "repeat": repeat, **r}), flush=True)

    print_medians(results, info["decode_sentences"])


if __name__ == "__main__":
    main()
