"""The two decoder placements of Bahdanau attention.

``PostAttentionDecoder`` (``post``, the Keras attention example's layout): the GRU runs over
the whole target in one op, then attention is computed for every decoder output at once and
concatenated with it. ``FeedAttentionDecoder`` (``feed``, the classic Bahdanau decoder): at
each step the previous state queries the attention and the context is fed into the GRU
input, which needs a step loop (on CPUs :func:`nmt.model.feed.feed_sequence`, with a
hand-written backward pass).

Both produce the attentional hidden layer ``tanh(W [s_t; c_t])`` that the shared output
projection turns into logits, and both expose the same one-step interface for decoding. A step
reads its weights from a dict (:meth:`_DecoderBase.step_weights`): the layers' variables, or
copies made once for a loaded model (every target id's input projection, bfloat16 kernels).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model import feed, gru
from nmt.model.attention import BahdanauAttention, additive_attention
from nmt.model.ops import Dense, dense, dense_transposed, embed, weights_first_faster

#: the step's kernels that multiply a few rows (its batch), copied transposed for a loaded model where that is faster
SMALL_ROW_KERNELS = ("recurrent_kernel", "context_kernel", "query_kernel", "attentional_kernel")
#: the rows (sentences, or hypotheses in beam search, in a step) for which the transposed copies multiply faster:
#: 1.1-1.2x at 8 rows, 1.3-1.4x at 32-128; 0.7-0.8x at 5, 0.93-0.98x at 640 (docs/benchmarks.md, Translation
#: speed, session 37)
TRANSPOSED_ROWS = (8, 256)


def step_product(x: tf.Tensor, weights: dict[str, tf.Tensor], name: str, bias: tf.Tensor | None = None) -> tf.Tensor:
    """``x [B, I] @ weights[name] (+ bias)``; from the transposed copy ``weights[name + "_transposed"]``, which
    :meth:`_DecoderBase.step_weights` makes where :func:`~nmt.model.ops.weights_first_faster`, when ``B`` is
    within :data:`TRANSPOSED_ROWS` (decided at each step: a decoding loop's rows shrink as sentences end)."""
    def plain() -> tf.Tensor:
        return dense(x, weights[name], bias)

    if f"{name}_transposed" not in weights:
        return plain()
    rows = tf.shape(x)[0]
    fewest, most = TRANSPOSED_ROWS
    return tf.cond((rows >= fewest) & (rows <= most),
                   lambda: dense_transposed(x, weights[f"{name}_transposed"], bias), plain)


class _DecoderBase(keras.layers.Layer):
    """Embedding, attention and attentional layer shared by both placements."""

    def __init__(self, vocab_size: int, embedding_dim: int, units: int, attention_units: int,
                 attentional_units: int, dropout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.attention_units, self.attentional_units, self.dropout_rate = attention_units, attentional_units, dropout
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.attention = BahdanauAttention(attention_units, name="attention")
        self.attentional = Dense(attentional_units, activation="tanh", name="attentional")
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, tgt_in_shape, memory_shape) -> None:
        """Create the weights from the shapes of :meth:`call`'s ``tgt_in`` and ``memory`` (no pass over data)."""
        memory_dim = memory_shape[-1]
        self.embedding.build(tgt_in_shape)
        self._build_gru(memory_dim)
        self.attention.build((None, self.units), memory_shape)
        self.attentional.build((None, self.units + memory_dim))
        self.built = True

    def _build_gru(self, memory_dim: int) -> None:
        """Create the GRU's weights for an encoder memory of width ``memory_dim``."""
        raise NotImplementedError

    def _project_inputs(self, embedded: tf.Tensor) -> tf.Tensor:
        """The GRU's input projection ``x @ kernel + input bias`` [..., 3D] of embedded tokens."""
        raise NotImplementedError

    def input_table(self) -> tf.Tensor:
        """The input projection of every target id at once: [vocab, 3D], row ``y`` is what a step
        computes for token ``y``. Worth making once for weights that no longer change (a loaded
        model): a step then gathers 64 rows instead of a [B, E] x [E, 3D] matmul."""
        return self._project_inputs(self.embedding.embeddings)

    def step_weights(self, kernel_dtype: tf.DType | str | None = None, with_input_table: bool = True
                     ) -> dict[str, tf.Tensor]:
        """The weights one decoding step (:meth:`step`) reads, by name.

        Without ``kernel_dtype``: the variables themselves (what a model in training uses, its
        weights changing between calls). With it, copies made now, for weights that no longer
        change (a loaded model): ``input_table`` (:meth:`input_table`, float32; left out without
        ``with_input_table``) replaces the embedding and the input projection, and the matmul
        kernels (names ending in ``_kernel``) are cast to ``kernel_dtype``. With bfloat16 a step
        multiplies at the CPU's bfloat16 speed, its activations cast to bfloat16 for each product
        (:func:`nmt.model.ops.dense`), while biases, gates, attention scores and softmax stay float32.
        Where :func:`~nmt.model.ops.weights_first_faster`, the copies of :data:`SMALL_ROW_KERNELS` are
        transposed as well (named ``<name>_transposed``; :func:`step_product` picks one by the rows).
        """
        att = self.attention
        weights = {"query_kernel": att.query_layer.kernel, "query_bias": att.query_layer.bias,
                   "score_vector": att.score_layer.kernel, "attentional_kernel": self.attentional.kernel,
                   "attentional_bias": self.attentional.bias, **self._gru_step_weights()}
        if kernel_dtype is None:
            return weights
        frozen = {name: tf.cast(w, kernel_dtype if name.endswith("_kernel") else tf.float32)
                  for name, w in weights.items()}
        if with_input_table:
            frozen["input_table"] = tf.cast(self.input_table(), tf.float32)
        if weights_first_faster():
            for name in SMALL_ROW_KERNELS:
                if name in frozen:
                    frozen[f"{name}_transposed"] = tf.transpose(frozen[name])
        return frozen

    def _gru_step_weights(self) -> dict[str, tf.Tensor]:
        """The GRU's part of :meth:`step_weights` (variables)."""
        raise NotImplementedError

    def _step_inputs(self, y_prev: tf.Tensor, weights: dict[str, tf.Tensor], dtype: tf.DType) -> tf.Tensor:
        """The input projection of the previous tokens: gathered from the input table if ``weights`` has one."""
        if "input_table" in weights:
            return tf.cast(tf.gather(weights["input_table"], y_prev), dtype)
        return self._project_inputs(embed(self.embedding, y_prev))

    def _step_attention(self, query: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor,
                        weights: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """What ``self.attention`` computes for one query per sentence [B, Q], from ``weights``:
        ``(context [B, D], attention weights [B, S])``."""
        q = step_product(query, weights, "query_kernel", weights["query_bias"])
        v = tf.cast(weights["score_vector"], q.dtype)
        context, attention = additive_attention(q[:, None, :], keys, memory, memory_mask, v)
        return context[:, 0], attention[:, 0]

    def _step_hidden(self, h: tf.Tensor, context: tf.Tensor, weights: dict[str, tf.Tensor]) -> tf.Tensor:
        """What ``self.attentional`` computes for one step, from ``weights``: ``tanh(W [h; c] + b)`` [B, A]."""
        hc = tf.concat([h, context], -1)
        return tf.tanh(step_product(hc, weights, "attentional_kernel", weights["attentional_bias"]))

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
        x = self.dropout(embed(self.embedding, tgt_in), training=training)
        if not gru.cudnn_available():  # the same weights through the fused CPU loop
            outputs, _ = gru.fused_gru(self.rnn, x, initial_state=state, training=training)
        else:
            outputs, _ = self.rnn(x, initial_state=state, training=training)
        context, weights = self.attention(outputs, keys, memory, memory_mask)
        hidden = self.attentional(tf.concat([outputs, context], -1))
        return self.dropout(hidden, training=training), weights

    def _build_gru(self, memory_dim: int) -> None:
        self.rnn.build((None, None, self.embedding_dim))

    def _project_inputs(self, embedded: tf.Tensor) -> tf.Tensor:
        return gru.input_projection(self.rnn.cell, embedded)

    def _gru_step_weights(self) -> dict[str, tf.Tensor]:
        cell = self.rnn.cell
        return {"recurrent_kernel": cell.recurrent_kernel, "recurrent_bias": cell.bias[1]}

    def step(self, y_prev: tf.Tensor, state: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor,
             memory_mask: tf.Tensor, weights: dict[str, tf.Tensor] | None = None
             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One decoding step: ``(hidden [B, A], new state [B, D], attention weights [B, S])``.

        The GRU cell's matmuls and gates (:func:`gru.gru_update`) directly: Keras' ``GRUCell.call``
        computes the same with more ops per step. ``weights`` is :meth:`step_weights`, if made
        already (a loaded model); None reads the variables.
        """
        w = weights or self.step_weights()
        hr = step_product(state, w, "recurrent_kernel", w["recurrent_bias"])
        state = gru.gru_update(self._step_inputs(y_prev, w, state.dtype), hr, state)[0]
        context, attention = self._step_attention(state, memory, keys, memory_mask, w)
        return self._step_hidden(state, context, w), state, attention


@keras.saving.register_keras_serializable("nmt")
class FeedAttentionDecoder(_DecoderBase):
    """Classic Bahdanau decoder: the previous state queries attention, the context feeds the GRU."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cell = keras.layers.GRUCell(self.units, reset_after=True, name="gru_cell")

    def _cell_step(self, x_emb_proj: tf.Tensor, context: tf.Tensor, h: tf.Tensor,
                   weights: dict[str, tf.Tensor] | None = None) -> tf.Tensor:
        """GRU update with the embedding part of the input projection precomputed; ``weights`` as in
        :meth:`step` (None: the variables)."""
        w = weights or self._gru_step_weights()
        x_proj = x_emb_proj + step_product(context, w, "context_kernel")
        return gru.gru_update(x_proj, step_product(h, w, "recurrent_kernel", w["recurrent_bias"]), h)[0]

    def _build_gru(self, memory_dim: int) -> None:
        self.cell.build((None, self.embedding_dim + memory_dim))

    def call(self, tgt_in: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor,
             state: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Teacher-forced pass (a compiled step loop): hidden [B, T, A] and weights [B, T, S]."""
        x = self.dropout(embed(self.embedding, tgt_in), training=training)
        x_proj = self._project_inputs(tf.transpose(x, [1, 0, 2]))
        if gru.cudnn_available():
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

    def _gru_step_weights(self) -> dict[str, tf.Tensor]:
        cell = self.cell
        return {"context_kernel": cell.kernel[self.embedding_dim:], "recurrent_kernel": cell.recurrent_kernel,
                "recurrent_bias": cell.bias[1]}

    def step(self, y_prev: tf.Tensor, state: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor,
             memory_mask: tf.Tensor, weights: dict[str, tf.Tensor] | None = None
             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One decoding step: ``(hidden [B, A], new state [B, D], attention weights [B, S])``;
        ``weights`` is :meth:`step_weights`, if made already (None reads the variables)."""
        w = weights or self.step_weights()
        context, attention = self._step_attention(state, memory, keys, memory_mask, w)
        h = self._cell_step(self._step_inputs(y_prev, w, state.dtype), context, state, w)
        return self._step_hidden(h, context, w), h, attention
