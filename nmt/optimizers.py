"""Adam with one fused TensorFlow kernel per variable.

Keras 3's ``Adam.update_step`` is written with backend-neutral ops: about ten element-wise
TensorFlow ops per variable, each reading and writing whole [vocab, dim] temporaries. For the
reference model (12M parameters, 8M of them in the embeddings and the output projection) a
profile of the sampled-softmax training step put 15% of its CPU time in those ops.
:class:`FusedAdam` computes the same update with ``ResourceApplyAdam``, TensorFlow's fused
Adam kernel (one multithreaded pass over variable, moments and gradient; CPU and GPU):

    m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);  var -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)

which is Keras' formula term for term, so its slot variables, checkpoints and
learning-rate schedules are Keras' own. Clipping by global norm sums squares with
``tf.nn.l2_loss`` (one pass per gradient; Keras squares into a temporary, then sums). Under a
``tf.distribute`` strategy (where Keras updates each replica's copy through the strategy) and
with ``amsgrad`` it defers to Keras.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("nmt")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose per-variable update is TensorFlow's fused ``ResourceApplyAdam``."""

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Apply one Adam update to ``variable`` (sparse gradients are densified, as Keras does)."""
        if self.amsgrad or tf.distribute.has_strategy():
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))

    def _clip_gradients(self, grads):
        """Clip by global norm exactly as Keras does, with one-pass sums of squares.

        Like Keras (and ``tf.clip_by_global_norm``) a sparse gradient's norm is taken over its
        slices as they are (repeated rows not summed first); a NaN or inf norm gives NaN gradients.
        """
        if self.clipnorm or not self.global_clipnorm or self.global_clipnorm <= 0:
            return super()._clip_gradients(grads)

        def values(g):
            return g.values if isinstance(g, tf.IndexedSlices) else g

        norm = tf.sqrt(2.0 * tf.add_n([tf.nn.l2_loss(tf.cast(values(g), tf.float32)) for g in grads if g is not None]))
        clip = tf.constant(self.global_clipnorm, tf.float32)
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # Keras' form: NaN for a NaN norm

        def scaled(g):
            if isinstance(g, tf.IndexedSlices):
                return tf.IndexedSlices(g.values * tf.cast(scale, g.dtype), g.indices, g.dense_shape)
            return g * tf.cast(scale, g.dtype)

        return [None if g is None else scaled(g) for g in grads]
