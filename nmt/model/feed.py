"""The ``feed`` decoder's step loop for CPUs, with a hand-written backward pass.

In the ``feed`` placement (:class:`nmt.model.decoder.FeedAttentionDecoder`) the previous state
queries Bahdanau attention at every target step and the context is fed into the GRU's input,
so the decoder is a step loop. Differentiating a ``tf.while_loop`` automatically replays every
op of every step backwards, with a stack per intermediate tensor and the weight gradients
accumulated step by step. :func:`feed_sequence` records what its backward pass needs during the
forward loop and runs a hand-written backward loop instead:

- per step (latest first): the GRU gates (:func:`gru.gru_update_grad`), the context's gradient
  through the GRU input kernel, the attention softmax and tanh, and the state's gradient through
  the recurrent kernel and the query layer (three small matmuls in all);
- after the loop, one matmul each over all steps: the gradients of the recurrent kernel, of the
  context part of the input kernel, of the query layer, and of the memory (attention weights
  times context gradients).

The weights stay in the Keras layers; GPUs run the decoder's plain loop (differentiated by
TensorFlow). The tests check outputs and gradients against that loop.
"""

from __future__ import annotations

import tensorflow as tf

from nmt.model import gru
from nmt.model.attention import additive_attention


def feed_sequence(x_proj: tf.Tensor, h0: tf.Tensor, memory: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor,
                  query_kernel: tf.Tensor, query_bias: tf.Tensor, score_kernel: tf.Tensor,
                  context_kernel: tf.Tensor, recurrent_kernel: tf.Tensor, recurrent_bias: tf.Tensor,
                  training: bool = True) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Run the feed decoder over time-major inputs: ``(states [T, B, U], contexts [T, B, D], weights [T, B, S])``.

    At step t: ``q = h @ query_kernel + query_bias``; ``weights = softmax(v^T tanh(q + keys))``
    over the unmasked memory positions (``score_kernel`` is v, [A, 1]); ``context = weights @
    memory``; ``h = GRU(x_proj[t] + context @ context_kernel, h)``. ``x_proj`` [T, B, 3U] is the
    embedding part of the GRU input projection plus the input bias; ``h0`` [B, U]; ``memory``
    [B, S, D]; ``keys`` [B, S, A]; ``memory_mask`` [B, S] (True = real). Without ``training`` the
    loop records nothing for a backward pass.
    """
    dtype = x_proj.dtype
    params = [tf.cast(a, dtype) for a in (h0, memory, keys, query_kernel, query_bias, score_kernel,
                                          context_kernel, recurrent_kernel, recurrent_bias)]

    def forward(h0, memory, keys, wq, bq, v, kc, rk, rb, record):
        units, steps = h0.shape[-1], tf.shape(x_proj)[0]
        arrays = [tf.TensorArray(dtype, size=steps) for _ in range(8 if record else 3)]

        def step(t, h, arrays):
            q = tf.matmul(h, wq) + bq
            context, weights = (a[:, 0] for a in additive_attention(q[:, None, :], keys, memory, memory_mask, v))
            hr = tf.matmul(h, rk) + rb
            h_new, z, r, cand = gru.gru_update(x_proj[t] + tf.matmul(context, kc), hr, h)
            values = [h_new, context, weights] + ([z, r, cand, hr[:, 2 * units:], q] if record else [])
            return t + 1, h_new, [a.write(t, x) for a, x in zip(arrays, values)]

        _, _, arrays = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, arrays), maximum_iterations=steps)
        return [a.stack() for a in arrays]

    if not training:
        return tuple(forward(*params, record=False))

    @tf.custom_gradient
    def run(x_proj, h0, memory, keys, wq, bq, v, kc, rk, rb):
        steps = tf.shape(x_proj)[0]
        outputs, contexts, weights, z_all, r_all, cand_all, hr_h_all, q_all = forward(
            h0, memory, keys, wq, bq, v, kc, rk, rb, record=True)

        def grad(d_outputs, d_contexts, d_weights):
            d_contexts = tf.zeros_like(contexts) if d_contexts is None else d_contexts
            d_weights = tf.zeros_like(weights) if d_weights is None else d_weights
            h_prev = tf.concat([h0[None], outputs[:-1]], 0)
            # plain matmuls on transposed copies beat transpose_b on few rows
            rk_t, wq_t, kc_t, v_row = tf.transpose(rk), tf.transpose(wq), tf.transpose(kc), v[:, 0]

            def step(i, dh, d_keys, d_v, arrays):
                t = steps - 1 - i
                d_x, d_hr, dh_prev = gru.gru_update_grad(dh + d_outputs[t], h_prev[t], z_all[t], r_all[t],
                                                         cand_all[t], hr_h_all[t])
                d_context = d_contexts[t] + tf.matmul(d_x, kc_t)
                w = weights[t]
                d_w = d_weights[t] + tf.matmul(memory, d_context[:, :, None])[:, :, 0]
                d_scores = w * (d_w - tf.reduce_sum(w * d_w, -1, keepdims=True))  # softmax; 0 where masked
                hidden = tf.tanh(q_all[t][:, None, :] + keys)                     # recomputed, not stored
                d_pre = d_scores[:, :, None] * v_row * (1.0 - hidden * hidden)    # [B, S, A]
                d_q = tf.reduce_sum(d_pre, 1)
                d_v += tf.matmul(tf.reshape(d_scores, [1, -1]), tf.reshape(hidden, [-1, hidden.shape[-1]]))
                dh_prev += tf.matmul(d_hr, rk_t) + tf.matmul(d_q, wq_t)
                values = (d_x, d_hr, d_context, d_q)
                return i + 1, dh_prev, d_keys + d_pre, d_v, [a.write(t, x) for a, x in zip(arrays, values)]

            arrays = [tf.TensorArray(dtype, size=steps) for _ in range(4)]
            zeros = (tf.zeros_like(h0), tf.zeros_like(keys), tf.zeros_like(tf.transpose(v)))
            _, d_h0, d_keys, d_v, arrays = tf.while_loop(lambda i, *_: i < steps, step, (0, *zeros, arrays),
                                                         maximum_iterations=steps)
            d_x, d_hr, d_context, d_q = (a.stack() for a in arrays)

            def flat(a):
                return tf.reshape(a, [-1, a.shape[-1]])

            # the weight gradients: one matmul (or sum) over all steps each
            d_memory = tf.matmul(tf.transpose(weights, [1, 2, 0]), tf.transpose(d_context, [1, 0, 2]))
            h_prev, d_hr, d_q = flat(h_prev), flat(d_hr), flat(d_q)
            d_wq, d_bq = tf.matmul(h_prev, d_q, transpose_a=True), tf.reduce_sum(d_q, 0)
            d_kc = tf.matmul(flat(contexts), flat(d_x), transpose_a=True)
            d_rk, d_rb = tf.matmul(h_prev, d_hr, transpose_a=True), tf.reduce_sum(d_hr, 0)
            return d_x, d_h0, d_memory, d_keys, d_wq, d_bq, tf.transpose(d_v), d_kc, d_rk, d_rb

        return (outputs, contexts, weights), grad

    return run(x_proj, *params)
