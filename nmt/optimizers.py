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

:class:`LazyAdam` (``training.optimizer: lazy_adam``) is the same update for dense gradients; a
sparse gradient (``IndexedSlices``: the embeddings, and the output projection under the sampled
loss) updates only the rows it touches, their moments included, as TF1's ``LazyAdamOptimizer`` and
TensorFlow Addons' ``LazyAdam`` (OpenNMT-tf's ``LazyAdam``) do. Dense Adam moves every row at every
step (a zero gradient still decays the moments and applies the momentum), which for the reference
model is 8.2M of the 11.5M parameters read and written each step for the few hundred rows a batch
uses.
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
        beta_1, beta_2, step = self._betas_and_step(dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))

    def _betas_and_step(self, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``beta_1``, ``beta_2`` and this update's 1-based step count in ``dtype`` (for the bias correction)."""
        return tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype), tf.cast(self.iterations + 1, dtype)

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


@keras.saving.register_keras_serializable("nmt")
class LazyAdam(FusedAdam):
    """Adam whose sparse gradients update only the rows they touch (weights and both moments).

    For a gradient with rows ``r`` (repeated rows summed first) the touched rows get exactly
    Adam's update at the current step (bias correction by the global step count); the other rows
    keep their weights and moments. Dense gradients get :class:`FusedAdam`'s update. The slot
    variables are Adam's, so checkpoints move freely between the two.
    """

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Apply one Adam update to the rows of ``variable`` that ``gradient`` touches."""
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad or tf.distribute.has_strategy():
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position, tf.shape(rows)[0])
        beta_1, beta_2, step = self._betas_and_step(dtype)
        alpha = tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].handle, self._velocities[index].handle
        m_rows = tf.raw_ops.ResourceGather(resource=m, indices=rows, dtype=dtype)
        v_rows = tf.raw_ops.ResourceGather(resource=v, indices=rows, dtype=dtype)
        m_rows += (grad - m_rows) * (1 - beta_1)
        v_rows += (tf.square(grad) - v_rows) * (1 - beta_2)
        tf.raw_ops.ResourceScatterUpdate(resource=m, indices=rows, updates=m_rows)
        tf.raw_ops.ResourceScatterUpdate(resource=v, indices=rows, updates=v_rows)
        step_rows = alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype))
        tf.raw_ops.ResourceScatterSub(resource=variable.handle, indices=rows, updates=step_rows)


def make_optimizer(name: str, **kwargs) -> FusedAdam:
    """The optimizer ``training.optimizer`` names (``adam`` or ``lazy_adam``), built with ``kwargs``."""
    return {"adam": FusedAdam, "lazy_adam": LazyAdam}[name](**kwargs)
