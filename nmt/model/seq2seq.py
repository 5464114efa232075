"""The assembled encoder-decoder and its output projection."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from nmt.config import ModelConfig
from nmt.model.decoder import FeedAttentionDecoder, PostAttentionDecoder
from nmt.model.encoder import Encoder
from nmt.model.ops import gather_rows, matmul_last


@keras.saving.register_keras_serializable("nmt")
class OutputProjection(keras.layers.Layer):
    """Projection from the attentional hidden layer to target-vocabulary logits.

    The kernel is stored as [vocab, hidden], like an embedding: the sampled loss gathers its
    rows, so its gradient stays sparse (``IndexedSlices``), and the full logits use one matmul
    with ``transpose_b`` (measured faster than a [hidden, vocab] kernel at V=32k on this CPU).
    With ``tied_embedding`` the target embedding matrix is the kernel.
    """

    def __init__(self, vocab_size: int, tied_embedding: keras.layers.Embedding | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.tied_embedding = tied_embedding

    def build(self, input_shape) -> None:
        if self.tied_embedding is None:
            self.kernel = self.add_weight(name="kernel", shape=(self.vocab_size, input_shape[-1]),
                                          initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")
        self.built = True

    def init_bias_from_counts(self, counts: np.ndarray) -> None:
        """Set the bias to the log of the add-one smoothed relative frequencies of ``counts`` [V]
        (the training targets' piece counts): the logits of a hidden layer of zeros are then the
        unigram distribution.

        From a zero bias, the first steps learn these frequencies through the attentional layer,
        whose tanh units saturate at +-1 doing so; their gradient vanishes and the loss can stay
        at the unigram entropy for a thousand steps or more (docs/benchmarks.md, Quickstart,
        session 39). The bias learns them in no steps at all this way.
        """
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.vocab_size,):
            raise ValueError(f"counts of shape {counts.shape} for a vocabulary of {self.vocab_size}")
        self.bias.assign((np.log(counts + 1.0) - np.log((counts + 1.0).sum())).astype(np.float32))

    def weights_by_row(self) -> tf.Tensor:
        """The projection as a [vocab, hidden] matrix (rows are gathered by the sampled loss)."""
        return self.tied_embedding.embeddings if self.tied_embedding is not None else self.kernel

    def weights_by_column(self, targets: tf.Tensor | None = None, rows: tf.Tensor | None = None) -> tf.Tensor:
        """The projection as a [hidden, vocab] matrix: a transpose made once per decoded batch.

        A decoding step multiplies only a few rows ([B, H]); there ``matmul(transpose_b=True)``
        on the [vocab, hidden] kernel measured 2.3x slower than a plain matmul on this copy.
        ``targets`` (ids [C]) keeps those columns only, in that order: a shortlist's [hidden, C].
        ``rows`` is a copy of :meth:`weights_by_row` to read instead (a loaded model's bfloat16 copy).
        """
        rows = self.weights_by_row() if rows is None else rows
        return tf.transpose(rows if targets is None else gather_rows(rows, targets))

    def call(self, hidden: tf.Tensor, by_column: tf.Tensor | None = None,
             targets: tf.Tensor | None = None) -> tf.Tensor:
        """Logits [..., V] in float32; ``by_column`` is :meth:`weights_by_column`, if made already.

        With ``targets`` (ids [C]; ``by_column`` made with the same ids) the logits [..., C] of
        those targets only. A bfloat16 ``by_column`` (a loaded model's copy) multiplies in bfloat16;
        call this method directly then, not the layer: Keras' ``Layer.__call__`` casts every
        floating tensor argument to the layer's dtype, float32, at every call.
        """
        if by_column is None and targets is not None:
            by_column = self.weights_by_column(targets)
        if by_column is None:
            logits = matmul_last(hidden, tf.cast(self.weights_by_row(), hidden.dtype), transpose_b=True)
        else:  # in the narrower dtype of the two (float16 activations, bfloat16 copies; ops.matmul)
            logits = matmul_last(hidden, by_column)
        bias = self.bias if targets is None else gather_rows(self.bias, targets)
        return tf.cast(logits, tf.float32) + tf.cast(bias, tf.float32)  # autocast makes the bias 16-bit

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable("nmt")
class Seq2Seq(keras.Model):
    """GRU encoder-decoder with Bahdanau attention (``post`` or ``feed`` placement)."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, embedding_dim: int = 256,
                 encoder_units: int = 256, encoder_layers: int = 1, decoder_units: int = 512,
                 attention_units: int = 512, attentional_units: int = 512, attention_placement: str = "post",
                 dropout: float = 0.2, tie_target_embedding: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                             embedding_dim=embedding_dim, encoder_units=encoder_units,
                             encoder_layers=encoder_layers, decoder_units=decoder_units,
                             attention_units=attention_units, attentional_units=attentional_units,
                             attention_placement=attention_placement, dropout=dropout,
                             tie_target_embedding=tie_target_embedding)
        self.encoder = Encoder(src_vocab_size, embedding_dim, encoder_units, encoder_layers, decoder_units,
                               dropout, name="encoder")
        decoder_cls = PostAttentionDecoder if attention_placement == "post" else FeedAttentionDecoder
        self.decoder = decoder_cls(tgt_vocab_size, embedding_dim, decoder_units, attention_units,
                                   attentional_units, dropout, name="decoder")
        self.projection = OutputProjection(
            tgt_vocab_size, self.decoder.embedding if tie_target_embedding else None, name="projection")

    def build(self, input_shape=None) -> None:
        """Create every weight from the settings alone, with no pass over data (each sub-layer's
        ``build`` from the shapes its ``call`` would see)."""
        if not self.encoder.built:
            self.encoder.build((None, None))
        if not self.decoder.built:
            self.decoder.build((None, None), (None, None, 2 * self.encoder.units))
        if not self.projection.built:
            self.projection.build((None, self.decoder.attentional_units))
        self.built = True

    def encode(self, src: tf.Tensor, training: bool = False, frozen_encoder: dict | None = None
               ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(memory, keys, mask, initial decoder state)`` for source ids [B, S]; ``frozen_encoder``
        is the encoder's :meth:`~nmt.model.encoder.Encoder.frozen_weights`, if made (decoding a loaded
        model: the encoder's ``call`` runs without dropout, not through ``Layer.__call__``)."""
        if frozen_encoder:  # not through Layer.__call__, which would cast the bfloat16 copies back to float32
            memory, mask, state = self.encoder.call(src, frozen=frozen_encoder)
        else:
            memory, mask, state = self.encoder(src, training=training)
        return memory, self.decoder.attention.keys(memory), mask, state

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Teacher-forced attentional hidden states [B, T, A] for ``(src, tgt_in)``.

        The losses apply the projection themselves (full or sampled softmax); use
        :meth:`logits` for full logits.
        """
        hidden, _ = self.hidden_and_attention(inputs, training=training)
        return hidden

    def hidden_and_attention(self, inputs: tuple[tf.Tensor, tf.Tensor],
                             training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Teacher-forced attentional hidden states and attention weights."""
        src, tgt_in = inputs
        memory, keys, mask, state = self.encode(src, training=training)
        return self.decoder(tgt_in, memory, keys, mask, state, training=training)

    def logits(self, hidden: tf.Tensor, by_column: tf.Tensor | None = None,
               targets: tf.Tensor | None = None) -> tf.Tensor:
        """Logits (float32) of attentional hidden states over the whole vocabulary, or over the
        ``targets`` ids of a shortlist (see :class:`OutputProjection`)."""
        if by_column is not None:  # maybe a bfloat16 copy: not through Layer.__call__ (OutputProjection.call)
            return self.projection.call(hidden, by_column, targets)
        return self.projection(hidden, by_column, targets)

    def get_config(self) -> dict:
        return dict(self.settings)


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """Create the model described by ``cfg``, its weights built (:meth:`Seq2Seq.build`)."""
    model = Seq2Seq(src_vocab_size, tgt_vocab_size, embedding_dim=cfg.embedding_dim,
                    encoder_units=cfg.encoder_units, encoder_layers=cfg.encoder_layers,
                    decoder_units=cfg.decoder_units, attention_units=cfg.attention_units,
                    attentional_units=cfg.attentional_units, attention_placement=cfg.attention_placement,
                    dropout=cfg.dropout, tie_target_embedding=cfg.tie_target_embedding, name="seq2seq")
    model.build()
    return model
