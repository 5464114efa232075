"""Small tensor helpers shared by the model layers."""

from __future__ import annotations

import keras
import tensorflow as tf


def matmul_last(x: tf.Tensor, w: tf.Tensor, transpose_b: bool = False) -> tf.Tensor:
    """``x [..., I] @ w [I, J]`` (or ``@ w.T`` for ``w [J, I]`` with ``transpose_b``) as one 2-D matmul.

    ``einsum``'s gradient builds huge temporaries with oneDNN on CPUs, and Keras' Dense on
    rank > 2 goes through ``tensordot``, whose gradient inside a loop XLA cannot compile.
    """
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, [-1, shape[-1]]), w, transpose_b=transpose_b)
    out_dim = tf.shape(w)[:1] if transpose_b else tf.shape(w)[-1:]
    return tf.reshape(y, tf.concat([shape[:-1], out_dim], 0))


def dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """``x [..., I] @ kernel [I, J] (+ bias)`` in ``x``'s dtype, multiplied in the narrower of the two dtypes.

    float16 activations (mixed precision) multiply the float32 variables cast to float16, as
    Keras' autocast would inside a layer call; float32 activations multiply a bfloat16 kernel
    (a copy made once for decoding, see ``step_weights`` in :mod:`nmt.model.decoder`) cast to
    bfloat16 themselves, with the product cast back to float32.
    """
    x = tf.convert_to_tensor(x)  # a variable (an embedding matrix) reads as its value
    compute = x.dtype if x.dtype.size <= tf.as_dtype(kernel.dtype).size else tf.as_dtype(kernel.dtype)
    x_c, kernel = tf.cast(x, compute), tf.cast(kernel, compute)
    y = tf.cast(tf.matmul(x_c, kernel) if x.shape.rank == 2 else matmul_last(x_c, kernel), x.dtype)
    return y if bias is None else y + tf.cast(bias, x.dtype)


def apply_2d(layer: keras.layers.Layer, x: tf.Tensor) -> tf.Tensor:
    """Apply a Dense layer to the last axis of ``x`` through a 2-D view (see :func:`matmul_last`)."""
    shape = tf.shape(x)
    y = layer(tf.reshape(x, [-1, x.shape[-1]]))
    return tf.reshape(y, tf.concat([shape[:-1], [y.shape[-1]]], 0))
