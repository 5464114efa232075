"""Compiled, batched decoding: greedy search and beam search.

Each decoder is one ``tf.function`` holding a ``tf.while_loop`` over target steps for the
whole batch: no Python per step and no Keras ``predict``. The loop ends as soon as every
sentence has produced EOS or reached its length limit ``min(a * |src| + b, cap)``, and the
sentences that have ended are gathered out of the batch as it goes, so the steps after them cost less.
Both return token ids [B, T] (0 after the end), lengths (EOS included), scores (sum of
log-probabilities; beam search divides by ``length ** length_penalty``; greedy search computes
them only when asked, ``with_scores``) and, on request, attention weights [B, T, S].
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from nmt.config import DecodingConfig
from nmt.model import gru
from nmt.model.seq2seq import Seq2Seq
from nmt.shortlist import Shortlist
from nmt.sysinfo import available_cores
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

_NEG_INF = -1e9
#: the decoders gather the sentences that have ended out of their batch once they are this share of it
#: (above 1: never)
COMPACT_FRACTION = 0.1  # 0.1, 0.25, 0.5: 419, 389, 393 greedy sentences/s; beam 5 82, 79, 70 (docs/benchmarks.md)


@dataclass
class Hypotheses:
    """Decoding results of a batch (numpy).

    ``tokens`` [B, N, T], ``lengths`` and ``scores`` [B, N] (None: not computed), ``attention``
    [B, N, T, S] or None.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray | None
    attention: np.ndarray | None


#: the largest input table :func:`freeze_weights` makes: 512 MB, e.g. 32k ids x 1,024 units
INPUT_TABLE_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True)
class FrozenWeights:
    """A loaded model's weights as its decoding steps read them, made once (:func:`freeze_weights`)."""

    step: dict[str, tf.Tensor]  #: the decoder's ``step_weights(kernel dtype)``
    encoder: dict | None  #: the encoder's ``frozen_weights(kernel dtype)``; None: its variables
    projection: tf.Tensor | None = None  #: the output projection's rows [vocab, hidden]; None: its variable


def freeze_weights(model: Seq2Seq, precision: str = "float32") -> FrozenWeights:
    """Copies of ``model``'s decoding weights for when they no longer change (a loaded model).

    The decoder's input projection of every target id is made once ([vocab, 3 x decoder units]
    floats, 49 MB for 8k ids and 512 units; none above ``INPUT_TABLE_MAX_BYTES``) and each step
    gathers its rows. With ``precision`` ``"bfloat16"`` the step's matmul kernels, the encoder
    GRUs' kernels and the output projection are bfloat16 copies: their products run at the CPU's
    bfloat16 speed (AVX-512 BF16, AMX) while the gates, attention scores, logits and softmax stay
    float32 (see :meth:`nmt.model.decoder.PostAttentionDecoder.step_weights`).
    """
    dtype = tf.as_dtype(precision)
    table_bytes = 4 * model.decoder.vocab_size * 3 * model.decoder.units
    step = model.decoder.step_weights(dtype, with_input_table=table_bytes <= INPUT_TABLE_MAX_BYTES)
    if dtype == tf.float32:
        return FrozenWeights(step, None)
    return FrozenWeights(step, model.encoder.frozen_weights(dtype),
                         tf.cast(model.projection.weights_by_row(), dtype))


def max_output_lengths(src_lengths: tf.Tensor, cfg: DecodingConfig) -> tf.Tensor:
    """Per-sentence output limit ``min(a * |src| + b, cap)`` (|src| without EOS), at least 1."""
    n = tf.cast(src_lengths, tf.float32) * cfg.max_length_a + cfg.max_length_b
    return tf.clip_by_value(tf.cast(tf.math.ceil(n), tf.int32), 1, cfg.max_length_cap)


