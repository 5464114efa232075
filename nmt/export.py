"""``nmt export``: a SavedModel that takes raw text and returns translations.

Everything ``nmt translate`` does between reading a line and writing its translation runs
inside the graph, so the consumer needs only TensorFlow and the ``tensorflow-text`` ops:
the same text normalisation (:mod:`nmt.normalize`), SentencePiece encoding of the source
(``tensorflow_text.SentencepieceTokenizer`` holding the serialized model), truncation to
``decoding.max_source_pieces``, the compiled greedy or beam decoder of :mod:`nmt.decoding`
with the same per-sentence length limit, and SentencePiece detokenization. Empty or
whitespace-only inputs give empty translations with score 0, as in ``nmt translate``.

The serving signature ``serving_default`` takes ``text``: a string tensor [B] and returns
``translations`` (string [B]) and ``scores`` (float32 [B]: the sum of log-probabilities for
greedy decoding, the length-normalised score for beam search).
"""

from __future__ import annotations

import datetime
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import tensorflow as tf

from nmt import __version__
from nmt.config import Config, DecodingConfig, dump_config
from nmt.decoding import beam_search, greedy_decode, max_output_lengths
from nmt.errors import InputError
from nmt.model.seq2seq import Seq2Seq
from nmt.vocab import EOS_ID, PAD_ID

SIGNATURE = "serving_default"


def _import_tensorflow_text() -> Any:
    try:
        import tensorflow_text
    except ImportError:
        raise InputError("nmt export needs the tensorflow-text package: pip install 'nmt[export]'") from None
    return tensorflow_text


def normalize_in_graph(text: Any, lowercase: bool) -> Any:
    """The graph version of :func:`nmt.normalize.normalize` for a string tensor.

    Invalid UTF-8 becomes U+FFFD, then NFKC, format characters (Cf) removed, control
    characters and Unicode separators (Cc, Z*) become spaces, optional lowercasing, and runs
    of spaces collapse with the ends stripped. Python and RE2/ICU may disagree on characters
    newer than either's Unicode tables, and on the few whose lowercase is longer (U+0130).
    """
    tft = _import_tensorflow_text()
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
    text = tft.normalize_utf8(text, "NFKC")
    text = tf.strings.regex_replace(text, r"\p{Cf}", "")
    text = tf.strings.regex_replace(text, r"[\p{Cc}\p{Z}]", " ")
    if lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, " +", " ")
    return tf.strings.regex_replace(text, "^ | $", "")


class TranslationModule(tf.Module):
    """The exported object: the model, both SentencePiece tokenizers and the compiled ``translate``."""

    def __init__(self, model: Seq2Seq, src_proto: bytes, tgt_proto: bytes, lowercase: bool,
                 decoding: DecodingConfig) -> None:
        super().__init__(name="nmt_translation")
        tft = _import_tensorflow_text()
        self.model = model
        self.src_tokenizer = tft.SentencepieceTokenizer(model=src_proto)
        self.tgt_tokenizer = tft.SentencepieceTokenizer(model=tgt_proto)
        self.lowercase, self.decoding = lowercase, decoding

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        """Translate a batch of raw source strings: ``{"translations": [B] string, "scores": [B] float32}``."""
        d = self.decoding
        batch = tf.shape(text)[0]
        # An empty batch decodes one empty string (the GRU cannot stack zero rows); sliced off below.
        text = tf.cond(batch > 0, lambda: text, lambda: tf.constant([""]))
        normalised = normalize_in_graph(text, self.lowercase)
        empty = tf.equal(normalised, "")
        ids = self.src_tokenizer.tokenize(normalised)[:, :d.max_source_pieces]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        eos = tf.RaggedTensor.from_tensor(tf.fill([tf.shape(text)[0], 1], EOS_ID))
        src = tf.concat([tf.cast(ids, tf.int32), eos], axis=1).to_tensor(PAD_ID)
        max_lengths = max_output_lengths(lengths, d)
        if d.beam_size == 1:
            tokens, _, scores, _ = greedy_decode(self.model, src, max_lengths, min_length=d.min_length)
        else:
            tokens, _, scores, _ = beam_search(self.model, src, max_lengths, d.beam_size, d.length_penalty,
                                               min_length=d.min_length)
            tokens, scores = tokens[:, 0], scores[:, 0]
        # As nmt.decoding.strip and Vocab.decode: up to the first EOS or PAD, special ids dropped.
        before_end = tf.math.cumprod(tf.cast((tokens != EOS_ID) & (tokens != PAD_ID), tf.int32), axis=1) > 0
        pieces = tf.ragged.boolean_mask(tokens, before_end & (tokens > EOS_ID))
        texts = self.tgt_tokenizer.detokenize(pieces)
        return {"translations": tf.where(empty, "", texts)[:batch],
                "scores": tf.where(empty, 0.0, scores)[:batch]}


