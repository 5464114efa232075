"""``nmt prepare``: clean, split, learn subwords and encode a parallel corpus.

The prepared directory holds, for each split (``train``, ``dev``, ``test``), the piece ids of
both sides as raw little-endian arrays (``src.ids``/``tgt.ids``, ``uint16`` when the vocab
fits, else ``int32``) with ``int64`` sentence offsets (``src.offsets``/``tgt.offsets``), the
normalised dev and test text (``src.txt``/``tgt.txt``, the references of BLEU), the
SentencePiece models and ``manifest.json`` (inputs and their sha256, counts per filter,
vocab sizes, target unigram counts, settings, package versions, sha256 of every data file).

The corpus is streamed: memory holds the held-out sets, one 8-byte hash per training pair
and the SentencePiece sample, never the training text. The same inputs and config give
byte-identical outputs, and the directory appears atomically.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from nmt.config import Config, DataConfig
from nmt.errors import InputError
from nmt.fileio import LineCounts, atomic_directory, count_lines, read_lines, sha256_file
from nmt.normalize import normalize
from nmt.vocab import EOS_ID, Vocab, train_sentencepiece

FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")
_ENCODE_CHUNK = 20_000

#: the reasons a pair is dropped, in the order they are checked
DROP_REASONS = ("invalid_utf8", "overlong", "empty", "duplicate", "in_dev_or_test", "too_long", "length_ratio")


@dataclass
class Corpus:
    """One side-by-side source: two aligned files, or a TSV with two chosen columns."""

    src: str | None = None
    tgt: str | None = None
    tsv: str | None = None

    @property
    def files(self) -> list[str]:
        """The files this corpus reads."""
        return [self.tsv] if self.tsv else [f for f in (self.src, self.tgt) if f]

    def __bool__(self) -> bool:
        return bool(self.tsv or self.src)


@dataclass
class PrepareSummary:
    """What ``prepare`` did: counts per split and reason, vocab sizes, time taken."""

    out_dir: Path
    utf8_policy: str = "error"
    read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    src_vocab: int = 0
    tgt_vocab: int = 0
    lines: LineCounts = field(default_factory=LineCounts)
    seconds: float = 0.0

    def table(self) -> str:
        """The summary as a small plain-text table."""
        rows = [("pairs read", self.read)]
        rows += [(f"dropped: {k.replace('_', ' ')}", v) for k, v in self.dropped.items()]
        repairs = {"invalid_utf8": "lines with invalid UTF-8 (policy: {policy})",
                   "bare_cr": "lines with a bare CR (read as a space)",
                   "nul": "lines with NUL bytes (read as spaces)", "bom": "byte-order marks dropped"}
        rows += [(label.format(policy=self.utf8_policy), getattr(self.lines, k))
                 for k, label in repairs.items() if getattr(self.lines, k)]
        rows += [(f"kept: {k}", v) for k, v in self.kept.items()]
        rows += [("source vocab", self.src_vocab), ("target vocab", self.tgt_vocab),
                 ("seconds", f"{self.seconds:.1f}")]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value:>9}" for name, value in rows) + f"\nwritten: {self.out_dir}"


def _pairs(corpus: Corpus, d: DataConfig, summary: PrepareSummary) -> Iterator[tuple[str, str] | str]:
    """Yield normalised pairs of one corpus, or for a pair that cannot be read the reason it is dropped."""
    policy, counts = d.on_invalid_utf8, summary.lines
    if corpus.tsv:
        need = max(d.tsv_src_column, d.tsv_tgt_column) + 1
        for line in read_lines(corpus.tsv, policy, counts):
            if line.skipped:
                yield line.skipped
                continue
            cols = line.text.split("\t")
            if len(cols) < need:
                raise InputError(f"{corpus.tsv}:{line.number}: {len(cols)} tab-separated column(s), "
                                 f"need at least {need} (data.tsv_src_column/tsv_tgt_column)")
            yield (normalize(cols[d.tsv_src_column], d.lowercase), normalize(cols[d.tsv_tgt_column], d.lowercase))
        return
    assert corpus.src and corpus.tgt
    n_src, n_tgt = count_lines(corpus.src), count_lines(corpus.tgt)
    if n_src != n_tgt:
        raise InputError(f"line counts differ: {corpus.src} has {n_src} lines, {corpus.tgt} has {n_tgt}")
    for s, t in zip(read_lines(corpus.src, policy, counts), read_lines(corpus.tgt, policy, counts)):
        if s.skipped or t.skipped:
            yield s.skipped or t.skipped
            continue
        yield normalize(s.text, d.lowercase), normalize(t.text, d.lowercase)


def _count_pairs(corpus: Corpus) -> int:
    return count_lines(corpus.tsv) if corpus.tsv else count_lines(corpus.src)  # type: ignore[arg-type]


def _pair_hash(s: str, t: str) -> bytes:
    return hashlib.blake2b(f"{s}\t{t}".encode(), digest_size=8).digest()


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("nmt", "sentencepiece", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


class _SplitWriter:
    """Appends encoded pairs of one split to its id and offset files."""

    def __init__(self, directory: Path, dtype: np.dtype, keep_text: bool) -> None:
        directory.mkdir()
        self.dir = directory
        self.dtype = dtype
        self.files = {side: open(directory / f"{side}.ids", "wb") for side in ("src", "tgt")}
        self.lengths: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
        self.text = {side: open(directory / f"{side}.txt", "w", encoding="utf-8") for side in ("src", "tgt")} \
            if keep_text else None
        self.count = 0

    def add(self, src_ids: list[list[int]], tgt_ids: list[list[int]], pairs: list[tuple[str, str]]) -> None:
        for side, ids in (("src", src_ids), ("tgt", tgt_ids)):
            if ids:
                flat = np.fromiter((i for seq in ids for i in seq), dtype=self.dtype)
                self.files[side].write(flat.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
            self.lengths[side].append(np.array([len(s) for s in ids], dtype=np.int64))
        if self.text is not None:
            for s, t in pairs:
                self.text["src"].write(s + "\n")
                self.text["tgt"].write(t + "\n")
        self.count += len(pairs)

    def close(self) -> dict[str, Any]:
        info: dict[str, Any] = {"pairs": self.count}
        for side in ("src", "tgt"):
            self.files[side].close()
            lengths = np.concatenate(self.lengths[side]) if self.lengths[side] else np.zeros(0, np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("<i8")
            (self.dir / f"{side}.offsets").write_bytes(offsets.tobytes())
            info[f"{side}_tokens"] = int(offsets[-1])
            info[f"{side}_max_length"] = int(lengths.max()) if len(lengths) else 0
        if self.text is not None:
            for f in self.text.values():
                f.close()
        return info


def corpora_from_config(d: DataConfig) -> dict[str, Corpus]:
    """The train/dev/test corpora named by the data section (dev/test may be empty)."""
    train = Corpus(d.train_src, d.train_tgt, d.train_tsv)
    if not train:
        raise InputError("no training corpus: set data.train_src and data.train_tgt, or data.train_tsv "
                         "(or pass --src/--tgt or --tsv)")
    return {"train": train, "dev": Corpus(d.dev_src, d.dev_tgt, d.dev_tsv),
            "test": Corpus(d.test_src, d.test_tgt, d.test_tsv)}


def prepare(cfg: Config, overwrite: bool = False, log: Callable[[str], None] = print) -> PrepareSummary:
    """Run the whole preparation described by ``cfg.data`` and return its summary."""
    start = time.perf_counter()
    d = cfg.data
    corpora = corpora_from_config(d)
    for corpus in corpora.values():
        for f in corpus.files:
            if not Path(f).is_file():
                raise InputError(f"{f}: file not found")
    out = Path(d.prepared_dir)
    summary = PrepareSummary(out_dir=out, utf8_policy=d.on_invalid_utf8)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (use --overwrite to replace it)")

    # Held-out pairs: explicit files, or a seeded random choice of line indices of train.
    n_train = _count_pairs(corpora["train"])
    want = {s: (0 if corpora[s] else getattr(d, f"{s}_size")) for s in ("dev", "test")}
    if want["dev"] + want["test"] >= n_train:
        raise InputError(f"{corpora['train'].files[0]}: {n_train} pairs, too few to hold out "
                         f"data.dev_size={want['dev']} and data.test_size={want['test']}")
    chosen = np.random.default_rng(d.split_seed).choice(n_train, want["dev"] + want["test"], replace=False)
    held_out_index = {int(i): "dev" for i in chosen[:want["dev"]]}
    held_out_index.update({int(i): "test" for i in chosen[want["dev"]:]})

    held: dict[str, list[tuple[str, str]]] = {"dev": [], "test": []}
    for split in ("dev", "test"):
        if corpora[split]:
            for pair in _pairs(corpora[split], d, summary):
                summary.read += 1
                if isinstance(pair, str):
                    summary.dropped[pair] += 1
                elif not pair[0] or not pair[1]:
                    summary.dropped["empty"] += 1
                else:
                    held[split].append(pair)

    with atomic_directory(out, overwrite=overwrite) as tmp:
        # Pass 1: normalise, drop empty and duplicate training pairs, route held-out lines.
        seen: set[bytes] = set()
        sp_cfg = d.sentencepiece
        sample_size = sp_cfg.max_training_sentences // (2 if sp_cfg.joint else 1)
        sample: list[tuple[str, str]] = []
        rng = random.Random(d.split_seed)
        n_kept = 0
        norm_path = tmp / "train.norm.tsv"
        with open(norm_path, "w", encoding="utf-8") as norm:
            for index, pair in enumerate(_pairs(corpora["train"], d, summary)):
                summary.read += 1
                if isinstance(pair, str):
                    summary.dropped[pair] += 1
                    continue
                if not pair[0] or not pair[1]:
                    summary.dropped["empty"] += 1
                    continue
                split = held_out_index.get(index)
                if split:
                    held[split].append(pair)
                    continue
                h = _pair_hash(*pair)
                if h in seen:
                    summary.dropped["duplicate"] += 1
                    continue
                seen.add(h)
                norm.write(f"{pair[0]}\t{pair[1]}\n")
                # Reservoir sample (Algorithm R) for SentencePiece: bounded memory, seeded.
                if n_kept < sample_size:
                    sample.append(pair)
                else:
                    j = rng.randrange(n_kept + 1)
                    if j < sample_size:
                        sample[j] = pair
                n_kept += 1
        del seen
        if n_kept == 0:
            raise InputError(f"{corpora['train'].files[0]}: no training pairs left after cleaning")

        # SentencePiece models.
        def train(sentences: list[str]) -> Vocab:
            return Vocab(train_sentencepiece(sentences, sp_cfg.model_type, sp_cfg.vocab_size,
                                             sp_cfg.character_coverage))

        if sp_cfg.joint:
            src_vocab = tgt_vocab = train([s for pair in sample for s in pair])
            (tmp / "spm.model").write_bytes(src_vocab.proto)
            model_files = {"src": "spm.model", "tgt": "spm.model"}
        else:
            src_vocab, tgt_vocab = train([p[0] for p in sample]), train([p[1] for p in sample])
            (tmp / "src.model").write_bytes(src_vocab.proto)
            (tmp / "tgt.model").write_bytes(tgt_vocab.proto)
            model_files = {"src": "src.model", "tgt": "tgt.model"}
        del sample
        summary.src_vocab, summary.tgt_vocab = len(src_vocab), len(tgt_vocab)
        dtype = np.dtype(np.uint16 if max(len(src_vocab), len(tgt_vocab)) <= 65536 else np.int32)

        # Held-out sets: encoded as they are (never length-filtered or deduplicated).
        held_hashes = {_pair_hash(*p) for split in ("dev", "test") for p in held[split]}
        splits_info: dict[str, Any] = {}
        for split in ("dev", "test"):
            writer = _SplitWriter(tmp / split, dtype, keep_text=True)
            pairs = held[split]
            writer.add(src_vocab.encode([p[0] for p in pairs]), tgt_vocab.encode([p[1] for p in pairs]), pairs)
            splits_info[split] = writer.close()

        # Pass 2: encode training pairs in chunks, filter by overlap, length and ratio.
        unigram = np.zeros(len(tgt_vocab), dtype=np.int64)
        writer = _SplitWriter(tmp / "train", dtype, keep_text=False)

        def flush(chunk: list[tuple[str, str]]) -> None:
            src_ids = src_vocab.encode([p[0] for p in chunk])
            tgt_ids = tgt_vocab.encode([p[1] for p in chunk])
            keep_s, keep_t, keep_p = [], [], []
            for pair, s, t in zip(chunk, src_ids, tgt_ids):
                if held_hashes and _pair_hash(*pair) in held_hashes:
                    summary.dropped["in_dev_or_test"] += 1
                elif len(s) > d.max_pieces or len(t) > d.max_pieces:
                    summary.dropped["too_long"] += 1
                elif max(len(s), len(t)) > d.max_length_ratio * max(1, min(len(s), len(t))):
                    summary.dropped["length_ratio"] += 1
                else:
                    keep_s.append(s)
                    keep_t.append(t)
                    keep_p.append(pair)
            if keep_t:
                flat = np.fromiter((i for seq in keep_t for i in seq), dtype=np.int64)
                unigram[:] += np.bincount(flat, minlength=len(unigram))
            unigram[EOS_ID] += len(keep_t)
            writer.add(keep_s, keep_t, keep_p)

        chunk: list[tuple[str, str]] = []
        with open(norm_path, encoding="utf-8") as norm:
            for line in norm:
                s, t = line.rstrip("\n").split("\t")
                chunk.append((s, t))
                if len(chunk) == _ENCODE_CHUNK:
                    flush(chunk)
                    chunk = []
        if chunk:
            flush(chunk)
        splits_info["train"] = writer.close()
        norm_path.unlink()
        if splits_info["train"]["pairs"] == 0:
            raise InputError(f"{corpora['train'].files[0]}: no training pairs left after filtering "
                             f"(data.max_pieces={d.max_pieces}, data.max_length_ratio={d.max_length_ratio:g})")
        for split in SPLITS:
            summary.kept[split] = splits_info[split]["pairs"]

        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format_version": FORMAT_VERSION,
            "src_lang": d.src_lang,
            "tgt_lang": d.tgt_lang,
            "inputs": {split: [{"path": f, "sha256": sha256_file(f)} for f in corpora[split].files]
                       for split in SPLITS if corpora[split]},
            "counts": {"read": summary.read, "dropped": summary.dropped,
                       "line_repairs": asdict(summary.lines), "kept": summary.kept},
            "splits": splits_info,
            "ids_dtype": dtype.str,
            "vocab": {"src_model": model_files["src"], "tgt_model": model_files["tgt"],
                      "src_size": len(src_vocab), "tgt_size": len(tgt_vocab),
                      "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3},
            "settings": {"data": {k: v for k, v in cfg.to_dict()["data"].items() if k != "prepared_dir"}},
            "normalisation": "NFKC; Unicode spaces to space; format (Cf) characters removed; "
                             "control characters to space; whitespace collapsed and stripped",
            "versions": _package_versions(),
            "files": {f: sha256_file(tmp / f) for f in files},
            "tgt_unigram_counts": unigram.tolist(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    summary.seconds = time.perf_counter() - start
    log(summary.table())
    return summary
