"""A fused GRU recurrence for CPUs, with a hand-written backward pass.

``keras.layers.GRU`` runs cuDNN's fused kernel on GPUs, but on CPUs it falls back to a generic
step loop that multiplies the input by the input kernel at every step and leaves the backward
pass to automatic differentiation of the loop (four small matmuls per step, the weight
gradients accumulated step by step). :func:`gru_sequence` computes the same GRU
(``reset_after=True``, the cuDNN form Keras uses) the way cuDNN does:

- the input projection of all steps is one large matmul, made by the caller;
- the loop does one small matmul per step forward (``h @ R``) and one backward (``dR_t @ R^T``);
- the recurrent-weight gradient is one large matmul over all steps after the loop.

The weights stay in the Keras layers (checkpoints, ``get_config`` and the GPU path are
unchanged); the encoder and decoder call the Keras layers (cuDNN) where a GPU is visible and
:func:`fused_gru` otherwise. The tests check outputs and gradients against ``keras.layers.GRU``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model.ops import compute_dtype, dense, matmul


def gru_update(x_proj: tf.Tensor, hr: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """One GRU step from its two projections: ``x_proj = x @ kernel + input bias`` and
    ``hr = h @ recurrent_kernel + recurrent bias`` (both [B, 3U], gates z, r, h).

    Returns ``(new state, z, r, candidate)``, each [B, U].
    """
    units = h.shape[-1]
    z = tf.sigmoid(x_proj[:, :units] + hr[:, :units])
    r = tf.sigmoid(x_proj[:, units:2 * units] + hr[:, units:2 * units])
    cand = tf.tanh(x_proj[:, 2 * units:] + r * hr[:, 2 * units:])
    return cand + z * (h - cand), z, r, cand


def gru_update_grad(dh: tf.Tensor, h_prev: tf.Tensor, z: tf.Tensor, r: tf.Tensor, cand: tf.Tensor,
                    hr_h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The backward pass of :func:`gru_update` for an upstream gradient ``dh`` of the new state.

    ``hr_h`` is the candidate's part of ``h @ recurrent_kernel + recurrent bias``. Returns
    ``(d_x_proj [B, 3U], d_hr [B, 3U], dh_prev through the gate only [B, U])``; the caller adds
    ``d_hr @ recurrent_kernel^T`` to the last to get the whole gradient of ``h_prev``.
    """
    d_cand = dh * (1.0 - z) * (1.0 - cand * cand)
    d_z = dh * (h_prev - cand) * z * (1.0 - z)
    d_r = d_cand * hr_h * r * (1.0 - r)
    return tf.concat([d_z, d_r, d_cand], -1), tf.concat([d_z, d_r, d_cand * r], -1), dh * z


def input_projection(cell: keras.layers.GRUCell, x: tf.Tensor, kernel_rows: int | None = None) -> tf.Tensor:
    """``x @ kernel + input bias`` of a built Keras ``GRUCell`` for ``x`` [..., E]: [..., 3U] in ``x``'s dtype.

    ``kernel_rows`` uses the first rows of the kernel only (the embedding's part of a wider input).
    The weights are cast to ``x``'s dtype under mixed precision (:func:`~nmt.model.ops.dense`):
    outside a layer call (decoding steps) Keras does not autocast them.
    """
    kernel = cell.kernel if kernel_rows is None else cell.kernel[:kernel_rows]
    return dense(x, kernel, cell.bias[0])


def _forward(x_proj: tf.Tensor, h0: tf.Tensor, rk: tf.Tensor, rb: tf.Tensor, masks: tf.Tensor | None,
             record: bool) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
    """The forward loop: ``(outputs [T, B, U], last state, [z, r, candidate, h @ R_h + b] per step if record)``."""
    units = h0.shape[-1]
    steps = tf.shape(x_proj)[0]
    arrays = [tf.TensorArray(x_proj.dtype, size=steps) for _ in range(5 if record else 1)]

    def step(t, h, arrays):
        hr = dense(h, rk, rb)
        h_new, z, r, cand = gru_update(x_proj[t], hr, h)
        hr_h = hr[:, 2 * units:]
        if masks is not None:
            h_new = h + masks[t] * (h_new - h)
        values = [h_new, z, r, cand, hr_h] if record else [h_new]
        return t + 1, h_new, [a.write(t, v) for a, v in zip(arrays, values)]

    _, h_last, arrays = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, arrays),
                                      maximum_iterations=steps)  # a bound XLA needs
    stacked = [a.stack() for a in arrays]
    return stacked[0], h_last, stacked[1:]


