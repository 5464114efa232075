"""Reading a prepared directory and turning it into padded, bucketed training batches.

The id arrays are memory-mapped, never parsed. An epoch's batches are planned with numpy
from the sentence lengths alone (seeded shuffle, sort inside windows so a batch holds
similar lengths, cut by sentences or by target tokens, shuffle the batches), and each batch
is padded by one vectorised gather: no Python work per example. The plan depends only on
(seed, epoch), so a resumed run continues at the same batch of the same epoch. Batches are
served through ``tf.data`` with prefetching so padding overlaps the train step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt.errors import InputError
from nmt.fileio import sha256_file
from nmt.vocab import BOS_ID, EOS_ID, Vocab


@dataclass
class Split:
    """The ids of one split: flat id arrays and sentence offsets for both sides."""

    src_ids: np.ndarray
    src_offsets: np.ndarray
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        """Source lengths in pieces (without EOS)."""
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        """Target lengths in pieces (without BOS/EOS)."""
        return np.diff(self.tgt_offsets)


class PreparedData:
    """A directory written by ``nmt prepare``, checked against its manifest on open."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise InputError(f"{self.path}: not a prepared directory (no manifest.json; run nmt prepare)")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{manifest_path}: unreadable manifest ({exc.__class__.__name__})") from None
        for key in ("files", "vocab", "splits", "ids_dtype", "tgt_unigram_counts"):
            if key not in self.manifest:
                raise InputError(f"{manifest_path}: manifest lacks {key!r} (prepared by another version?)")
        counts = self.manifest["tgt_unigram_counts"]
        entries = len(counts) if isinstance(counts, list) else 0
        tgt_size = self.manifest["vocab"].get("tgt_size")
        if entries != tgt_size:  # the counts set the sampler and the output bias
            raise InputError(f"{manifest_path}: tgt_unigram_counts has {entries} entries for a target vocabulary "
                             f"of {tgt_size} (edited or corrupt manifest)")
        for name, digest in self.manifest["files"].items():
            f = self.path / name
            if not f.is_file():
                raise InputError(f"{f}: listed in the manifest but missing")
            if verify and sha256_file(f) != digest:
                raise InputError(f"{f}: does not match its sha256 in the manifest (modified or corrupt)")
        self.dtype = np.dtype(self.manifest["ids_dtype"])

    def vocabs(self) -> tuple[Vocab, Vocab]:
        """The source and target SentencePiece models."""
        v = self.manifest["vocab"]
        return Vocab.load(self.path / v["src_model"]), Vocab.load(self.path / v["tgt_model"])

    @property
    def src_vocab_size(self) -> int:
        """Pieces in the source vocabulary."""
        return int(self.manifest["vocab"]["src_size"])

    @property
    def tgt_vocab_size(self) -> int:
        """Pieces in the target vocabulary."""
        return int(self.manifest["vocab"]["tgt_size"])

    @property
    def unigram_counts(self) -> np.ndarray:
        """Target piece counts of the training split (EOS included)."""
        return np.asarray(self.manifest["tgt_unigram_counts"], dtype=np.int64)

    def split(self, name: str) -> Split:
        """Memory-mapped ids of ``train``, ``dev`` or ``test``."""
        d = self.path / name

        def load(side: str) -> tuple[np.ndarray, np.ndarray]:
            offsets = np.fromfile(d / f"{side}.offsets", dtype="<i8")
            ids_file = d / f"{side}.ids"
            ids = np.memmap(ids_file, dtype=self.dtype, mode="r") if ids_file.stat().st_size else \
                np.zeros(0, self.dtype)
            if len(offsets) == 0 or offsets[-1] != len(ids):
                raise InputError(f"{ids_file}: offsets and ids disagree (corrupt prepared directory)")
            return ids, offsets

        (si, so), (ti, to) = load("src"), load("tgt")
        if len(so) != len(to):
            raise InputError(f"{d}: source and target sentence counts differ (corrupt prepared directory)")
        return Split(si, so, ti, to)

    def text(self, name: str, side: str) -> list[str]:
        """Normalised text of a held-out split (``dev`` or ``test``), one sentence a line."""
        path = self.path / name / f"{side}.txt"
        return path.read_text(encoding="utf-8").splitlines()


