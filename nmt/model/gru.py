"""A fused GRU recurrence for CPUs, with a hand-written backward pass.

``keras.layers.GRU`` runs cuDNN's fused kernel on GPUs, but on CPUs it falls back to a generic
step loop that multiplies the input by the input kernel at every step and leaves the backward
pass to automatic differentiation of the loop (four small matmuls per step, the weight
gradients accumulated step by step). :func:`gru_sequence` computes the same GRU
(``reset_after=True``, the cuDNN form Keras uses) the way cuDNN does:

- the input projection of all steps is one large matmul, made by the caller;
- the loop does one small matmul per step forward (``h @ R``) and one backward (``dR_t @ R^T``);
- the recurrent-weight gradient is one large matmul over all steps after the loop.

The loops' small products run faster on some CPUs with the operands the other way round:
:func:`unit_major_recurrence` decides, per layer, whether a loop keeps its state as [U, B]
(``R^T @ h`` forward, ``R @ dR_t`` backward) instead of [B, U]; the results are the same.

The weights stay in the Keras layers (checkpoints, ``get_config`` and the GPU path are
unchanged); the encoder and decoder call the Keras layers (cuDNN) where a GPU is visible and
:func:`fused_gru` otherwise. The tests check outputs and gradients against ``keras.layers.GRU``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model.ops import compute_dtype, dense, matmul, weights_first_faster


def unit_major_recurrence(units: int) -> bool:
    """Whether :func:`gru_sequence`'s loops for a GRU of ``units`` keep their states as [U, B].

    On CPUs with AVX2 and without AVX-512 (oneDNN's AVX2 GEMM), a step's product of 32-64 rows
    runs 1.4-1.6x as fast as ``R^T [3U, U] @ h^T [U, B]`` than as ``h [B, U] @ R [U, 3U]``; at 512
    units the GRU's forward and backward passes take 0.79x the time, transposes in and out
    included, but at 256 units 1.14x (docs/benchmarks.md, Training speed, session 37). Elsewhere
    (AVX-512 CPUs, other architectures) the loops stay [B, U], as they were measured. Decided when
    a function is traced; the one switch to patch to compare the two layouts.
    """
    return units >= 512 and weights_first_faster()


def gru_update(x_proj: tf.Tensor, hr: tf.Tensor, h: tf.Tensor, axis: int = -1
               ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """One GRU step from its two projections: ``x_proj = x @ kernel + input bias`` and
    ``hr = h @ recurrent_kernel + recurrent bias`` (both [B, 3U], gates z, r, h).

    Returns ``(new state, z, r, candidate)``, each [B, U]. ``axis=0``: the same in the unit-major
    layout (``x_proj`` and ``hr`` [3U, B], ``h`` and the results [U, B]).
    """
    x_z, x_r, x_h = tf.split(x_proj, 3, axis)
    hr_z, hr_r, hr_h = tf.split(hr, 3, axis)
    z = tf.sigmoid(x_z + hr_z)
    r = tf.sigmoid(x_r + hr_r)
    cand = tf.tanh(x_h + r * hr_h)
    return cand + z * (h - cand), z, r, cand


def gru_update_grad(dh: tf.Tensor, h_prev: tf.Tensor, z: tf.Tensor, r: tf.Tensor, cand: tf.Tensor,
                    hr_h: tf.Tensor, axis: int = -1) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The backward pass of :func:`gru_update` for an upstream gradient ``dh`` of the new state.

    ``hr_h`` is the candidate's part of ``h @ recurrent_kernel + recurrent bias``. Returns
    ``(d_x_proj [B, 3U], d_hr [B, 3U], dh_prev through the gate only [B, U])``; the caller adds
    ``d_hr @ recurrent_kernel^T`` to the last to get the whole gradient of ``h_prev``. ``axis=0``:
    the unit-major layout, as in :func:`gru_update`.
    """
    d_cand = dh * (1.0 - z) * (1.0 - cand * cand)
    d_z = dh * (h_prev - cand) * z * (1.0 - z)
    d_r = d_cand * hr_h * r * (1.0 - r)
    return tf.concat([d_z, d_r, d_cand], axis), tf.concat([d_z, d_r, d_cand * r], axis), dh * z


def input_projection(cell: keras.layers.GRUCell, x: tf.Tensor, kernel_rows: int | None = None) -> tf.Tensor:
    """``x @ kernel + input bias`` of a built Keras ``GRUCell`` for ``x`` [..., E]: [..., 3U] in ``x``'s dtype.

    ``kernel_rows`` uses the first rows of the kernel only (the embedding's part of a wider input).
    The weights are cast to ``x``'s dtype under mixed precision (:func:`~nmt.model.ops.dense`):
    outside a layer call (decoding steps) Keras does not autocast them.
    """
    kernel = cell.kernel if kernel_rows is None else cell.kernel[:kernel_rows]
    return dense(x, kernel, cell.bias[0])


def _forward(x_proj: tf.Tensor, h0: tf.Tensor, rk: tf.Tensor, rb: tf.Tensor, masks: tf.Tensor | None,
             record: bool, unit_major: bool = False) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
    """The forward loop: ``(outputs [T, B, U], last state, [z, r, candidate, h @ R_h + b] per step if record)``.

    ``unit_major``: every operand and result with its last two axes swapped (``x_proj`` [T, 3U, B],
    ``h0`` [U, B], ``masks`` [T, 1, B], ``rb`` [3U, 1]), ``rk`` the transposed kernel [3U, U].
    """
    axis = 0 if unit_major else -1
    units = h0.shape[axis]
    steps = tf.shape(x_proj)[0]
    arrays = [tf.TensorArray(x_proj.dtype, size=steps) for _ in range(5 if record else 1)]

    def step(t, h, arrays):
        hr = tf.cast(matmul(rk, h), h.dtype) + rb if unit_major else dense(h, rk, rb)
        h_new, z, r, cand = gru_update(x_proj[t], hr, h, axis)
        hr_h = hr[2 * units:] if unit_major else hr[:, 2 * units:]
        if masks is not None:
            h_new = h + masks[t] * (h_new - h)
        values = [h_new, z, r, cand, hr_h] if record else [h_new]
        return t + 1, h_new, [a.write(t, v) for a, v in zip(arrays, values)]

    _, h_last, arrays = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, arrays),
                                      maximum_iterations=steps)  # a bound XLA needs
    stacked = [a.stack() for a in arrays]
    return stacked[0], h_last, stacked[1:]


