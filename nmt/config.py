"""Experiment configuration: frozen dataclasses loaded from one YAML file.

One YAML file describes one experiment in four sections (``data``, ``model``, ``training``,
``decoding``). Every key has a default, a type and, where it matters, a range; the loader
rejects unknown keys (with a "did you mean"), wrong types and out-of-range values, naming
the key path and the file. ``--set a.b=c`` overrides are parsed as YAML scalars.
YAML is only ever read with the safe loader.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.errors import InputError

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def _opt(default: Any, doc: str, *, min: float | None = None, max: float | None = None,
         min_exclusive: bool = False) -> Any:
    """A dataclass field with a default, a one-line doc and an optional numeric range."""
    return field(default=default, metadata={"doc": doc, "min": min, "max": max,
                                            "min_exclusive": min_exclusive})


@dataclass(frozen=True)
class SentencePieceConfig:
    """Subword model settings used by ``nmt prepare``."""

    model_type: Literal["unigram", "bpe"] = _opt("unigram", "SentencePiece algorithm")
    vocab_size: int = _opt(8000, "pieces per model (joint: one model of this size)", min=8, max=1_000_000)
    joint: bool = _opt(True, "one model shared by source and target, else one per side")
    character_coverage: float = _opt(1.0, "share of characters covered by the model", min=0.9, max=1.0)
    max_training_sentences: int = _opt(
        1_000_000, "SentencePiece trains on a seeded sample of at most this many sentences", min=100)


@dataclass(frozen=True)
class DataConfig:
    """Where the corpus is, how it is cleaned and split, and where the prepared data goes."""

    prepared_dir: str = _opt("runs/prepared", "output of nmt prepare, input of nmt train")
    src_lang: str = _opt("src", "source language code (used for names only)")
    tgt_lang: str = _opt("tgt", "target language code (used for names only)")
    train_src: str | None = _opt(None, "source side of the training corpus, one sentence a line (.gz read too)")
    train_tgt: str | None = _opt(None, "target side of the training corpus, aligned line by line")
    train_tsv: str | None = _opt(None, "the training corpus as one TSV file instead of two files")
    tsv_src_column: int = _opt(0, "0-based column of the source sentence in TSV files", min=0, max=1000)
    tsv_tgt_column: int = _opt(1, "0-based column of the target sentence in TSV files", min=0, max=1000)
    dev_src: str | None = _opt(None, "explicit dev set, source side (else split from train)")
    dev_tgt: str | None = _opt(None, "explicit dev set, target side")
    dev_tsv: str | None = _opt(None, "explicit dev set as TSV")
    test_src: str | None = _opt(None, "explicit test set, source side (else split from train)")
    test_tgt: str | None = _opt(None, "explicit test set, target side")
    test_tsv: str | None = _opt(None, "explicit test set as TSV")
    dev_size: int = _opt(1000, "pairs held out for dev when no dev files are given", min=0)
    test_size: int = _opt(1000, "pairs held out for test when no test files are given", min=0)
    split_seed: int = _opt(1234, "seed of the held-out split and of the SentencePiece sample",
                          min=0, max=2**31 - 1)
    on_invalid_utf8: Literal["error", "skip", "replace"] = _opt("error", "what to do with a line that is not UTF-8")
    lowercase: bool = _opt(False, "lowercase both sides after normalisation")
    max_pieces: int = _opt(100, "training pairs with more subword pieces on either side are dropped", min=1)
    max_length_ratio: float = _opt(4.0, "training pairs whose piece-length ratio exceeds this are dropped", min=1.0)
    sentencepiece: SentencePieceConfig = field(default_factory=SentencePieceConfig, metadata={"doc": "subword model"})


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the GRU encoder-decoder with Bahdanau attention."""

    embedding_dim: int = _opt(256, "source and target embedding size", min=1, max=16384)
    encoder_units: int = _opt(256, "GRU units per direction of the bidirectional encoder", min=1, max=16384)
    encoder_layers: int = _opt(1, "stacked bidirectional GRU layers", min=1, max=8)
    decoder_units: int = _opt(512, "decoder GRU units", min=1, max=16384)
    attention_units: int = _opt(512, "size of the additive attention's hidden layer", min=1, max=16384)
    attentional_units: int = _opt(512, "size of the attentional hidden layer before the output projection",
                                   min=1, max=16384)
    attention_placement: Literal["post", "feed"] = _opt(
        "post", "post: GRU over the whole target then attention; feed: context fed into the GRU at each step")
    dropout: float = _opt(0.2, "dropout on embeddings, encoder outputs and the attentional layer", min=0.0, max=0.9)
    tie_target_embedding: bool = _opt(
        False, "share target embedding and output projection (needs attentional_units == embedding_dim)")
    output_bias_init: Literal["unigram", "zeros"] = _opt(
        "unigram", "a new run's output bias: unigram: log of the training targets' piece frequencies (add-one "
        "smoothed), so the hidden layer need not learn them (it saturates doing so and training stalls); zeros")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation, checkpoints, validation and the run directory."""

    run_dir: str = _opt("runs/run", "where checkpoints, logs and the config snapshot go")
    seed: int = _opt(1234, "seed of initialisation, shuffling, dropout and the sampler", min=0, max=2**31 - 1)
    deterministic: bool = _opt(True, "enable TensorFlow op determinism (same losses step for step)")
    batch_size: int = _opt(64, "sentences per batch (batch_by: sentences) or target tokens (batch_by: tokens)", min=1)
    batch_by: Literal["sentences", "tokens"] = _opt("sentences", "unit of batch_size")
    bucket_width: int = _opt(1, "batch widths are rounded up to a multiple of this (larger: fewer shapes for XLA)",
                             min=1)
    max_steps: int = _opt(20_000, "stop after this many updates", min=1, max=10**12)
    max_minutes: float | None = _opt(None, "stop after this much wall time (null: no limit)",
                                     min=0.0, min_exclusive=True)
    num_sampled: int = _opt(512, "sampled-softmax candidates drawn per step (repeats merged into one column); "
                                 "0 (or >= vocab) means full softmax", min=0)
    sampler_distortion: float = _opt(1.0, "sampled-softmax candidates are drawn by (unigram count + 1) ** this "
                                      "(lower: rare pieces are negatives more often; 0: uniform)", min=0.0, max=1.0)
    label_smoothing: float = _opt(0.0, "label smoothing of the full-softmax loss", min=0.0, max=0.5)
    learning_rate: float = _opt(0.001, "peak Adam learning rate", min=0.0, min_exclusive=True)
    optimizer: Literal["adam", "lazy_adam"] = _opt(
        "adam", "adam: every row of the embeddings and the output projection moves at every step; lazy_adam: rows "
                "that a batch's sparse gradient does not touch (pieces absent from it, and under the sampled loss "
                "pieces not drawn) keep their weights and moments, as in OpenNMT-tf's LazyAdam (faster with large "
                "vocabularies; training differs slightly)")
    warmup_steps: int = _opt(0, "linear warm-up steps", min=0)
    decay: Literal["none", "inverse_sqrt", "exponential", "plateau", "cosine"] = _opt(
        "none", "learning-rate decay after warm-up; cosine: down to min_learning_rate at the end of training, "
                "max_steps or, when it comes first, max_minutes (the rate then follows wall time)")
    decay_rate: float = _opt(0.5, "exponential: factor per decay_steps; plateau: factor on each plateau",
                             min=0.0, max=1.0, min_exclusive=True)
    decay_steps: int = _opt(10_000, "exponential decay period in steps", min=1)
    plateau_patience: int = _opt(2, "validations without dev BLEU gain before the rate is cut", min=1)
    min_learning_rate: float = _opt(1e-5, "floor of the decayed learning rate", min=0.0)
    clip_norm: float = _opt(1.0, "gradient clipping by global norm (0: off)", min=0.0)
    log_every: int = _opt(100, "steps between progress lines", min=1)
    checkpoint_every: int = _opt(1000, "steps between checkpoints", min=1)
    keep_checkpoints: int = _opt(3, "checkpoints kept (besides best)", min=1)
    validate_every: int = _opt(1000, "steps between validations (dev loss, perplexity and BLEU)", min=1)
    validate_max_sentences: int = _opt(1000, "dev sentences translated for BLEU at each validation", min=1)
    patience: int = _opt(0, "validations without dev BLEU gain before stopping (0: never stop early)", min=0)
    xla: Literal["auto", "on", "off"] = _opt(
        "auto", "XLA-compile the train step (auto: off; it recompiles per batch shape and measured slower on CPUs; "
                "on: the sampler draws other candidates from the same seed and keeps their repeats)")
    mixed_precision: Literal["auto", "on", "off"] = _opt("auto", "float16 compute with float32 loss (auto: GPUs only)")
    precision: Literal["float32", "bfloat16"] = _opt(
        "float32", "matmuls of the training step on CPUs: bfloat16 multiplies at the CPU's bfloat16 speed (AVX-512 "
                   "BF16 or AMX; the weights cast once per step, products accumulated in float32); weights, Adam, "
                   "gates, attention scores, softmax, loss and validation stay float32")
    device: Literal["auto", "cpu", "gpu"] = _opt("auto", "auto: a GPU when TensorFlow sees one, else the CPU")
    threads: int = _opt(0, "CPU threads for training in all (0: the cores this process may use)", min=0, max=1024)
    parallel_parts: int = _opt(0, "parts of each batch computed side by side on CPUs, each with threads / "
                                  "parallel_parts intra-op threads, their gradients summed into one update "
                                  "(0: one per thread, at most 2; GPUs: 1)", min=0, max=64)
    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = _opt(
        "auto", "auto: MirroredStrategy over several GPUs, else one device; multi_worker: the cluster in TF_CONFIG")

    def uses_sampled_softmax(self, vocab_size: int) -> bool:
        """Whether training draws sampled-softmax candidates for a target vocabulary of ``vocab_size``
        (``0 < num_sampled < vocab_size``; otherwise the full softmax)."""
        return 0 < self.num_sampled < vocab_size


@dataclass(frozen=True)
class DecodingConfig:
    """Greedy and beam search settings shared by validation, translate and eval."""

    beam_size: int = _opt(1, "1 is greedy decoding", min=1, max=64)
    length_penalty: float = _opt(1.0, "beam search: scores are divided by length ** length_penalty", min=0.0,
                                  max=10.0)
    max_length_a: float = _opt(1.5, "maximum output length is a * source length + b", min=0.0, max=100.0)
    max_length_b: int = _opt(10, "maximum output length is a * source length + b", min=0, max=100_000)
    max_length_cap: int = _opt(256, "hard cap on the output length", min=1, max=100_000)
    min_length: int = _opt(0, "EOS is blocked until an output has this many pieces (0: no minimum)", min=0,
                          max=100_000)
    max_source_pieces: int = _opt(250, "longer inputs are truncated (with a warning)", min=1, max=100_000)
    batch_size: int = _opt(128, "sentences per decoding batch", min=1, max=100_000)
    cpu_threads: int = _opt(0, "CPU threads for translation (0: the cores this process may use); ignored on GPUs "
                               "and where training set the threads already", min=0, max=1024)
    parallel_batches: int = _opt(0, "batches decoded at once on CPUs, each with cpu_threads / parallel_batches "
                                    "intra-op threads, like Marian's --cpu-threads workers and CTranslate2's "
                                    "inter_threads (0: 2 per thread, at most 4; GPUs: 1)", min=0, max=64)
    shortlist: bool = _opt(False, "decode over a lexical shortlist of the target vocabulary (faster; outputs may "
                                  "differ): the shortlist_per_source pieces most associated with each source piece "
                                  "in the training data and the shortlist_frequent most frequent ones")
    shortlist_per_source: int = _opt(10, "shortlist: target pieces per source piece (Dice coefficient)", min=1,
                                     max=100_000)
    shortlist_frequent: int = _opt(100, "shortlist: most frequent target pieces always allowed", min=0, max=1_000_000)
    precision: Literal["float32", "bfloat16"] = _opt(
        "float32", "matmuls of a loaded model's decoding (translate, eval): bfloat16 copies of the weights, made "
                   "once, multiply at the CPU's bfloat16 speed (AVX-512 BF16 or AMX; faster, outputs may differ); "
                   "gates, attention scores, logits and softmax stay float32, and so does validation during training")


@dataclass(frozen=True)
class Config:
    """One experiment."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "corpus, cleaning, split, subwords"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "model shape"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"doc": "optimisation and run directory"})
    decoding: DecodingConfig = field(default_factory=DecodingConfig, metadata={"doc": "greedy and beam search"})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what the run directory's snapshot holds)."""
        return dataclasses.asdict(self)


