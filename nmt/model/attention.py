"""Bahdanau (additive) attention as a reusable Keras layer."""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model import fused
from nmt.model.ops import Dense, apply_2d, matmul_last


def additive_attention(q: tf.Tensor, keys: tf.Tensor, memory: tf.Tensor, memory_mask: tf.Tensor,
                       v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The attention maths for projected queries ``q`` [B, T, U]: ``(context [B, T, D], weights [B, T, S])``.

    ``weights = softmax(v^T tanh(q + keys))`` over the positions where ``memory_mask`` [B, S] is
    True (``v`` [U, 1], ``keys`` [B, S, U]); ``context = weights @ memory`` [B, S, D]. The scores come
    from the fused CPU kernel where it applies (:mod:`nmt.model.fused`), else from TensorFlow's ops.
    """
    with tf.name_scope("additive_attention"):  # its ops are named so in a profile (scripts/bench_translate.py)
        scores = fused.additive_scores(q, keys, v)                          # [B, T, S]
        if scores is None:
            hidden = tf.tanh(q[:, :, None, :] + keys[:, None, :, :])         # [B, T, S, U]
            scores = matmul_last(hidden, v, scoped=False)[..., 0]
        neg = tf.constant(-1e4 if scores.dtype == tf.float16 else -1e9, scores.dtype)
        weights = tf.nn.softmax(tf.where(memory_mask[:, None, :], scores, neg), axis=-1)
        return tf.matmul(weights, memory), weights


@keras.saving.register_keras_serializable("nmt")
class BahdanauAttention(keras.layers.Layer):
    """Additive attention: ``score(q, h) = v^T tanh(W_k h + W_q q)``.

    Keys ``W_k h`` are computed once per batch by :meth:`keys` and passed to every call;
    padding positions of the memory are masked out. ``call`` accepts one query per
    sentence ([B, Q]) or a query per target position ([B, T, Q]) and returns the context
    vectors and the attention weights (rows sum to 1 over unmasked positions).
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.key_layer = Dense(units, use_bias=False, name="key")
        self.query_layer = Dense(units, use_bias=True, name="query")
        self.score_layer = Dense(1, use_bias=False, name="score")

    def build(self, query_shape, memory_shape) -> None:
        """Create the weights from the shapes of :meth:`call`'s ``query`` and ``memory`` (no pass over data)."""
        if not self.key_layer.built:  # :meth:`keys` may have built it already
            self.key_layer.build((None, memory_shape[-1]))
        self.query_layer.build((None, query_shape[-1]))
        self.score_layer.build((None, self.units))
        self.built = True

    def keys(self, memory: tf.Tensor) -> tf.Tensor:
        """Project the memory [B, S, D] into keys [B, S, units] (once per batch)."""
        return apply_2d(self.key_layer, memory)

    def call(self, query: tf.Tensor, keys: tf.Tensor, memory: tf.Tensor,
             memory_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Return ``(context, weights)``: [B, (T,) D] and [B, (T,) S]."""
        single = query.shape.rank == 2
        q = apply_2d(self.query_layer, query[:, None, :] if single else query)  # [B, T, U]
        context, weights = additive_attention(q, keys, memory, memory_mask, tf.cast(self.score_layer.kernel, q.dtype))
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}