def _block_eos_before(t: tf.Tensor, min_length: int, scores: tf.Tensor) -> tf.Tensor:
    """``scores`` (logits or log-probabilities) [..., V] with EOS at -inf while ``t < min_length``
    (unchanged when it is 0): one [V] row (-inf at EOS, then zeros) added, a single pass over ``scores``."""
    if min_length <= 0:
        return scores
    block = tf.one_hot(EOS_ID, tf.shape(scores)[-1], on_value=_NEG_INF, off_value=0.0)
    return scores + tf.where(t < min_length, block, 0.0)


def _rows_vary(x: tf.Tensor) -> tf.TensorShape:
    """The shape invariant of a decoding loop's per-row tensor ``x``: its rows come and go."""
    return tf.TensorShape([None, *x.shape[1:]])


def _time_to_compact(ended: tf.Tensor, fraction: float) -> tf.Tensor:
    """Whether ``ended`` [b] (the sentences still in a decoding loop that have ended) holds at least
    ``fraction`` of them, and one."""
    count = tf.reduce_sum(tf.cast(ended, tf.int32))
    return count >= tf.maximum(1, tf.cast(tf.math.ceil(fraction * tf.cast(tf.size(ended), tf.float32)), tf.int32))


def greedy_decode(model: Seq2Seq, src: tf.Tensor, max_lengths: tf.Tensor,
                  with_attention: bool = False, min_length: int = 0,
                  targets: tf.Tensor | None = None, frozen: FrozenWeights | None = None,
                  with_scores: bool = True, compact_fraction: float = COMPACT_FRACTION) -> tuple[tf.Tensor, ...]:
    """Greedy decoding of source ids [B, S] until EOS; call inside a ``tf.function``.

    EOS cannot be chosen before ``min_length`` tokens (0: no minimum); the per-sentence
    ``max_lengths`` (EOS included) still end every output. ``targets`` (sorted ids [C] starting
    with the special ids 0..3, see :meth:`nmt.shortlist.Shortlist.targets`) restricts every
    step to a shortlist; its scores are then normalised over the shortlist. ``frozen`` is a
    loaded model's :func:`freeze_weights`, read instead of its variables. Without ``with_scores``
    the steps skip the softmax normaliser (a pass of ``exp`` over [B, V]) and the scores are 0.
    Once ``compact_fraction`` of the rows still in the loop have ended, the rest are gathered into a
    smaller batch (a step costs per row; the tokens, scores and weights are scattered back by row).

    Returns ``(tokens [B, T], lengths [B], scores [B], attention [B, T, S])`` (attention is
    an empty [B, 0, S] tensor unless ``with_attention``).
    """
    memory, keys, mask, state = model.encode(src, frozen_encoder=frozen and frozen.encoder)
    batch = tf.shape(src)[0]
    src_len = tf.shape(src)[1]
    limit = tf.reduce_max(max_lengths)
    # The loop runs over the active rows only: ``rows`` maps them to the batch's rows, and once
    # compact_fraction of them have ended they are gathered out (the step's cost is per row).
    active = (tf.range(batch), tf.fill([batch], BOS_ID), state, memory, keys, mask, max_lengths,
              tf.zeros([batch], tf.bool))
    lengths = tf.zeros([batch], tf.int32)
    scores = tf.zeros([batch], tf.float32)
    tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
    attn = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[None, None])
    by_column = model.projection.weights_by_column(targets, frozen and frozen.projection)
    step_weights = frozen and frozen.step

    def body(t, active, lengths, scores, tokens, attn):
        rows, y, state, memory, keys, mask, max_lengths, finished = active
        hidden, state, weights = model.decoder.step(y, state, memory, keys, mask, step_weights)
        logits = model.logits(hidden, by_column, targets)
        # The arg max of the logits is that of the log-probabilities: no log-softmax over [b, V],
        # only its normaliser for the scores, if asked for. (In a shortlist EOS keeps its id as its column.)
        column = tf.argmax(_block_eos_before(t, min_length, logits), -1, output_type=tf.int32)
        # The last allowed step emits EOS so every output ends properly.
        column = tf.where(t + 1 >= max_lengths, EOS_ID, column)
        y_new = column if targets is None else tf.gather(targets, column)
        at = rows[:, None]
        if with_scores:
            log_prob = tf.gather(logits, column, batch_dims=1) - tf.reduce_logsumexp(logits, -1)
            scores = tf.tensor_scatter_nd_add(scores, at, tf.where(finished, 0.0, log_prob))
        y_new = tf.where(finished, PAD_ID, y_new)
        lengths = tf.tensor_scatter_nd_add(lengths, at, tf.cast(~finished, tf.int32))
        finished |= tf.equal(y_new, EOS_ID)
        tokens = tokens.write(t, tf.scatter_nd(at, y_new, [batch]))  # rows gathered out before: PAD (0)
        if with_attention:
            attn = attn.write(t, tf.scatter_nd(at, tf.cast(weights, tf.float32), [batch, src_len]))
        active = (rows, y_new, state, memory, keys, mask, max_lengths, finished)
        active = tf.cond(_time_to_compact(finished, compact_fraction),
                         lambda: tuple(tf.gather(x, tf.where(~finished)[:, 0]) for x in active),
                         lambda: active)
        return t + 1, active, lengths, scores, tokens, attn

    _, _, lengths, scores, tokens, attn = tf.while_loop(
        lambda t, active, *_: tf.logical_and(t < limit, ~tf.reduce_all(active[-1])),
        body, (0, active, lengths, scores, tokens, attn),
        shape_invariants=(tf.TensorShape([]), tuple(map(_rows_vary, active)), lengths.shape, scores.shape,
                          tf.TensorShape(None), tf.TensorShape(None)),
        maximum_iterations=limit)
    out = tf.transpose(tokens.stack(), [1, 0])
    if with_attention:
        attention = tf.transpose(attn.stack(), [1, 0, 2])
    else:
        attention = tf.zeros([batch, 0, src_len])
    return out, lengths, scores, attention


