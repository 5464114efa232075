"""Small tensor helpers shared by the model layers, and the precision of the training step's matmuls.

:func:`matmul_precision` is a scope (like Keras' autocast scope) read when a function is traced:
inside it, :func:`matmul`, :func:`dense`, :func:`matmul_last` and :class:`Dense` multiply float32
operands in bfloat16 and return float32 (oneDNN accumulates in float32). The training step traces
its forward pass inside it for ``training.precision: bfloat16``; the variables, the gradients that
reach Adam, gates, attention scores, softmax and the loss stay float32.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import keras
import tensorflow as tf

from nmt.sysinfo import cpu_flags

_scope = threading.local()


@contextlib.contextmanager
def matmul_precision(dtype: tf.DType | str | None) -> Iterator[None]:
    """Multiply float32 operands in ``dtype`` (bfloat16) in the functions traced inside; None: as they are."""
    previous = getattr(_scope, "dtype", None)
    _scope.dtype = None if dtype is None or tf.as_dtype(dtype) == tf.float32 else tf.as_dtype(dtype)
    try:
        yield
    finally:
        _scope.dtype = previous


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """The dtype a product of ``dtype`` operands is computed in: the scope's, for float32 inside one."""
    scoped = getattr(_scope, "dtype", None)
    return scoped if scoped is not None and dtype == tf.float32 else dtype


def matmul(a: tf.Tensor, b: tf.Tensor, **kwargs) -> tf.Tensor:
    """``tf.matmul`` in the narrower dtype of the two (``b`` may be a bfloat16 copy) or the scope's
    (:func:`compute_dtype`); the product in ``a``'s dtype. ``b`` may be a Keras variable (dtype a string)."""
    a_dtype, b_dtype = tf.as_dtype(a.dtype), tf.as_dtype(b.dtype)
    compute = compute_dtype(a_dtype if a_dtype.size <= b_dtype.size else b_dtype)
    if compute == a_dtype == b_dtype:
        return tf.matmul(a, b, **kwargs)
    return tf.cast(tf.matmul(tf.cast(a, compute), tf.cast(b, compute), **kwargs), a_dtype)


def matmul_last(x: tf.Tensor, w: tf.Tensor, transpose_b: bool = False, scoped: bool = True) -> tf.Tensor:
    """``x [..., I] @ w [I, J]`` (or ``@ w.T`` for ``w [J, I]`` with ``transpose_b``) as one 2-D matmul.

    ``scoped=False`` multiplies in the operands' dtype whatever :func:`matmul_precision` says (for
    a matrix-vector product, memory-bound, where casting costs more than it saves).

    ``einsum``'s gradient builds huge temporaries with oneDNN on CPUs, and Keras' Dense on
    rank > 2 goes through ``tensordot``, whose gradient inside a loop XLA cannot compile.
    """
    shape = tf.shape(x)
    y = (matmul if scoped else tf.matmul)(tf.reshape(x, [-1, shape[-1]]), w, transpose_b=transpose_b)
    out_dim = tf.shape(w)[:1] if transpose_b else tf.shape(w)[-1:]
    return tf.reshape(y, tf.concat([shape[:-1], out_dim], 0))


def dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """``x [..., I] @ kernel [I, J] (+ bias)`` in ``x``'s dtype, multiplied in the narrower of the two dtypes.

    float16 activations (mixed precision) multiply the float32 variables cast to float16, as
    Keras' autocast would inside a layer call; float32 activations multiply a bfloat16 kernel
    (a copy made once for decoding, see ``step_weights`` in :mod:`nmt.model.decoder`) cast to
    bfloat16 themselves, with the product cast back to float32; so do float32 kernels inside
    :func:`matmul_precision`.
    """
    x = tf.convert_to_tensor(x)  # a variable (an embedding matrix) reads as its value
    y = matmul(x, kernel) if x.shape.rank == 2 else matmul_last(x, kernel)
    return y if bias is None else y + tf.cast(bias, x.dtype)


def weights_first_faster() -> bool:
    """Whether this CPU multiplies a few rows by a weight matrix faster with the weights first.

    On CPUs with AVX2 and without AVX-512 (oneDNN's AVX2 GEMM), ``W^T [J, I] @ x^T [I, B]`` for
    B = 8-256 rows and J up to about 1,500 runs 1.1-1.6x as fast as ``x [B, I] @ W [I, J]``, but
    slower at 5 rows or 640 (docs/benchmarks.md, Training speed and Translation speed, session 37);
    the GRU loops (:mod:`nmt.model.gru`) and a loaded model's decoding steps (:func:`dense_transposed`)
    use that form there. Elsewhere (AVX-512 CPUs, other architectures) products keep the usual form.
    """
    flags = cpu_flags()
    return "avx2" in flags and "avx512f" not in flags


def dense_transposed(x: tf.Tensor, kernel_t: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """:func:`dense` for ``x`` [B, I] given the kernel's transpose ``kernel_t`` [J, I] (a copy made once):
    ``(kernel_t @ x^T)^T (+ bias)`` [B, J] in ``x``'s dtype, the faster form where
    :func:`weights_first_faster`."""
    y = tf.transpose(tf.cast(matmul(kernel_t, x, transpose_b=True), x.dtype))
    return y if bias is None else y + tf.cast(bias, x.dtype)


def gather_rows(table: tf.Tensor | keras.Variable, ids: tf.Tensor) -> tf.Tensor:
    """``tf.gather(table, ids)`` that reads only the gathered rows of a variable (``ResourceGather``).

    A Keras variable converted to a tensor is read whole (``ReadVariableOp``) before the gather.
    Once a variable has had a sparse update (``training.optimizer: lazy_adam`` scatters into the
    embeddings and the output projection) TensorFlow copies it at every such whole read (its
    copy-on-read mode): 8-16 MB per table and read for the reference model. The gradient is
    ``IndexedSlices`` either way.
    """
    if isinstance(table, keras.Variable):
        table = table.value  # the tf.Variable (a cast tensor under autocast): tf.gather calls its sparse_read
    return tf.gather(table, ids)


def embed(embedding: keras.layers.Embedding, ids: tf.Tensor) -> tf.Tensor:
    """``embedding(ids)`` through :func:`gather_rows`: the rows of ``ids`` (cast to int32 unless integers,
    as Keras' layer does) in the layer's compute dtype."""
    if not ids.dtype.is_integer:
        ids = tf.cast(ids, tf.int32)
    return tf.cast(gather_rows(embedding.embeddings, ids), embedding.compute_dtype)


def apply_2d(layer: keras.layers.Layer, x: tf.Tensor) -> tf.Tensor:
    """Apply a Dense layer to the last axis of ``x`` through a 2-D view (see :func:`matmul_last`)."""
    shape = tf.shape(x)
    y = layer(tf.reshape(x, [-1, x.shape[-1]]))
    return tf.reshape(y, tf.concat([shape[:-1], [y.shape[-1]]], 0))


@keras.saving.register_keras_serializable("nmt")
class Dense(keras.layers.Dense):
    """``keras.layers.Dense`` whose product follows :func:`matmul_precision` (same weights, same config)."""

    def call(self, inputs, training=None):
        own = tf.as_dtype(self.compute_dtype)
        if compute_dtype(own) == own:  # no matmul_precision scope for this dtype: Keras' own call
            return super().call(inputs, training=training)
        return self.activation(dense(inputs, self.kernel, self.bias))
