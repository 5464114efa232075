"""The SentencePiece wrapper: training, loading with checks, encoding and decoding.

Every model the toolkit makes has the fixed special ids ``pad=0, unk=1, bos=2, eos=3``;
loading a model with other ids is refused, so ids written by ``nmt prepare`` always mean
the same thing to training and translation.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from nmt.errors import InputError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def train_sentencepiece(sentences: Iterable[str], model_type: str, vocab_size: int,
                        character_coverage: float) -> bytes:
    """Train a SentencePiece model on ``sentences`` and return the serialized model.

    ``vocab_size`` is a soft limit, so a small corpus gives a smaller vocabulary rather than
    an error. One thread keeps the result byte-identical from run to run.
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model,
            model_type=model_type, vocab_size=vocab_size, character_coverage=character_coverage,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            hard_vocab_limit=False, input_sentence_size=0, shuffle_input_sentence=False,
            max_sentence_length=1 << 16, num_threads=1, minloglevel=2,
            train_extremely_large_corpus=False)
    except RuntimeError as exc:
        message = str(exc).splitlines()[0]
        m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
        if m:
            raise InputError(f"data.sentencepiece.vocab_size={m.group(1)} is smaller than the {m.group(2)} "
                             "characters the corpus needs; raise it or lower "
                             "data.sentencepiece.character_coverage") from None
        message = re.sub(r"^\w+: \S+\(\d+\) \[.*?\] ", "", message)  # the C++ source location and check
        raise InputError(f"SentencePiece training failed: {message}") from None
    return model.getvalue()


class Vocab:
    """A loaded SentencePiece model with the toolkit's fixed special ids."""

    def __init__(self, model_proto: bytes, name: str = "<sentencepiece>") -> None:
        self.name = name
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as exc:
            raise InputError(f"{name}: not a SentencePiece model ({str(exc).splitlines()[0]})") from None
        want = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
        got = {"pad": self.sp.pad_id(), "unk": self.sp.unk_id(), "bos": self.sp.bos_id(), "eos": self.sp.eos_id()}
        if got != want:
            raise InputError(f"{name}: special ids are {got}, nmt needs {want}")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Load a ``.model`` file; a missing or foreign file is an :class:`InputError`."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{p}: SentencePiece model not found") from None
        except OSError as exc:
            raise InputError(f"{p}: cannot read ({exc.strerror})") from None
        return cls(data, str(p))

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """Piece ids of each sentence (no BOS/EOS added)."""
        return self.sp.encode(list(sentences), out_type=int, num_threads=min(4, os.cpu_count() or 1))

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenized text of each id sequence (special ids are dropped)."""
        return [self.sp.decode([i for i in seq if i > EOS_ID]) for seq in ids]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The piece strings of an id sequence."""
        return [self.sp.id_to_piece(int(i)) for i in ids]
