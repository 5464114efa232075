"""Bahdanau (additive) attention as a reusable Keras layer."""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model.ops import apply_2d


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
        self.key_layer = keras.layers.Dense(units, use_bias=False, name="key")
        self.query_layer = keras.layers.Dense(units, use_bias=True, name="query")
        self.score_layer = keras.layers.Dense(1, use_bias=False, name="score")

    def keys(self, memory: tf.Tensor) -> tf.Tensor:
        """Project the memory [B, S, D] into keys [B, S, units] (once per batch)."""
        return apply_2d(self.key_layer, memory)

    def call(self, query: tf.Tensor, keys: tf.Tensor, memory: tf.Tensor,
             memory_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Return ``(context, weights)``: [B, (T,) D] and [B, (T,) S]."""
        single = query.shape.rank == 2
        q = apply_2d(self.query_layer, query[:, None, :] if single else query)  # [B, T, U]
        hidden = tf.tanh(q[:, :, None, :] + keys[:, None, :, :])                 # [B, T, S, U]
        scores = tf.squeeze(apply_2d(self.score_layer, hidden), -1)             # [B, T, S]
        neg = tf.constant(-1e4 if scores.dtype == tf.float16 else -1e9, scores.dtype)
        scores = tf.where(memory_mask[:, None, :], scores, neg)
        weights = tf.nn.softmax(scores, axis=-1)
        context = tf.matmul(weights, memory)                               # [B, T, D]
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}