def pad_batch(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, width: int,
              prefix: int | None = None, suffix: int | None = None) -> np.ndarray:
    """Gather sentences ``rows`` into an int32 matrix [len(rows), width], padded with 0.

    ``prefix``/``suffix`` add BOS/EOS. Sentences longer than fits are truncated (the suffix is
    kept). Vectorised: one gather for the whole batch.
    """
    start = offsets[rows]
    length = offsets[rows + 1] - start
    room = width - (prefix is not None) - (suffix is not None)
    length = np.minimum(length, room)
    cols = np.arange(room)
    valid = cols[None, :] < length[:, None]
    idx = np.where(valid, start[:, None] + cols[None, :], 0)
    body = np.where(valid, np.asarray(ids)[idx] if len(ids) else 0, 0).astype(np.int32)
    out = np.zeros((len(rows), width), np.int32)
    first = int(prefix is not None)
    if prefix is not None:
        out[:, 0] = prefix
    out[:, first:first + room] = body
    if suffix is not None:
        out[np.arange(len(rows)), first + length] = suffix
    return out


def _round_up(n: Any, multiple: int) -> Any:
    """``n`` (an int or an array) rounded up to a multiple of ``multiple``."""
    return ((n + multiple - 1) // multiple) * multiple


class BatchPlanner:
    """Plans and pads training batches of one split for any (epoch, position)."""

    def __init__(self, split: Split, batch_size: int, batch_by: str, bucket_width: int, seed: int,
                 window_batches: int = 100) -> None:
        self.split = split
        self.batch_size, self.batch_by, self.bucket_width = batch_size, batch_by, bucket_width
        self.seed, self.window_batches = seed, window_batches
        self.src_len = split.src_lengths + 1          # + EOS
        self.tgt_len = split.tgt_lengths + 1          # + BOS (input) / EOS (output)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The row indices of every batch of ``epoch``, in training order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.split))
        if self.batch_by == "sentences":
            window = self.batch_size * self.window_batches
        else:
            window = max(1, self.batch_size * self.window_batches // max(1, int(self.tgt_len.mean())))
        batches: list[np.ndarray] = []
        for w in range(0, len(order), window):
            rows = order[w:w + window]
            key = np.maximum(self.src_len[rows], self.tgt_len[rows])
            sort = np.argsort(key, kind="stable")
            rows, key = rows[sort], key[sort]
            if self.batch_by == "sentences":
                batches.extend(rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size))
                continue
            # By tokens: a batch of n sorted sentences costs n * (padded width of its longest).
            width = _round_up(key, self.bucket_width)
            start = 0
            while start < len(rows):
                cost = np.arange(1, len(rows) - start + 1) * width[start:]
                take = max(1, int(np.searchsorted(cost, self.batch_size, side="right")))
                batches.append(rows[start:start + take])
                start += take
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]

    def make_batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded ``(src, tgt_in, tgt_out)`` int32 matrices; widths rounded up to the bucket width."""
        s = self.split
        src_w = int(_round_up(self.src_len[rows].max(), self.bucket_width))
        tgt_w = int(_round_up(self.tgt_len[rows].max(), self.bucket_width))
        src = pad_batch(s.src_ids, s.src_offsets, rows, src_w, suffix=EOS_ID)
        tgt_in = pad_batch(s.tgt_ids, s.tgt_offsets, rows, tgt_w, prefix=BOS_ID)
        tgt_out = pad_batch(s.tgt_ids, s.tgt_offsets, rows, tgt_w, suffix=EOS_ID)
        return src, tgt_in, tgt_out

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, int, tuple[np.ndarray, ...]]]:
        """Yield ``(epoch, index in epoch, batch)`` from ``(epoch, start)`` on, forever."""
        while True:
            plan = self.plan(epoch)
            for i in range(start, len(plan)):
                yield epoch, i, self.make_batch(plan[i])
            epoch, start = epoch + 1, 0