def _readme(run_dir: Path, checkpoint: str, config: Config, decoding: DecodingConfig) -> str:
    method = "greedy decoding" if decoding.beam_size == 1 else (
        f"beam search (beam {decoding.beam_size}, length penalty {decoding.length_penalty:g})")
    limit = (f"min({decoding.max_length_a:g} * source pieces + {decoding.max_length_b}, "
             f"{decoding.max_length_cap})")
    return textwrap.dedent(f"""\
        A translation model exported by nmt {__version__} on {datetime.date.today().isoformat()}.

        Run directory: {run_dir}
        Checkpoint:    {checkpoint}
        Languages:     {config.data.src_lang} -> {config.data.tgt_lang}
        Decoding:      {method}; output length limit {limit} pieces (EOS included);
                       inputs longer than {decoding.max_source_pieces} pieces are truncated.
        config.yaml:   the resolved configuration of the run, decoding as exported.

        Signature "{SIGNATURE}": input "text" (string [batch], raw UTF-8 sentences);
        outputs "translations" (string [batch], detokenized) and "scores" (float32 [batch]:
        sum of log-probabilities for greedy decoding, length-normalised for beam search).
        Empty inputs give empty translations with score 0. Normalisation (NFKC, spaces)
        and SentencePiece run inside the graph.

        Python (needs tensorflow and tensorflow-text, not nmt):

            import tensorflow as tf
            import tensorflow_text  # registers the SentencePiece ops
            model = tf.saved_model.load("THIS_DIRECTORY")
            out = model.signatures["{SIGNATURE}"](text=tf.constant(["A sentence."]))
            print(out["translations"].numpy()[0].decode("utf-8"))

        Command line:

            saved_model_cli show --dir THIS_DIRECTORY --tag_set serve --signature_def {SIGNATURE}

        TensorFlow Serving must have the tensorflow-text ops linked in (SentencepieceOp,
        SentencepieceTokenizeOp, SentencepieceDetokenizeOp, NormalizeUTF8).
        """)


def export_model(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best", beam: int | None = None,
                 overwrite: bool = False) -> Path:
    """Export a trained run as a SavedModel with in-graph SentencePiece and decoding.

    ``checkpoint`` is ``best``, ``last`` or a checkpoint path; ``beam`` overrides the run's
    ``decoding.beam_size`` (1: greedy). The directory appears whole or not at all; an existing
    ``out_dir`` is refused unless ``overwrite``. Returns the export directory.
    """
    from nmt.fileio import atomic_directory
    from nmt.model.fused import tensorflow_ops_only
    from nmt.translate import Translator

    out = Path(out_dir)
    if out.exists() and not overwrite:  # refused before the model loads (atomic_directory checks again)
        raise InputError(f"{out}: already exists (use --overwrite to replace it)")
    _import_tensorflow_text()
    translator = Translator(run_dir, checkpoint, beam_size=beam)
    decoding = translator.decoding
    config = replace(translator.config, decoding=decoding)
    module = TranslationModule(translator.model, translator.src_vocab.proto, translator.tgt_vocab.proto,
                               config.data.lowercase, decoding)
    with tensorflow_ops_only(), atomic_directory(out, overwrite=overwrite) as tmp:  # no nmt kernel in the graph
        signature = module.translate.get_concrete_function()
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: signature})
        (tmp / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        (tmp / "README.txt").write_text(_readme(Path(run_dir), translator.checkpoint_path, config, decoding),
                                        encoding="utf-8")
    return out