def gru_sequence(x_proj: tf.Tensor, h0: tf.Tensor, recurrent_kernel: tf.Tensor, recurrent_bias: tf.Tensor,
                 mask: tf.Tensor | None = None, training: bool = True,
                 unit_major: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Run a GRU over time-major projected inputs; returns ``(outputs [T, B, U], final state [B, U])``.

    ``x_proj`` [T, B, 3U] is ``x @ kernel + input bias`` (gates in Keras' order z, r, h);
    ``h0`` [B, U]; ``recurrent_kernel`` [U, 3U]; ``recurrent_bias`` [3U]; ``mask`` [T, B]
    (1 = real step, 0 = padding; where 0 the state is carried over unchanged) or None.
    With ``training`` the loop keeps what the hand-written gradient needs; without, it is a
    plain forward loop (what decoding and a SavedModel use), whose ``recurrent_kernel`` may be
    narrower than ``x_proj`` (a bfloat16 copy: see :func:`~nmt.model.ops.dense`).
    ``unit_major`` (None: :func:`unit_major_recurrence`) runs the loops on states [U, B]: the
    inputs and results are transposed once, outside them.
    """
    dtype = x_proj.dtype
    units = h0.shape[-1]
    unit_major = unit_major_recurrence(units) if unit_major is None else unit_major
    swap = tf.linalg.matrix_transpose if unit_major else (lambda x: x)  # to and from the loops' layout
    h0 = tf.cast(h0, dtype)
    masks = None if mask is None else tf.cast(mask, dtype)[:, :, None]
    masks_l = None if masks is None else swap(masks)
    if not training:
        rk, rb = (tf.transpose(recurrent_kernel), tf.cast(recurrent_bias, dtype)[:, None]) if unit_major else (
            recurrent_kernel, recurrent_bias)
        outputs, h_last, _ = _forward(swap(x_proj), swap(h0), rk, rb, masks_l, False, unit_major)
        return swap(outputs), swap(h_last)
    recurrent_kernel, recurrent_bias = tf.cast(recurrent_kernel, dtype), tf.cast(recurrent_bias, dtype)

    @tf.custom_gradient
    def run(x_proj, h0, rk, rb):
        steps = tf.shape(x_proj)[0]
        rk_c = tf.cast(rk, compute_dtype(dtype))  # under ops.matmul_precision: cast once, not at every step
        h0_l = swap(h0)
        rk_l, rb_l = (tf.transpose(rk_c), rb[:, None]) if unit_major else (rk_c, rb)
        outputs_l, h_last, (z_all, r_all, cand_all, hr_h_all) = _forward(
            swap(x_proj), h0_l, rk_l, rb_l, masks_l, True, unit_major)
        outputs = swap(outputs_l)

        def grad(d_outputs, d_last):
            h_prev_l = tf.concat([h0_l[None], outputs_l[:-1]], 0)
            d_outputs_l = swap(d_outputs)
            rk_t = None if unit_major else tf.transpose(rk_c)  # a plain matmul beats transpose_b on few rows

            def step(i, dh, d_x, d_hr):
                t = steps - 1 - i
                dh = dh + d_outputs_l[t]
                if masks_l is not None:
                    carried, dh = dh * (1.0 - masks_l[t]), dh * masks_l[t]
                d_x_t, d_hr_t, dh_gate = gru_update_grad(dh, h_prev_l[t], z_all[t], r_all[t], cand_all[t],
                                                         hr_h_all[t], 0 if unit_major else -1)
                back = tf.cast(matmul(rk_c, d_hr_t), dtype) if unit_major else matmul(d_hr_t, rk_t)
                dh_prev = dh_gate + back
                if masks_l is not None:
                    dh_prev += carried
                return i + 1, dh_prev, d_x.write(t, d_x_t), d_hr.write(t, d_hr_t)

            arrays = (tf.TensorArray(dtype, size=steps), tf.TensorArray(dtype, size=steps))
            _, dh0, d_x, d_hr = tf.while_loop(lambda i, *_: i < steps, step, (0, swap(d_last), *arrays),
                                              maximum_iterations=steps)
            h_prev = tf.reshape(tf.concat([h0[None], outputs[:-1]], 0), [-1, units])
            d_hr = tf.reshape(swap(d_hr.stack()), [-1, 3 * units])
            return swap(d_x.stack()), swap(dh0), matmul(h_prev, d_hr, transpose_a=True), tf.reduce_sum(d_hr, 0)

        return (outputs, swap(h_last)), grad

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

