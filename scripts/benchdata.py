"""Data the benchmark scripts share: Multi30k en-de (or the bundled sample for --quick), prepared once.

Multi30k is read from ``../shared/data/multi30k`` next to the repository (train.en, train.de,
val.*, test2016.*), or from the folder named by the environment variable ``NMT_MULTI30K``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nmt.config import config_from_dict
from nmt.prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
# Multi30k en-de as a ``data`` config section: the key each file fills (val as dev, test2016 as test).
MULTI30K_FILES = {"train_src": "train.en", "train_tgt": "train.de", "dev_src": "val.en", "dev_tgt": "val.de",
                  "test_src": "test2016.en", "test_tgt": "test2016.de"}

# The reference model of the speed issues: bi-GRU 256 per direction, GRU 512, Bahdanau attention, embeddings 256.
REFERENCE_MODEL = {"embedding_dim": 256, "encoder_units": 256, "decoder_units": 512, "attention_units": 512,
                   "attentional_units": 512, "dropout": 0.2}
# The shape of the quick modes' model (on the bundled sample, vocabulary 500).
TINY_MODEL = {"embedding_dim": 32, "encoder_units": 32, "decoder_units": 64, "attention_units": 32,
              "attentional_units": 64}


def multi30k_dir() -> Path:
    """The Multi30k folder: ``$NMT_MULTI30K``, else ``../shared/data/multi30k`` next to the repository."""
    return Path(os.environ.get("NMT_MULTI30K") or ROOT.parent / "shared" / "data" / "multi30k")


def multi30k_data() -> tuple[dict[str, str], Path | None]:
    """Multi30k en-de as a ``data`` config section (train, val as dev, test2016 as test), and the
    first of its files that is missing (None: all there)."""
    m30k = multi30k_dir()
    paths = {key: m30k / name for key, name in MULTI30K_FILES.items()}
    missing = next((path for path in paths.values() if not path.is_file()), None)
    return {key: str(path) for key, path in paths.items()}, missing


def prepared_dir(work: Path, vocab: int, quick: bool) -> Path:
    """``work/prepared_v<vocab>``: Multi30k en-de (or the bundled sample if ``quick``), prepared on first use.

    Stops with a one-line error naming the first missing Multi30k file.
    """
    out = work / f"prepared_v{vocab}{'_quick' if quick else ''}"
    if (out / "manifest.json").is_file():
        return out
    if quick:
        data = {"train_tsv": str(ROOT / "data" / "fra-eng-sample.tsv.gz"), "dev_size": 100, "test_size": 100}
    else:
        data, missing = multi30k_data()
        if missing:
            sys.exit(f"error: {missing}: Multi30k en-de not found; "
                     "set NMT_MULTI30K to the folder that holds train.en, train.de, val.* and test2016.*")
    sp = {"vocab_size": vocab, "model_type": "unigram" if vocab <= 8000 else "bpe"}
    prepare(config_from_dict({"data": {**data, "prepared_dir": str(out), "sentencepiece": sp}}),
            overwrite=True, log=lambda s: None)
    return out


def quick_trained_run(work: Path, name: str, steps: int, decoding: dict | None = None) -> tuple[Path, Path]:
    """A tiny model (``TINY_MODEL``) trained for ``steps`` steps on the bundled sample (prepared once in
    ``work``), for the quick modes that need a run to load: ``(run directory, prepared directory)``."""
    from nmt.training import train

    prep = prepared_dir(work, 500, quick=True)
    cfg = config_from_dict({
        "data": {"prepared_dir": str(prep)}, "model": TINY_MODEL,
        "training": {"run_dir": str(work / name), "max_steps": steps, "validate_every": 10**6,
                     "validate_max_sentences": 10, "log_every": 100},
        "decoding": decoding or {}})
    train(cfg, overwrite=True, log=lambda s: None)
    return work / name, prep


def trace_op_events(logdir: Path) -> tuple[list[tuple[str, str, float]], int, float]:
    """The ops TensorFlow's executor ran in a profiler trace written under ``logdir``
    (``tf.profiler.experimental.start(logdir)`` ... ``stop()``): ``(node name, op type, milliseconds)``
    per op run, the number of executor threads (``tf_Compute`` lines) that ran them, and the
    milliseconds from the first op's start to the last op's end (the span the threads worked in)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    events, threads, first, last = [], 0, float("inf"), float("-inf")
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads; op events are "node:Type"
                continue
            threads += 1
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or "::" in name:  # ExecutorState::Process, ThreadpoolListener::... wrap ops
                    continue
                node, op_type = name.rsplit(":", 1)
                events.append((node, op_type, event.duration_ps / 1e9))
                start = line.timestamp_ns / 1e6 + event.offset_ps / 1e9
                first, last = min(first, start), max(last, start + event.duration_ps / 1e9)
    return events, threads, max(last - first, 0.0)
