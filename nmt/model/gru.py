"""A ``keras.layers.GRU`` whose CPU path precomputes the input projection.

On a GPU the layer is exactly ``keras.layers.GRU`` (``reset_after=True``, tanh/sigmoid, no
recurrent dropout): Keras picks the fused cuDNN kernel. On a CPU, Keras runs a generic loop
that multiplies the input by the input kernel at every step; here that product is computed
for all steps in one large matmul before the loop, and the loop only does the recurrent
matmul. Same weights, same results, noticeably faster on CPUs.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def matmul_last(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """``x [..., I] @ w [I, J]`` as one 2-D matmul (einsum's gradient is slow on oneDNN CPUs)."""
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, [-1, shape[-1]]), w)
    return tf.reshape(y, tf.concat([shape[:-1], tf.shape(w)[-1:]], 0))


def gru_scan(x_proj: tf.Tensor, h0: tf.Tensor, recurrent_kernel: tf.Tensor, recurrent_bias: tf.Tensor,
             mask: tf.Tensor | None, zero_output_for_mask: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """Run GRU recurrences (reset-after form) over time-major input projections.

    ``x_proj``: [T, B, 3H] = inputs @ kernel + input_bias; ``mask``: [T, B] or None. Masked
    steps keep the previous state and output it again, or output zeros with
    ``zero_output_for_mask``, exactly as Keras does.
    Returns outputs [T, B, H] and the last state [B, H].
    """
    steps = tf.shape(x_proj)[0]
    units = tf.shape(h0)[-1]
    outputs = tf.TensorArray(x_proj.dtype, size=steps)
    xs = tf.TensorArray(x_proj.dtype, size=steps).unstack(x_proj)
    ms = tf.TensorArray(tf.bool, size=steps).unstack(mask) if mask is not None else None

    def body(t, h, out):
        x = xs.read(t)
        hr = tf.matmul(h, recurrent_kernel) + recurrent_bias
        x_z, x_r, x_h = x[:, :units], x[:, units:2 * units], x[:, 2 * units:]
        h_z, h_r, h_h = hr[:, :units], hr[:, units:2 * units], hr[:, 2 * units:]
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        hh = tf.tanh(x_h + r * h_h)
        h_new = z * h + (1.0 - z) * hh
        out_t = h_new
        if ms is not None:
            m = ms.read(t)[:, None]
            h_new = tf.where(m, h_new, h)
            out_t = tf.where(m, h_new, tf.zeros_like(h_new)) if zero_output_for_mask else h_new
        return t + 1, h_new, out.write(t, out_t)

    _, h_last, outputs = tf.while_loop(lambda t, *_: t < steps, body, (0, h0, outputs),
                                       maximum_iterations=steps)
    return outputs.stack(), h_last


@keras.saving.register_keras_serializable("nmt")
class FastCpuGRU(keras.layers.GRU):
    """``keras.layers.GRU`` with a faster CPU loop and the cuDNN path kept for GPUs."""

    def __init__(self, units: int, **kwargs) -> None:
        kwargs.setdefault("reset_after", True)
        super().__init__(units, **kwargs)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """Keras' loop on GPUs (cuDNN), the precomputed-projection loop elsewhere."""
        if tf.config.list_logical_devices("GPU") or self.recurrent_dropout or self.dropout \
                or not self.cell.reset_after:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if isinstance(initial_state, (list, tuple)):
            initial_state = initial_state[0]
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        input_bias, recurrent_bias = cell.bias[0], cell.bias[1]
        x = tf.transpose(sequences, [1, 0, 2])
        m = tf.transpose(mask, [1, 0]) if mask is not None else None
        if self.go_backwards:
            x = tf.reverse(x, [0])
            m = tf.reverse(m, [0]) if m is not None else None
        x_proj = matmul_last(x, cell.kernel) + input_bias
        outputs, last = gru_scan(x_proj, initial_state, cell.recurrent_kernel, recurrent_bias, m,
                                 self.zero_output_for_mask)
        return last, tf.transpose(outputs, [1, 0, 2]), [last]
