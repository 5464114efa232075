"""Shared fixtures: a tiny corpus cut from the bundled sample, its prepared directory and a tiny trained run.

Everything runs in-process (Click's CliRunner), so TensorFlow is imported once per session.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nmt.sysinfo import tensorflow_environment

tensorflow_environment(quiet=True)  # as the CLI sets TensorFlow up

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "fra-eng-sample.tsv.gz"


def tiny_config(tmp: Path, **sections) -> dict:
    """A config dict for a tiny model on the tiny corpus; ``sections`` update it key by key."""
    cfg = {
        "data": {"prepared_dir": str(tmp / "prepared"), "train_tsv": str(tmp / "tiny.tsv"),
                 "dev_size": 40, "test_size": 40, "max_pieces": 40,
                 "sentencepiece": {"vocab_size": 300}},
        "model": {"embedding_dim": 16, "encoder_units": 16, "decoder_units": 32, "attention_units": 16,
                  "attentional_units": 32, "dropout": 0.0},
        "training": {"run_dir": str(tmp / "run"), "batch_size": 32, "max_steps": 30, "log_every": 10,
                     "validate_every": 15, "validate_max_sentences": 20, "checkpoint_every": 10,
                     "num_sampled": 64, "learning_rate": 0.01,
                     # One part: a step of two parts side by side (the default on two cores) takes twice
                     # as long to trace, about 2 s more per run. The tests of training itself set
                     # parallel_parts 0 (the default) or more: DEFAULT_PARTS.
                     "parallel_parts": 1},
        "decoding": {"batch_size": 16, "max_length_cap": 30},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


# training.parallel_parts as a user's run has it (nmt's default: two parts side by side on two cores)
DEFAULT_PARTS = {"parallel_parts": 0}


def write_config(path: Path, cfg: dict) -> Path:
    """Write a config dict as YAML and return its path."""
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def invoke(*args: str, input: str | bytes | None = None):
    """Run the ``nmt`` CLI in-process and return Click's result."""
    from nmt.cli import main

    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def graph_ops(fn, *args, kind: str = "MatMul", dtype_attr: str = "T") -> list[tuple[str, str, str]]:
    """``(function, op name, dtype)`` of the ops of ``kind`` in a ``tf.function``'s graph for ``args``, its
    loops' functions included (``function`` is ``"main"`` outside them)."""
    import tensorflow as tf

    graph = fn.get_concrete_function(*args).graph.as_graph_def()
    return [(name, n.name, tf.as_dtype(n.attr[dtype_attr].type).name)
            for name, nodes in [("main", graph.node)] + [(f.signature.name, f.node_def) for f in graph.library.function]
            for n in nodes if kind in n.op]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A directory with ``tiny.tsv``: the first 800 pairs of the bundled sample."""
    d = tmp_path_factory.mktemp("corpus")
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(800)]
    (d / "tiny.tsv").write_text("".join(lines), encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def prepared(corpus_dir) -> Path:
    """The tiny corpus prepared once for the session (shared read-only)."""
    cfg = write_config(corpus_dir / "prepare.yaml", tiny_config(corpus_dir))
    result = invoke("prepare", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    return corpus_dir / "prepared"


@pytest.fixture(scope="session")
def trained_run(corpus_dir, prepared) -> Path:
    """A tiny model trained for 60 steps (shared read-only by translate and eval tests)."""
    cfg = tiny_config(corpus_dir, training={"run_dir": str(corpus_dir / "trained"), "max_steps": 60,
                                            "validate_every": 30})
    path = write_config(corpus_dir / "trained.yaml", cfg)
    result = invoke("train", "--config", str(path))
    assert result.exit_code == 0, result.output
    return corpus_dir / "trained"
