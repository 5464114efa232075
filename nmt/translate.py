"""``nmt translate``: load a run directory and translate text, line-aligned and streaming.

Exactly one output line per input line: empty or whitespace-only lines give empty lines
without running the model, over-long lines are truncated (one warning counts them), invalid
UTF-8 is replaced (one warning counts it). Input is read in chunks and each chunk's
translations are written and flushed as soon as they are done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from nmt.config import Config, DecodingConfig, config_from_dict, read_yaml
from nmt.errors import InputError
from nmt.normalize import normalize
from nmt.vocab import Vocab


@dataclass
class Translation:
    """One translated line: the best hypothesis, the n-best list and, on request, attention."""

    source: str
    text: str = ""
    score: float | None = 0.0  #: None where the scores were not asked for (greedy decoding's text output)
    tokens: int = 0
    target_ids: list[int] = field(default_factory=list)
    n_best: list[tuple[str, float | None]] = field(default_factory=list)
    source_pieces: list[str] = field(default_factory=list)
    target_pieces: list[str] = field(default_factory=list)
    attention: np.ndarray | None = None
    truncated: bool = False

    def to_json(self, with_n_best: bool = False) -> str:
        """One JSON object: source, translation, score, tokens, and the n-best list if ``with_n_best``
        (``--n-best`` above 1: on every line, however many outputs the line has) or longer than 1."""
        obj: dict[str, Any] = {"source": self.source, "translation": self.text, "score": self.score,
                               "tokens": self.tokens}
        if with_n_best or len(self.n_best) > 1:
            obj["n_best"] = [{"translation": t, "score": s} for t, s in self.n_best]
        return json.dumps(obj, ensure_ascii=False)


def find_checkpoint(run_dir: Path, which: str) -> str:
    """Resolve ``best``, ``last``, ``averaged`` (:func:`nmt.average.average_checkpoints`) or a checkpoint
    path (a prefix, or a folder with a state file) of a run directory to a checkpoint prefix."""
    from nmt.checkpoints import latest_checkpoint

    if which == "averaged":
        path = latest_checkpoint(run_dir / "averaged")
        if path is None:
            raise InputError(f"{run_dir}: no averaged checkpoint (make one with nmt average --model {run_dir})")
        return path
    if which in ("best", "last"):
        path = latest_checkpoint(run_dir / ("best" if which == "best" else "checkpoints"))
        if path is None and which == "best":
            path = latest_checkpoint(run_dir / "checkpoints")
        if path is None:
            raise InputError(f"{run_dir}: no checkpoint found (was the run trained?)")
        return path
    p = Path(which)
    if p.is_dir():
        path = latest_checkpoint(p)
        if path is None:
            raise InputError(f"{p}: no checkpoint in this directory")
        return path
    if not Path(f"{which}.index").is_file():
        raise InputError(f"{which}: no such checkpoint (expected {which}.index)")
    return which


def read_run(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    """A run directory's config snapshot and the manifest of its prepared data (with its ``vocab`` entry)."""
    snapshot = run_dir / "config.yaml"
    if not snapshot.is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.yaml)")
    config = config_from_dict(read_yaml(snapshot), str(snapshot))
    manifest_path = run_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not {"src_model", "tgt_model", "src_size", "tgt_size"} <= set(manifest["vocab"]):
            raise KeyError("vocab")
    except FileNotFoundError:
        raise InputError(f"{manifest_path}: missing from the run directory") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{manifest_path}: unreadable manifest") from None
    return config, manifest