class _Beams(NamedTuple):
    """The loop state of :func:`beam_search` for the b sentences still searched (K hypotheses each)."""

    rows: tf.Tensor      #: [b] each sentence's index in the batch
    y: tf.Tensor         #: [b*K] the hypotheses' last tokens
    state: tf.Tensor     #: [b*K, D] decoder states
    memory: tf.Tensor    #: [b*K, S, M] encoder outputs, keys [b*K, S, A] and mask [b*K, S]
    keys: tf.Tensor
    mask: tf.Tensor
    limits: tf.Tensor    #: [b, K] output limits
    scores: tf.Tensor    #: [b, K] sums of log-probabilities
    lengths: tf.Tensor   #: [b, K] tokens, EOS included
    ended: tf.Tensor     #: [b, K] ended with EOS
    seqs: tf.Tensor      #: [b, K, t] tokens so far
    attn: tf.Tensor      #: [b, K, t, S] attention weights (t = 0 unless asked for)

    #: the fields with a row per hypothesis (the rest have one per sentence)
    PER_HYPOTHESIS_ROW = ("y", "state", "memory", "keys", "mask")


def beam_search(model: Seq2Seq, src: tf.Tensor, max_lengths: tf.Tensor, beam_size: int,
                length_penalty: float, with_attention: bool = False, min_length: int = 0,
                targets: tf.Tensor | None = None, frozen: FrozenWeights | None = None,
                n_best: int = 1, compact_fraction: float = COMPACT_FRACTION) -> tuple[tf.Tensor, ...]:
    """Batched beam search; call inside a ``tf.function``.

    Finished hypotheses stay in the beam with a frozen score; a sentence is done when its best
    hypothesis has ended and ``n_best`` of its hypotheses have (the others stop there too), the
    search when every sentence is; the final ranking divides each score by
    ``length ** length_penalty`` and puts the hypotheses that ended with EOS first; EOS is
    blocked before ``min_length`` tokens; ``targets``
    restricts the search to a shortlist and ``frozen`` replaces the variables, as in
    :func:`greedy_decode`. Once ``compact_fraction`` of the sentences still searched are done, their
    hypotheses are set aside and the rest gathered into a smaller batch. Returns
    ``(tokens [B, K, T], lengths [B, K], scores [B, K], attention [B, K, T, S])``, hypotheses
    sorted best first; where a sentence has fewer possible outputs than ``beam_size`` (an output
    limit of 1), the rest are scored -inf (:func:`translate_ids` leaves them out).
    """
    k = beam_size
    memory, keys, mask, state = model.encode(src, frozen_encoder=frozen and frozen.encoder)
    batch = tf.shape(src)[0]
    src_len = tf.shape(src)[1]
    limit = tf.reduce_max(max_lengths)

    def tile(x: tf.Tensor) -> tf.Tensor:  # [B, ...] -> [B*K, ...]
        return tf.repeat(x, k, axis=0)

    by_column = model.projection.weights_by_column(targets, frozen and frozen.projection)
    step_weights = frozen and frozen.step
    vocab = by_column.shape[1] or tf.shape(by_column)[1]  # the whole vocabulary or the shortlist's size
    # Log-probabilities that keep a finished hypothesis as it is: 0 for PAD, -inf elsewhere.
    keep_finished = tf.concat([tf.zeros([1]), tf.fill([vocab - 1], _NEG_INF)], 0)
    # The loop runs over the sentences still searched (``rows``: their index in the batch); once
    # compact_fraction of them are done they are written to ``out`` and gathered out of the loop.
    active = _Beams(tf.range(batch), tf.fill([batch * k], BOS_ID), tile(state), tile(memory), tile(keys), tile(mask),
                    limits=tf.reshape(tile(max_lengths), [batch, k]),
                    scores=tf.tile(tf.constant([0.0] + [_NEG_INF] * (k - 1))[None, :], [batch, 1]),
                    lengths=tf.zeros([batch, k], tf.int32),
                    ended=tf.zeros([batch, k], tf.bool), seqs=tf.zeros([batch, k, 0], tf.int32),
                    attn=tf.zeros([batch, k, 0, src_len], tf.float32))
    out = (tf.zeros([batch, k], tf.float32), tf.zeros([batch, k], tf.int32), tf.zeros([batch, k, limit], tf.int32),
           tf.zeros([batch, k, limit if with_attention else 0, src_len], tf.float32))

    def is_done(ended: tf.Tensor) -> tf.Tensor:
        """[b] whether each sentence's best hypothesis and ``n_best`` of them have ended ([b, K] ``ended``)."""
        return ended[:, 0] & (tf.reduce_sum(tf.cast(ended, tf.int32), 1) >= n_best)

    def write_out(out: tuple, sentences: tf.Tensor, active: _Beams) -> tuple:
        """``out`` (scores, lengths, seqs, attn) with the hypotheses of the active ``sentences`` (indices)."""
        take = lambda x: tf.gather(x, sentences)  # noqa: E731
        at, seqs = take(active.rows)[:, None], take(active.seqs)
        pad = limit - tf.shape(seqs)[2]
        o_scores, o_lengths, o_seqs, o_attn = out
        if with_attention:
            attn = tf.pad(take(active.attn), [[0, 0], [0, 0], [0, pad], [0, 0]])
            o_attn = tf.tensor_scatter_nd_update(o_attn, at, attn)
        return (tf.tensor_scatter_nd_update(o_scores, at, take(active.scores)),
                tf.tensor_scatter_nd_update(o_lengths, at, take(active.lengths)),
                tf.tensor_scatter_nd_update(o_seqs, at, tf.pad(seqs, [[0, 0], [0, 0], [0, pad]])), o_attn)

    def compact(active: _Beams, out: tuple, done: tf.Tensor) -> tuple[_Beams, tuple]:
        """The sentences ``done`` written to ``out`` and gathered out of ``active``."""
        out = write_out(out, tf.where(done)[:, 0], active)
        live = tf.cast(tf.where(~done)[:, 0], tf.int32)
        live_rows = tf.reshape(live[:, None] * k + tf.range(k)[None, :], [-1])  # their hypotheses' rows
        return _Beams(*(tf.gather(x, live_rows if name in _Beams.PER_HYPOTHESIS_ROW else live)
                        for name, x in zip(_Beams._fields, active))), out

    def body(t, active: _Beams, out):
        rows, y, state, memory, keys, mask, limits, scores, lengths, ended, seqs, attn = active
        b = tf.size(rows)
        finished = ended | is_done(ended)[:, None]  # ended, or cut short because their sentence was done
        hidden, state, weights = model.decoder.step(y, state, memory, keys, mask, step_weights)
        log_probs = tf.reshape(tf.nn.log_softmax(model.logits(hidden, by_column, targets)), [b, k, vocab])
        log_probs = _block_eos_before(t, min_length, log_probs)
        force_eos = (t + 1 >= limits)[:, :, None]
        eos_only = tf.one_hot(EOS_ID, vocab, on_value=0.0, off_value=_NEG_INF)
        log_probs = tf.where(force_eos, log_probs + eos_only, log_probs)
        log_probs = tf.where(finished[:, :, None], keep_finished, log_probs)
        flat = tf.reshape(scores[:, :, None] + log_probs, [b, k * vocab])
        scores, index = tf.math.top_k(flat, k=k)
        beam = index // vocab
        token = index % vocab if targets is None else tf.gather(targets, index % vocab)
        gather = lambda x: tf.gather(x, beam, batch_dims=1)  # noqa: E731
        finished, ended = gather(finished), gather(ended)
        lengths = gather(lengths) + tf.cast(~finished, tf.int32)
        seqs = tf.concat([gather(seqs), token[:, :, None]], 2)
        state = tf.gather(state, tf.reshape(beam + tf.range(b)[:, None] * k, [-1]))
        if with_attention:
            w = tf.reshape(tf.cast(weights, tf.float32), [b, k, 1, src_len])
            attn = tf.concat([gather(attn), tf.gather(w, beam, batch_dims=1)], 2)
        ended = ended | tf.equal(token, EOS_ID)
        # Scores only fall, so once a sentence's best hypothesis has ended nothing can overtake it: the
        # sentence is done (with n_best ended) and its hypotheses stay as they are, whatever the batch does.
        done = is_done(ended)
        active = _Beams(rows, tf.reshape(token, [-1]), state, memory, keys, mask, limits, scores, lengths, ended,
                        seqs, attn)
        active, out = tf.cond(_time_to_compact(done, compact_fraction), lambda: compact(active, out, done),
                              lambda: (active, out))
        return t + 1, active, out

    invariants = _Beams(*map(_rows_vary, active))._replace(seqs=tf.TensorShape([None, k, None]),  # t grows too
                                                        attn=tf.TensorShape([None, k, None, None]))
    t, active, out = tf.while_loop(
        lambda t, active, out: tf.logical_and(t < limit, ~tf.reduce_all(is_done(active.ended))),
        body, (0, active, out),
        shape_invariants=(tf.TensorShape([]), invariants, tuple(x.shape for x in out)),
        maximum_iterations=limit)
    scores, lengths, seqs, attn = write_out(out, tf.range(tf.size(active.rows)), active)
    seqs, attn = seqs[:, :, :t], attn[:, :, :t] if with_attention else attn
    normalised = scores / tf.pow(tf.cast(tf.maximum(lengths, 1), tf.float32), length_penalty)
    # A score that carries a -1e9 (an empty slot of the first beam, a token the output limit forbids) is no
    # output at all: a sentence can have fewer outputs than the beam (a limit of 1 allows only EOS). -inf.
    possible = scores > _NEG_INF / 2
    normalised = tf.where(possible, normalised, -np.inf)
    # Ranked by normalised score, the hypotheses that ended with EOS first (the others were cut short
    # when their sentence was done; every sentence has at least its best one ended), impossible ones last.
    order = tf.argsort(normalised, axis=1, direction="DESCENDING", stable=True)
    ended = tf.cast(tf.reduce_any(tf.equal(seqs, EOS_ID), axis=2) & possible, tf.int32)
    order = tf.gather(order, tf.argsort(tf.gather(ended, order, batch_dims=1), axis=1, direction="DESCENDING",
                                        stable=True), batch_dims=1)
    take = lambda x: tf.gather(x, order, batch_dims=1)  # noqa: E731
    return take(seqs), take(lengths), take(normalised), take(attn)


