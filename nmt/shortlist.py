"""Lexical shortlists for faster decoding (Marian's ``--shortlist``).

At every decoding step most of the time goes into the output projection over the whole target
vocabulary. A shortlist restricts a batch's projection to the target pieces that can plausibly
appear in its translations: the ``per_source`` pieces most associated with each source piece
of the batch and the ``frequent`` most frequent target pieces, plus the special ids. The
association is the Dice coefficient of sentence-level co-occurrence in the training data,
``2 c(s, t) / (c(s) + c(t))``, where each count is the number of sentence pairs containing the
piece(s). Outputs may differ from full-vocabulary decoding, and the scores are normalised
over the shortlist only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt.dataset import PreparedData, Split
from nmt.errors import InputError, NmtError
from nmt.fileio import atomic_open
from nmt.vocab import EOS_ID

_SPECIAL = np.arange(EOS_ID + 1, dtype=np.int32)  # PAD, UNK, BOS, EOS: ids 0..3, first in every shortlist


@dataclass(frozen=True)
class Shortlist:
    """Candidate target ids per source id and the most frequent target ids."""

    candidates: np.ndarray  # [source vocab, per_source] int32 target ids, -1 where fewer
    frequent: np.ndarray    # [frequent] int32 target ids, most frequent first

    def targets(self, src: np.ndarray) -> np.ndarray:
        """The sorted target ids allowed for a batch of source ids (padding included or not).

        The special ids 0..3 come first, so PAD, UNK, BOS and EOS keep their ids as positions
        in the returned array (the decoders rely on it).
        """
        ids = np.unique(np.asarray(src, np.int64))
        ids = ids[(ids > EOS_ID) & (ids < len(self.candidates))]
        found = self.candidates[ids].ravel()
        out = np.union1d(np.union1d(found[found > EOS_ID], self.frequent[self.frequent > EOS_ID]), _SPECIAL)
        return out.astype(np.int32)

    def save(self, path: str | Path) -> None:
        """Write the shortlist as a ``.npz`` file (through a temporary file, then renamed)."""
        with atomic_open(path, "wb") as f:
            np.savez(f, candidates=self.candidates, frequent=self.frequent)

    @classmethod
    def load(cls, path: str | Path) -> Shortlist:
        """Read a shortlist written by :meth:`save`."""
        try:
            with np.load(path) as data:
                return cls(data["candidates"].astype(np.int32), data["frequent"].astype(np.int32))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: unreadable shortlist ({exc.__class__.__name__})") from None


def build_shortlist(train: Split, src_vocab_size: int, tgt_vocab_size: int, per_source: int,
                    frequent: int) -> Shortlist:
    """Count sentence-level co-occurrences in ``train`` and keep, per source id, the
    ``per_source`` target ids with the highest Dice coefficient, plus the ``frequent`` most
    frequent target ids."""
    src_offsets, tgt_offsets = train.src_offsets, train.tgt_offsets
    src_ids, tgt_ids = np.asarray(train.src_ids, np.int64), np.asarray(train.tgt_ids, np.int64)
    pair_keys, src_count, tgt_count = [], np.zeros(src_vocab_size, np.int64), np.zeros(tgt_vocab_size, np.int64)
    for start in range(0, len(src_offsets) - 1, 2048):  # chunks keep the pair arrays small
        keys = []
        for i in range(start, min(start + 2048, len(src_offsets) - 1)):
            s = np.unique(src_ids[src_offsets[i]:src_offsets[i + 1]])
            t = np.unique(tgt_ids[tgt_offsets[i]:tgt_offsets[i + 1]])
            src_count[s] += 1
            tgt_count[t] += 1
            keys.append((s[:, None] * tgt_vocab_size + t[None, :]).ravel())
        if keys:
            k, c = np.unique(np.concatenate(keys), return_counts=True)
            pair_keys.append((k, c))
    if pair_keys:
        all_keys = np.concatenate([k for k, _ in pair_keys])
        all_counts = np.concatenate([c for _, c in pair_keys])
        keys, inverse = np.unique(all_keys, return_inverse=True)
        counts = np.bincount(inverse, weights=all_counts).astype(np.int64)
    else:
        keys, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    s, t = keys // tgt_vocab_size, keys % tgt_vocab_size
    dice = 2.0 * counts / (src_count[s] + tgt_count[t])
    order = np.lexsort((t, -dice, s))  # by source id, best first; ties by target id
    s, t = s[order], t[order]
    first = np.searchsorted(s, np.arange(src_vocab_size))  # each source id's first row
    rank = np.arange(len(s)) - first[s]
    keep = rank < per_source
    candidates = np.full((src_vocab_size, per_source), -1, np.int32)
    candidates[s[keep], rank[keep]] = t[keep]
    top = np.argsort(-tgt_count, kind="stable")[:frequent].astype(np.int32)
    return Shortlist(candidates, top)


def shortlist_for_run(run_dir: str | Path, prepared_dir: str | Path, run_manifest: dict, per_source: int,
                      frequent: int) -> Shortlist:
    """The shortlist of a run directory: ``RUN/shortlist_{per_source}_{frequent}.npz``, built on first
    use from the prepared training data the run was trained on (checked against the run's copy
    of its manifest) and saved there when the directory is writable."""
    path = Path(run_dir) / f"shortlist_{per_source}_{frequent}.npz"
    if path.is_file():
        shortlist = Shortlist.load(path)
        if shortlist.candidates.shape[1] != per_source or len(shortlist.frequent) > frequent:
            raise InputError(f"{path}: a shortlist of other settings (delete it to build it again)")
        return shortlist
    prepared = Path(prepared_dir)
    if not (prepared / "manifest.json").is_file():
        raise InputError(f"{path}: missing, and the run's prepared data ({prepared}) to build it from is gone")
    data = PreparedData(prepared)
    if data.manifest.get("files") != run_manifest.get("files"):
        raise InputError(f"{prepared}: not the prepared data this run was trained on (manifests differ); "
                         f"cannot build {path}")
    shortlist = build_shortlist(data.split("train"), data.src_vocab_size, data.tgt_vocab_size, per_source, frequent)
    try:
        shortlist.save(path)
    except NmtError:
        pass  # a read-only run directory: the shortlist is used from memory
    return shortlist
