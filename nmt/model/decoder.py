"""The two decoder placements of Bahdanau attention.

``PostAttentionDecoder`` (``post``, the Keras attention example's layout): the GRU runs over
the whole target in one op, then attention is computed for every decoder output at once and
concatenated with it. ``FeedAttentionDecoder`` (``feed``, the classic Bahdanau decoder): at
each step the previous state queries the attention and the context is fed into the GRU
input, which needs a step loop (on CPUs :func:`nmt.model.feed.feed_sequence`, with a
hand-written backward pass).

Both produce the attentional hidden layer ``tanh(W [s_t; c_t])`` that the shared output
projection turns into logits, and both expose the same one-step interface for decoding.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model import feed, gru
from nmt.model.attention import BahdanauAttention


class _DecoderBase(keras.layers.Layer):
    """Embedding, attention and attentional layer shared by both placements."""

    def __init__(self, vocab_size: int, embedding_dim: int, units: int, attention_units: int,
                 attentional_units: int, dropout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.attention_units, self.attentional_units, self.dropout_rate = attention_units, attentional_units, dropout
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.attention = BahdanauAttention(attention_units, name="attention")
        self.attentional = keras.layers.Dense(attentional_units, activation="tanh", name="attentional")
        self.dropout = keras.layers.Dropout(dropout)

    def _project_inputs(self, embedded: tf.Tensor) -> tf.Tensor:
        """The GRU's input projection ``x @ kernel + input bias`` [..., 3D] of embedded tokens."""
        raise NotImplementedError

    def input_table(self) -> tf.Tensor:
        """The input projection of every target id at once: [vocab, 3D], row ``y`` is what a step
        computes for token ``y``. Worth making once for weights that no longer change (a loaded
        model): a step then gathers 64 rows instead of a [B, E] x [E, 3D] matmul."""
        return self._project_inputs(self.embedding.embeddings)

    def _step_inputs(self, y_prev: tf.Tensor, input_table: tf.Tensor | None, dtype: tf.DType) -> tf.Tensor:
        """The input projection of the previous tokens: gathered from ``input_table`` if given."""
        if input_table is not None:
            return tf.cast(tf.gather(input_table, y_prev), dtype)
        return self._project_inputs(self.embedding(y_prev))

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
                "units": self.units, "attention_units": self.attention_units,
                "attentional_units": self.attentional_units, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable("nmt")