def thread_plan(cfg: DecodingConfig, cores: int, on_gpu: bool) -> tuple[int, int]:
    """``(batches decoded at once, intra-op threads)`` for ``cfg`` on a machine with ``cores``.

    On CPUs ``cpu_threads`` (0: ``cores``) are shared out among ``parallel_batches`` batches
    (0: two per thread, at most 4), each decoded by its own Python thread with
    ``cpu_threads // parallel_batches`` (at least 1) intra-op threads. A decoding step is a chain
    of small ops that two threads share badly, so one batch per core keeps the cores busier than
    one batch over all of them, and a second batch per core fills the pauses of the first (its
    bookkeeping between batches). On GPUs one batch at a time and TensorFlow's own threads (0).
    """
    if on_gpu:
        return 1, 0
    threads = cfg.cpu_threads or cores
    parallel = cfg.parallel_batches or min(2 * threads, 4)
    return parallel, max(1, threads // parallel)


class Decoder:
    """Compiled decoding functions of one model (traced once, reused for every batch).

    With a :class:`~nmt.shortlist.Shortlist` every batch is decoded over the target ids its
    source pieces allow (:meth:`~nmt.shortlist.Shortlist.targets`) instead of the whole vocabulary.
    :func:`translate_ids` decodes ``parallel_batches`` batches at once (see :func:`thread_plan`).
    With ``frozen_weights`` (the model's weights will not change: a loaded model) the weights
    decoding reads are copied once, here, in ``cfg.precision`` (:func:`freeze_weights`);
    without, every call reads the variables (validation during training) in float32.
    ``compact_fraction`` (:func:`greedy_decode`) above 1 keeps every batch whole to its end.
    """

    def __init__(self, model: Seq2Seq, cfg: DecodingConfig, shortlist: Shortlist | None = None,
                 frozen_weights: bool = False, compact_fraction: float = COMPACT_FRACTION) -> None:
        self.model, self.cfg, self.shortlist = model, cfg, shortlist
        self.frozen = freeze_weights(model, cfg.precision) if frozen_weights else None
        self.compact_fraction = compact_fraction
        self._fns: dict[tuple[int, bool, bool, bool, int], Callable] = {}
        self._trace_lock = threading.Lock()
        self.parallel_batches = thread_plan(cfg, available_cores(), gru.cudnn_available())[0]

    def _fn(self, beam: int, with_attention: bool, shortlisted: bool, with_scores: bool, n_best: int) -> Callable:
        key = (beam, with_attention, shortlisted, with_scores, n_best)
        with self._trace_lock:  # traced by one thread; the batches decoded at once share the trace
            if key not in self._fns:
                self._fns[key] = self._compile(*key)
        return self._fns[key]

    def _compile(self, beam: int, with_attention: bool, shortlisted: bool, with_scores: bool,
                 n_best: int) -> Callable:
        """The decoding function of one mode, traced now (one graph for every batch shape)."""
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]
        if shortlisted:
            spec.append(tf.TensorSpec([None], tf.int32))
        if beam == 1:
            def run(src, max_lengths, targets=None):
                tokens, lengths, scores, attention = greedy_decode(self.model, src, max_lengths, with_attention,
                                                                 self.cfg.min_length, targets, self.frozen,
                                                                 with_scores, self.compact_fraction)
                return tokens[:, None], lengths[:, None], scores[:, None], attention[:, None]
        else:
            def run(src, max_lengths, targets=None):
                return beam_search(self.model, src, max_lengths, beam, self.cfg.length_penalty, with_attention,
                                   self.cfg.min_length, targets, self.frozen, n_best, self.compact_fraction)
        # The loops are explicit tf.while_loops, so AutoGraph has nothing to convert; skipping its
        # source transformation halves the first batch's cost per process (docs/benchmarks.md).
        fn = tf.function(run, input_signature=spec, autograph=False)
        fn.get_concrete_function()
        return fn

    def decode(self, src: np.ndarray, src_lengths: np.ndarray, beam: int | None = None,
               with_attention: bool = False, with_scores: bool = True, n_best: int = 1) -> Hypotheses:
        """Decode a padded batch of source ids (EOS included; ``src_lengths`` without EOS).

        Without ``with_scores`` greedy decoding leaves out the scores' softmax normaliser (the
        scores are None); beam search needs them and always computes them. Beam search goes on
        with a sentence until ``n_best`` of its hypotheses have ended (:func:`beam_search`).
        """
        beam = beam or self.cfg.beam_size
        max_lengths = max_output_lengths(tf.constant(src_lengths, tf.int32), self.cfg)
        args = [tf.constant(src, tf.int32), max_lengths]
        if self.shortlist is not None:
            args.append(tf.constant(self.shortlist.targets(src)))
        scored = with_scores or beam > 1  # beam search always scores
        fn = self._fn(beam, with_attention, self.shortlist is not None, scored, min(n_best, beam) if beam > 1 else 1)
        tokens, lengths, scores, attention = fn(*args)
        return Hypotheses(tokens.numpy(), lengths.numpy(), scores.numpy() if scored else None,
                          attention.numpy() if with_attention else None)