class Translator:
    """A trained model loaded from a run directory, with its vocabularies and decoder.

    ``decoding_overrides`` replace keys of the run's ``decoding`` config (None keeps the run's).
    On CPUs, the first Translator of a process sizes TensorFlow's thread pools from
    ``cpu_threads`` and ``parallel_batches`` (:func:`nmt.decoding.thread_plan`).
    """

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", decoding: DecodingConfig | None = None,
                 **decoding_overrides: Any) -> None:
        from nmt.sysinfo import tensorflow_environment

        tensorflow_environment()  # before TensorFlow makes its CPU device (a no-op once it has)
        import tensorflow as tf

        from nmt.checkpoints import restore
        from nmt.decoding import Decoder, thread_plan
        from nmt.model import build_model
        from nmt.sysinfo import available_cores, set_cpu_threads

        self.run_dir = Path(run_dir)
        self.config, manifest = read_run(self.run_dir)
        vocab_info = manifest["vocab"]
        self.src_vocab = Vocab.load(self.run_dir / vocab_info["src_model"])
        self.tgt_vocab = Vocab.load(self.run_dir / vocab_info["tgt_model"])
        for side, vocab in (("src", self.src_vocab), ("tgt", self.tgt_vocab)):
            if len(vocab) != vocab_info[f"{side}_size"]:
                raise InputError(f"{vocab.name}: {len(vocab)} pieces but the manifest says "
                                 f"{vocab_info[f'{side}_size']}")
        cfg = decoding or self.config.decoding
        self.decoding = replace(cfg, **{k: v for k, v in decoding_overrides.items() if v is not None})
        cores = available_cores()
        # physical devices: listing the logical ones (gru.cudnn_available) would start the runtime
        intra_op = thread_plan(self.decoding, cores, bool(tf.config.list_physical_devices("GPU")))[1]
        if intra_op:  # before the runtime starts; a process already running TensorFlow keeps its threads
            set_cpu_threads(intra_op, max(self.decoding.cpu_threads or cores, self.decoding.parallel_batches))
        self.model = build_model(self.config.model, len(self.src_vocab), len(self.tgt_vocab))
        self.checkpoint_path = find_checkpoint(self.run_dir, checkpoint)
        restore(tf.train.Checkpoint(model=self.model), self.checkpoint_path, partial=True)
        shortlist = None
        if self.decoding.shortlist:
            from nmt.shortlist import shortlist_for_run

            shortlist = shortlist_for_run(self.run_dir, self.config.data.prepared_dir, manifest,
                                          self.decoding.shortlist_per_source, self.decoding.shortlist_frequent)
        self.decoder = Decoder(self.model, self.decoding, shortlist, frozen_weights=True)

    def translate(self, lines: list[str], beam: int | None = None, n_best: int = 1,
                  with_attention: bool = False, with_scores: bool = True) -> list[Translation]:
        """Translate raw lines; empty lines give empty translations without running the model.

        Without ``with_scores`` greedy decoding leaves out the scores' softmax normaliser (faster;
        the scores are None); beam search computes them anyway.
        """
        from nmt.decoding import translate_ids

        out = [Translation(source=line, score=0.0 if with_scores else None) for line in lines]
        todo = [i for i, line in enumerate(lines) if line.strip()]
        if not todo:
            return out
        normalised = [normalize(lines[i], self.config.data.lowercase) for i in todo]
        ids = self.src_vocab.encode(normalised)
        limit = self.decoding.max_source_pieces
        for k, i in enumerate(todo):
            if len(ids[k]) > limit:
                ids[k] = ids[k][:limit]
                out[i].truncated = True
        results = translate_ids(self.decoder, ids, self.decoding.batch_size, beam=beam, n_best=n_best,
                                with_attention=with_attention, with_scores=with_scores)
        texts = self.tgt_vocab.decode([h[0] for r in results for h in r])
        pos = 0
        for k, i in enumerate(todo):
            hyps = results[k]
            t = out[i]
            t.n_best = [(texts[pos + j], hyps[j][1]) for j in range(len(hyps))]
            pos += len(hyps)
            t.text, t.score = t.n_best[0]
            t.target_ids = hyps[0][0]
            t.tokens = len(t.target_ids)
            if with_attention:
                t.source_pieces = self.src_vocab.pieces(ids[k]) + ["</s>"]
                t.target_pieces = self.tgt_vocab.pieces(t.target_ids) + ["</s>"]
                t.attention = hyps[0][2]
        return out


def read_chunks(stream: IO[bytes], chunk_lines: int, on_invalid: Callable[[], None]) -> Iterator[list[str]]:
    """Yield lists of up to ``chunk_lines`` decoded lines (invalid UTF-8 replaced, reported once per line)."""
    chunk: list[str] = []
    for raw in stream:
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            chunk.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            on_invalid()
            chunk.append(raw.decode("utf-8", errors="replace"))
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class StreamStats:
    """Counts reported after a streamed translation."""

    lines: int = 0
    empty: int = 0
    truncated: int = 0
    invalid_utf8: int = 0
    target_pieces: int = 0  #: pieces of the best hypotheses, EOS not counted


def translate_stream(translator: Translator, source: IO[bytes], sink: IO[str], beam: int | None = None,
                     n_best: int = 1, as_json: bool = False, pieces: bool = False, chunk_lines: int = 256,
                     attention_dir: Path | None = None, attention_max: int = 100) -> StreamStats:
    """Translate ``source`` line by line into ``sink`` (one output line per input line, flushed per chunk)."""
    stats = StreamStats()

    def invalid() -> None:
        stats.invalid_utf8 += 1

    attention_file = None
    if attention_dir is not None:
        attention_dir.mkdir(parents=True, exist_ok=True)
        attention_file = open(attention_dir / "attention.jsonl", "w", encoding="utf-8")
    try:
        for chunk in read_chunks(source, chunk_lines, invalid):
            want_attention = attention_file is not None and stats.lines < attention_max
            results = translator.translate(chunk, beam=beam, n_best=n_best, with_attention=want_attention,
                                           with_scores=as_json or n_best > 1)
            lines = []
            for t in results:
                stats.lines += 1
                stats.empty += not t.source.strip()
                stats.truncated += t.truncated
                stats.target_pieces += t.tokens
                if as_json:
                    lines.append(t.to_json(n_best > 1))
                elif pieces:
                    lines.append(" ".join(translator.tgt_vocab.pieces(t.target_ids)))
                elif n_best > 1:
                    lines.append("\t".join(f"{text}\t{score:.4f}" for text, score in t.n_best))
                else:
                    lines.append(t.text)
                if want_attention and t.attention is not None and stats.lines <= attention_max:
                    _write_attention(attention_dir, attention_file, stats.lines, t)  # type: ignore[arg-type]
            sink.write("".join(line.replace("\n", " ") + "\n" for line in lines))
            sink.flush()
    finally:
        if attention_file is not None:
            attention_file.close()
    return stats


def _write_attention(directory: Path, jsonl: IO[str], line_number: int, t: Translation) -> None:
    from nmt.plotting import plot_attention

    weights = np.asarray(t.attention)
    jsonl.write(json.dumps({"line": line_number, "source_pieces": t.source_pieces,
                            "target_pieces": t.target_pieces,
                            "weights": np.round(weights, 5).tolist()}, ensure_ascii=False) + "\n")
    plot_attention(weights, t.source_pieces, t.target_pieces, directory / f"line-{line_number:06d}.png")


def translate_lines(run_dir: str | Path, lines: Iterable[str], checkpoint: str = "best",
                    beam: int | None = None) -> list[str]:
    """Translate an iterable of lines with the model in ``run_dir`` (library convenience)."""
    translator = Translator(run_dir, checkpoint)
    return [t.text for t in translator.translate(list(lines), beam=beam, with_scores=False)]