class PostAttentionDecoder(_DecoderBase):
    """GRU over the whole target, then attention for all positions at once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rnn = keras.layers.GRU(self.units, return_sequences=True, return_state=True, name="gru")

    def call(self, tgt_in: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor,
             state: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Teacher-forced pass: ``(attentional hidden [B, T, A], attention weights [B, T, S])``."""
        x = self.dropout(self.embedding(tgt_in), training=training)
        if self.rnn.built and not gru.cudnn_available():  # the same weights through the fused CPU loop
            outputs, _ = gru.fused_gru(self.rnn, x, initial_state=state, training=training)
        else:
            outputs, _ = self.rnn(x, initial_state=state, training=training)
        context, weights = self.attention(outputs, keys, memory, memory_mask)
        hidden = self.attentional(tf.concat([outputs, context], -1))
        return self.dropout(hidden, training=training), weights

    def _project_inputs(self, embedded: tf.Tensor) -> tf.Tensor:
        return gru.input_projection(self.rnn.cell, embedded)

    def step(self, y_prev: tf.Tensor, state: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor,
             memory_mask: tf.Tensor, input_table: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One decoding step: ``(hidden [B, A], new state [B, D], weights [B, S])``.

        The GRU cell's two matmuls and its gates (:func:`gru.cell_step`) directly: Keras'
        ``GRUCell.call`` computes the same with more ops per step. ``input_table`` is
        :meth:`input_table`, if made already.
        """
        state = gru.cell_step(self.rnn.cell, self._step_inputs(y_prev, input_table, state.dtype), state)
        context, weights = self.attention(state, keys, memory, memory_mask)
        return self.attentional(tf.concat([state, context], -1)), state, weights


@keras.saving.register_keras_serializable("nmt")
class FeedAttentionDecoder(_DecoderBase):
    """Classic Bahdanau decoder: the previous state queries attention, the context feeds the GRU."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cell = keras.layers.GRUCell(self.units, reset_after=True, name="gru_cell")

    def _cell_step(self, x_emb_proj: tf.Tensor, context: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
        """GRU update with the embedding part of the input projection precomputed."""
        kernel = tf.cast(self.cell.kernel[self.embedding_dim:], context.dtype)  # no autocast in step()
        return gru.cell_step(self.cell, x_emb_proj + tf.matmul(context, kernel), h)

    def _ensure_built(self, memory: tf.Tensor) -> None:
        if not self.cell.built:
            self.cell.build((None, self.embedding_dim + memory.shape[-1]))

    def call(self, tgt_in: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor,
             state: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Teacher-forced pass (a compiled step loop): hidden [B, T, A] and weights [B, T, S]."""
        self._ensure_built(memory)
        x = self.dropout(self.embedding(tgt_in), training=training)
        x_proj = self._project_inputs(tf.transpose(x, [1, 0, 2]))
        if gru.cudnn_available() or not self.attention.query_layer.built:
            outputs, context, weights = self._step_loop(x_proj, memory, keys, memory_mask, state)
        else:  # the same maths with a hand-written backward pass (nmt.model.feed)
            att = self.attention
            outputs, context, weights = feed.feed_sequence(
                x_proj, state, memory, keys, memory_mask, att.query_layer.kernel, att.query_layer.bias,
                att.score_layer.kernel, self.cell.kernel[self.embedding_dim:], self.cell.recurrent_kernel,
                self.cell.bias[1], training)
        outputs, context = tf.transpose(outputs, [1, 0, 2]), tf.transpose(context, [1, 0, 2])
        hidden = self.attentional(tf.concat([outputs, context], -1))
        return self.dropout(hidden, training=training), tf.transpose(weights, [1, 0, 2])

    def _step_loop(self, x_proj: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor,
                   state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The teacher-forced loop through the layers, differentiated by TensorFlow (GPUs):
        time-major states, contexts and weights, as :func:`feed.feed_sequence` returns them."""
        steps = tf.shape(x_proj)[0]
        xs = tf.TensorArray(x_proj.dtype, size=steps).unstack(x_proj)
        outs = tf.TensorArray(x_proj.dtype, size=steps)
        ctxs = tf.TensorArray(memory.dtype, size=steps)
        wts = tf.TensorArray(memory.dtype, size=steps)

        def body(t, h, outs, ctxs, wts):
            context, weights = self.attention(h, keys, memory, memory_mask)
            h = self._cell_step(xs.read(t), context, h)
            return t + 1, h, outs.write(t, h), ctxs.write(t, context), wts.write(t, weights)

        _, _, outs, ctxs, wts = tf.while_loop(lambda t, *_: t < steps, body, (0, state, outs, ctxs, wts),
                                              maximum_iterations=steps)
        return outs.stack(), ctxs.stack(), wts.stack()

    def _project_inputs(self, embedded: tf.Tensor) -> tf.Tensor:
        return gru.input_projection(self.cell, embedded, self.embedding_dim)

    def step(self, y_prev: tf.Tensor, state: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor,
             memory_mask: tf.Tensor, input_table: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One decoding step: ``(hidden [B, A], new state [B, D], weights [B, S])``; ``input_table``
        is :meth:`input_table`, if made already."""
        self._ensure_built(memory)
        context, weights = self.attention(state, keys, memory, memory_mask)
        h = self._cell_step(self._step_inputs(y_prev, input_table, state.dtype), context, state)
        return self.attentional(tf.concat([h, context], -1)), h, weights