def strip(tokens: np.ndarray) -> list[int]:
    """Token ids of one hypothesis up to (not including) EOS."""
    ends = np.flatnonzero((tokens == EOS_ID) | (tokens == PAD_ID))
    return tokens[: ends[0] if len(ends) else len(tokens)].tolist()


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[np.ndarray]:
    """Row indices of the batches :func:`translate_ids` decodes: sentences sorted by length,
    longest first (stable), ``batch_size`` at a time, so each batch pads little.

    Longest first: batches decoded side by side end together (the last to start are the quickest)
    and the one partial batch holds the shortest sentences.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def translate_ids(decoder: Decoder, sentences: list[list[int]], batch_size: int, beam: int | None = None,
                  n_best: int = 1, with_attention: bool = False, with_scores: bool = True
                  ) -> list[list[tuple[list[int], float | None, np.ndarray | None]]]:
    """Decode many id sequences (no EOS) in batches sorted by length, ``decoder.parallel_batches``
    at a time; results in input order.

    Returns, per sentence, up to ``n_best`` ``(ids without EOS, score, attention [T, S] or None)``
    (beam search: each one ended with EOS, best first, see :func:`beam_search`);
    the attention rows cover the output tokens and EOS, the columns the source pieces and EOS.
    Without ``with_scores`` greedy decoding skips the scores' normaliser and the scores are None.
    """
    def decode(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, Hypotheses]:
        lengths = np.array([len(sentences[i]) for i in rows], np.int32)
        src = np.zeros((len(rows), int(lengths.max()) + 1), np.int32)
        for j, i in enumerate(rows):
            src[j, :lengths[j]] = sentences[i]
            src[j, lengths[j]] = EOS_ID
        return rows, lengths, decoder.decode(src, lengths, beam=beam, with_attention=with_attention,
                                             with_scores=with_scores, n_best=n_best)

    results: list = [None] * len(sentences)
    batches = length_sorted_batches([len(s) for s in sentences], batch_size)
    workers = min(decoder.parallel_batches, len(batches))
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        done = pool.map(decode, batches) if pool else map(decode, batches)
        for rows, lengths, hyp in done:
            for j, i in enumerate(rows):
                out = []
                for n in range(min(n_best, hyp.tokens.shape[1])):
                    if n and hyp.scores[j, n] == -np.inf:  # n > 0: beam search, which always scores
                        break  # no more outputs this sentence can have (beam_search)
                    ids = strip(hyp.tokens[j, n])
                    att = None
                    if hyp.attention is not None:
                        att = hyp.attention[j, n, :len(ids) + 1, :lengths[j] + 1]
                    out.append((ids, None if hyp.scores is None else float(hyp.scores[j, n]), att))
                results[i] = out
    return results
