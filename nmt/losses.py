"""Losses on the shared output projection: sampled softmax for training, full softmax for the rest.

``sampled_softmax_loss`` computes exactly what ``tf.nn.sampled_softmax_loss`` computes with
``remove_accidental_hits=True`` for given ``sampled_values`` (the tests check this), but is
written with plain ops so it compiles under XLA (TensorFlow's version cannot: its candidate
samplers and ``ComputeAccidentalHits`` have no XLA kernels). Candidates come from
:class:`UnigramSampler`, a fixed unigram sampler over the target piece counts stored by
``nmt prepare`` (optionally distorted), drawn with replacement by inverse-CDF sampling from a
stateless seed: the same step always draws the same candidates, also after a resume.
:func:`merge_duplicate_candidates` folds repeated draws into one column each (the loss is the same,
the candidate product smaller: drawn by count, 1,024 draws over 8,000 pieces hold about 411 distinct).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from nmt.model.ops import gather_rows, matmul


class UnigramSampler:
    """Fixed unigram candidate sampler: P(id) proportional to count(id) ** distortion."""

    def __init__(self, counts: Sequence[int] | np.ndarray, num_sampled: int, distortion: float = 1.0) -> None:
        c = np.asarray(counts, dtype=np.float64)
        p = np.power(c + 1.0, distortion)  # +1: every id can be drawn, none has log(0)
        p[0] = 0.0  # never draw padding
        p /= p.sum()
        self.num_sampled = num_sampled
        self.probabilities = p
        self.log_prob = tf.constant(np.log(np.maximum(p, 1e-30)), tf.float32)
        self.cdf = tf.constant(np.cumsum(p), tf.float32)

    def inclusion_probabilities(self) -> np.ndarray:
        """P(id is among a step's ``num_sampled`` draws), per id: 1 - (1 - p) ** num_sampled."""
        return -np.expm1(self.num_sampled * np.log1p(-np.minimum(self.probabilities, 1.0 - 1e-12)))

    def expected_distinct(self) -> float:
        """The expected number of distinct ids among a step's draws: the columns of the candidate
        product once :func:`merge_duplicate_candidates` has merged the repeats."""
        return float(self.inclusion_probabilities().sum())

    def sample(self, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Draw candidates for a step; returns ``(sampled [S], true_expected, sampled_expected)``.

        ``labels`` has any shape; ``seed`` is a shape-[2] int tensor (e.g. ``[run seed, step]``).
        Expected counts are ``num_sampled * P(id)`` (sampling with replacement), in the form
        ``tf.nn.sampled_softmax_loss`` takes as ``sampled_values``.
        """
        u = tf.random.stateless_uniform([self.num_sampled], seed=seed, dtype=tf.float32)
        sampled = tf.minimum(tf.searchsorted(self.cdf, u, side="right"), tf.shape(self.cdf)[0] - 1)
        sampled = tf.cast(sampled, tf.int64)
        n = float(self.num_sampled)
        true_expected = n * tf.exp(tf.gather(self.log_prob, tf.cast(labels, tf.int64)))
        sampled_expected = n * tf.exp(tf.gather(self.log_prob, sampled))
        return sampled, true_expected, sampled_expected


def merge_duplicate_candidates(sampled: tf.Tensor, sampled_expected: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Fold repeated draws into one candidate each: ``(distinct ids [U], expected counts [U])``.

    A candidate drawn m times adds m * exp(logit - log(expected)) to the sampled partition sum, which is
    exp(logit - log(expected / m)): dividing its expected count by m gives :func:`sampled_softmax_loss`
    the same loss and gradients from U <= S columns. U varies by step, so this is for graphs that
    allow a dynamic shape (not XLA).
    """
    distinct, index, repeats = tf.unique_with_counts(sampled)
    # every draw of an id has the same expected count: the segment's max is that count
    expected = tf.math.unsorted_segment_max(sampled_expected, index, tf.shape(distinct)[0])
    return distinct, expected / tf.cast(repeats, expected.dtype)


def sampled_softmax_loss(weights: tf.Tensor, biases: tf.Tensor, labels: tf.Tensor, inputs: tf.Tensor,
                         sampled: tf.Tensor, true_expected: tf.Tensor, sampled_expected: tf.Tensor) -> tf.Tensor:
    """Sampled softmax loss per example, with accidental hits removed.

    ``weights`` [V, H], ``biases`` [V], ``labels`` [N] ids, ``inputs`` [N, H]; ``sampled`` [S],
    ``true_expected`` [N], ``sampled_expected`` [S]. Returns [N] float32 losses.
    """
    inputs = tf.cast(inputs, tf.float32)
    labels = tf.cast(labels, tf.int64)
    true_w = gather_rows(weights, labels)                                 # [N, H]
    true_logits = tf.reduce_sum(inputs * true_w, -1) + gather_rows(biases, labels)
    true_logits -= tf.math.log(true_expected)
    sampled_w = gather_rows(weights, sampled)                             # [S, H]
    sampled_logits = matmul(inputs, sampled_w, transpose_b=True) + gather_rows(biases, sampled)
    sampled_logits -= tf.math.log(sampled_expected)
    hits = tf.equal(labels[:, None], sampled[None, :])                    # accidental hits
    sampled_logits = tf.where(hits, tf.constant(-np.finfo(np.float32).max, tf.float32), sampled_logits)
    logits = tf.concat([true_logits[:, None], sampled_logits], 1)
    return -tf.nn.log_softmax(logits, axis=-1)[:, 0]


def full_softmax_loss(logits: tf.Tensor, labels: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Cross-entropy over the whole vocabulary per position (float32), with optional label smoothing.

    ``logsumexp(logits) - (1 - e) logit[label] - e mean(logits)`` (= ``(1 - e) * NLL - e * mean
    log-probability``) with its gradient ``softmax - target`` written by hand. Under op
    determinism (nmt's default) ``tf.nn.sparse_softmax_cross_entropy_with_logits`` falls back to
    a gather from the log-softmax, whose gradient is an ``UnsortedSegmentSum`` over the [N, V]
    logits: 15% of the full-softmax training step's CPU time in a profile, gone with this form.
    The softmax is one fused op (a row at a time, in cache) whose output the gradient reuses:
    ``upstream x softmax``, less the label's share at the label only. The log-normaliser comes
    from the row's largest logit and largest probability, ``max(logits) - log(max(softmax))``:
    exact, and that probability is at least ``1 / V``, so it never underflows. Two passes over the
    [N, V] logits fewer than taking ``exp(logits - max)`` and its sum in separate ones (the loss'
    forward and backward 1.04-1.07x as fast in the training step's layout, ``scripts/bench_loss.py``).
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    e = float(label_smoothing)

    @tf.custom_gradient
    def cross_entropy(logits):
        vocab = tf.shape(logits)[-1]
        probs = tf.nn.softmax(logits)
        lse = tf.reduce_max(logits, -1) - tf.math.log(tf.reduce_max(probs, -1))
        loss = lse - (1.0 - e) * tf.gather(logits, labels, batch_dims=labels.shape.rank)
        if e:
            loss -= e * tf.reduce_mean(logits, -1)

        def grad(upstream):
            g = probs * upstream[..., None]                              # softmax x upstream
            if e:
                g -= (e / tf.cast(vocab, tf.float32)) * upstream[..., None]
            flat = tf.reshape(g, [-1, vocab])
            at = tf.stack([tf.range(tf.shape(flat)[0]), tf.reshape(labels, [-1])], 1)
            flat = tf.tensor_scatter_nd_sub(flat, at, (1.0 - e) * tf.reshape(upstream, [-1]))
            return tf.reshape(flat, tf.shape(logits))

        return loss, grad

    return cross_entropy(logits)