def gru_sequence(x_proj: tf.Tensor, h0: tf.Tensor, recurrent_kernel: tf.Tensor, recurrent_bias: tf.Tensor,
                 mask: tf.Tensor | None = None, training: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """Run a GRU over time-major projected inputs; returns ``(outputs [T, B, U], final state [B, U])``.

    ``x_proj`` [T, B, 3U] is ``x @ kernel + input bias`` (gates in Keras' order z, r, h);
    ``h0`` [B, U]; ``recurrent_kernel`` [U, 3U]; ``recurrent_bias`` [3U]; ``mask`` [T, B]
    (1 = real step, 0 = padding; where 0 the state is carried over unchanged) or None.
    With ``training`` the loop keeps what the hand-written gradient needs; without, it is a
    plain forward loop (what decoding and a SavedModel use), whose ``recurrent_kernel`` may be
    narrower than ``x_proj`` (a bfloat16 copy: see :func:`~nmt.model.ops.dense`).
    """
    dtype = x_proj.dtype
    h0 = tf.cast(h0, dtype)
    masks = None if mask is None else tf.cast(mask, dtype)[:, :, None]
    if not training:
        outputs, h_last, _ = _forward(x_proj, h0, recurrent_kernel, recurrent_bias, masks, record=False)
        return outputs, h_last
    recurrent_kernel, recurrent_bias = tf.cast(recurrent_kernel, dtype), tf.cast(recurrent_bias, dtype)

    @tf.custom_gradient
    def run(x_proj, h0, rk, rb):
        units = h0.shape[-1]
        steps = tf.shape(x_proj)[0]
        rk_c = tf.cast(rk, compute_dtype(dtype))  # under ops.matmul_precision: cast once, not at every step
        outputs, h_last, (z_all, r_all, cand_all, hr_h_all) = _forward(x_proj, h0, rk_c, rb, masks, record=True)

        def grad(d_outputs, d_last):
            h_prev = tf.concat([h0[None], outputs[:-1]], 0)
            rk_t = tf.transpose(rk_c)  # a plain matmul beats transpose_b on few rows

            def step(i, dh, d_x, d_hr):
                t = steps - 1 - i
                dh = dh + d_outputs[t]
                if masks is not None:
                    carried, dh = dh * (1.0 - masks[t]), dh * masks[t]
                d_x_t, d_hr_t, dh_gate = gru_update_grad(dh, h_prev[t], z_all[t], r_all[t], cand_all[t], hr_h_all[t])
                dh_prev = dh_gate + matmul(d_hr_t, rk_t)
                if masks is not None:
                    dh_prev += carried
                return i + 1, dh_prev, d_x.write(t, d_x_t), d_hr.write(t, d_hr_t)

            arrays = (tf.TensorArray(dtype, size=steps), tf.TensorArray(dtype, size=steps))
            _, dh0, d_x, d_hr = tf.while_loop(lambda i, *_: i < steps, step, (0, d_last, *arrays),
                                              maximum_iterations=steps)
            h_prev, d_hr = tf.reshape(h_prev, [-1, units]), tf.reshape(d_hr.stack(), [-1, 3 * units])
            return d_x.stack(), dh0, matmul(h_prev, d_hr, transpose_a=True), tf.reduce_sum(d_hr, 0)

        return (outputs, h_last), grad

    return run(x_proj, h0, recurrent_kernel, recurrent_bias)


def cudnn_available() -> bool:
    """Whether Keras' GRU will run cuDNN (a GPU is visible); decided when a function is traced.

    The encoder and decoder ask this (as ``gru.cudnn_available()``) to choose between the Keras
    layer and :func:`fused_gru`: the one switch to patch to compare the two on a CPU.
    """
    return bool(tf.config.list_logical_devices("GPU"))


def fused_gru(layer: keras.layers.GRU, x: tf.Tensor, initial_state: tf.Tensor | None = None,
              lengths: tf.Tensor | None = None, reverse: bool = False, training: bool = True,
              frozen: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """The GRU of a built Keras ``layer`` over ``x`` [B, T, E] by :func:`gru_sequence`: ``(outputs [B, T, U], state)``.

    ``lengths`` [B] marks right padding (the state stops at each sentence's end); ``reverse``
    runs each sentence from its last real step to its first, as the backward half of a
    bidirectional layer does (outputs stay aligned with ``x``). ``frozen`` ``(kernel, recurrent
    kernel, bias [2, 3U])`` replaces the layer's weights when not ``training`` (a loaded model's
    copies, see :meth:`nmt.model.encoder.Encoder.frozen_weights`).
    """
    cell = layer.cell
    kernel, recurrent_kernel, bias = frozen or (cell.kernel, cell.recurrent_kernel, cell.bias)
    steps = tf.shape(x)[1]
    if initial_state is None:
        initial_state = tf.zeros([tf.shape(x)[0], layer.units], x.dtype)
    if reverse:
        x = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)
    x_proj = dense(tf.transpose(x, [1, 0, 2]), kernel, bias[0])
    mask = None if lengths is None else tf.transpose(tf.sequence_mask(lengths, steps))
    outputs, state = gru_sequence(x_proj, initial_state, recurrent_kernel, bias[1], mask, training)
    outputs = tf.transpose(outputs, [1, 0, 2])
    if reverse:
        outputs = tf.reverse_sequence(outputs, lengths, seq_axis=1, batch_axis=0)
    return outputs, state