# Keys whose change breaks a checkpoint (refused on --resume): the whole model and data sections.
BREAKING_SECTIONS = ("model", "data")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int to float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except InputError:
                pass
        raise InputError(f"{where} must be {_type_name(tp)}, got {_show(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) is type(choices[0]):
            return value
        hint = difflib.get_close_matches(_show(value).strip("'"), [str(c) for c in choices], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise InputError(f"{where} must be one of {', '.join(map(repr, choices))}, got {_show(value)}{extra}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise InputError(f"{where} must be a finite number, got {_show(value)}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise InputError(f"{where} must be {_type_name(tp)}, got {_show(value)}")


def _build(cls: type, raw: Any, path: str, source: str) -> Any:
    """Build dataclass ``cls`` from the mapping ``raw``, validating every key."""
    where_section = f"{source}: {path or 'the top level'}"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{where_section} must be a mapping of keys to values, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = (key if isinstance(key, str) else _show(key))[:60]
        key_path = f"{path}.{name}" if path else name
        if key not in fields:
            hint = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            extra = f" (did you mean {(path + '.' if path else '') + hint[0]!r}?)" if hint else ""
            raise InputError(f"{source}: unknown key {key_path!r}{extra}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, key_path, source)
            continue
        where = f"{source}: {key_path}"
        value = _convert(value, tp, where)
        meta = fields[key].metadata
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
                op = ">" if meta.get("min_exclusive") else ">="
                raise InputError(f"{where} must be {op} {lo:g}, got {_show(value)}")
            if hi is not None and value > hi:
                raise InputError(f"{where} must be <= {hi:g}, got {_show(value)}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_consistency(cfg: Config, source: str) -> None:
    """Rules that involve more than one key."""
    d = cfg.data
    if d.train_tsv and (d.train_src or d.train_tgt):
        raise InputError(f"{source}: data.train_tsv and data.train_src/train_tgt are exclusive; give one")
    if bool(d.train_src) != bool(d.train_tgt):
        raise InputError(f"{source}: data.train_src and data.train_tgt must be given together")
    for split in ("dev", "test"):
        s, t, v = (getattr(d, f"{split}_{k}") for k in ("src", "tgt", "tsv"))
        if bool(s) != bool(t):
            raise InputError(f"{source}: data.{split}_src and data.{split}_tgt must be given together")
        if v and s:
            raise InputError(f"{source}: data.{split}_tsv and data.{split}_src/{split}_tgt are exclusive")
    if d.tsv_src_column == d.tsv_tgt_column:
        raise InputError(f"{source}: data.tsv_src_column and data.tsv_tgt_column must differ")
    if cfg.training.precision == "bfloat16" and cfg.training.mixed_precision == "on":
        raise InputError(f"{source}: training.precision bfloat16 and training.mixed_precision on are exclusive; "
                         "give one")
    m = cfg.model
    if m.tie_target_embedding and m.attentional_units != m.embedding_dim:
        raise InputError(f"{source}: model.tie_target_embedding needs model.attentional_units "
                         f"({m.attentional_units}) == model.embedding_dim ({m.embedding_dim})")


def _set_path(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise InputError(f"--set {dotted!r}: empty key in the path")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: typing.Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``key.path=value`` strings; values are YAML scalars (``0.5``, ``true``, ``null``)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected key.path=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise InputError(f"--set {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
        if isinstance(value, (dict, list)):
            raise InputError(f"--set {item!r}: value must be a scalar")
        parsed.append((key.strip(), value))
    return parsed


def config_from_dict(raw: Any, source: str = "<config>",
                     overrides: typing.Iterable[str] = ()) -> Config:
    """Validate plain data (as read from YAML) into a :class:`Config`, applying ``--set`` overrides."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{source}: the top level must be a mapping with sections "
                         f"data, model, training, decoding; got {type(raw).__name__}")
    raw = _copy_sections(raw)
    for key, value in parse_overrides(overrides):
        _set_path(raw, key, value, source)
    cfg = _build(Config, raw, "", source)
    _check_consistency(cfg, source)
    return cfg


def _copy_sections(raw: Any, depth: int = 3) -> Any:
    """Copy the mappings a config can have (top, section, subsection), sharing everything else.

    Bounded depth: YAML aliases can make a document recursive or exponentially large when
    expanded, and such values are refused by validation anyway.
    """
    if isinstance(raw, dict) and depth > 0:
        return {k: _copy_sections(v, depth - 1) for k, v in raw.items()}
    return raw


def _show(value: Any) -> str:
    """A short repr for error messages (long strings, huge or recursive values are abbreviated)."""
    return _REPR.repr(value)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with the safe loader; errors name the file (and line where known)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected a YAML file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InputError(f"{where}: invalid YAML ({problem})") from None
    except (ValueError, RecursionError, OverflowError) as exc:
        # e.g. an integer with more digits than Python converts, or nesting too deep to parse
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"{p}: invalid YAML ({first})") from None


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Load and validate a config file (or the defaults when ``path`` is None)."""
    if path is None:
        return config_from_dict({}, "<defaults>", overrides)
    return config_from_dict(read_yaml(path), str(path), overrides)


def dump_config(cfg: Config) -> str:
    """The config as YAML text (the snapshot written into run directories)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def diff_configs(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """Key paths whose values differ between two configs, as (path, old, new)."""
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                walk(a[k], b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            out.append((path, a, b))

    walk(old.to_dict(), new.to_dict(), "")
    return out


def reference_yaml() -> str:
    """An annotated YAML document listing every key with its default and doc (configs/reference.yaml)."""
    lines = ["# Reference config for nmt: every key with its default value.",
             "# Generated by `python -m nmt.config`; do not edit by hand.", ""]

    def emit(cls: type, indent: int) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            pad = "  " * indent
            doc = f.metadata.get("doc", "")
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                lines.append(f"{pad}{f.name}:  # {doc}")
                emit(tp, indent + 1)
                if indent == 0:
                    lines.append("")
                continue
            default = f.default
            value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            rng = []
            if f.metadata.get("min") is not None:
                rng.append((">" if f.metadata.get("min_exclusive") else ">=") + f" {f.metadata['min']:g}")
            if f.metadata.get("max") is not None:
                rng.append(f"<= {f.metadata['max']:g}")
            kind = _type_name(tp) + (f", {' and '.join(rng)}" if rng else "")
            lines.append(f"{pad}{f.name}: {value}  # {doc} [{kind}]")

    emit(Config, 0)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(reference_yaml(), end="")
